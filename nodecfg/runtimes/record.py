"""What nodecfg added to files others own, remembered on the node: /var/lib/nodecfg/<runtime>.json.

nodecfg merges entries into files that are not its own (docker's daemon.json lists and root's
~/.docker/config.json auths, /etc/containers/auth.json). To take back an entry it no longer wants
(a replica removed from the inventory) without ever taking one it did not add (a hand-made entry,
or one that was there before nodecfg came), a runtime that merges keeps a record of the entries IT
added. The record is one more file of that runtime's plan, so the same apply writes it, in the same
step as the files it describes (temp file, compare-and-swap, rename; rolled back with them), root
only (0600; it holds no secret, only registry names).

The format, small on purpose (`configure-nodes --undo` reads it: nodecfg/undo.py, docs/undo.md):

    {"version": 1,
     "added": {"/etc/docker/daemon.json": {"insecure-registries": ["10.0.0.12:5000"],
                                          "registry-mirrors": ["http://10.0.0.12:5000"]},
               "/root/.docker/config.json": {"auths": ["10.0.0.12:5000"]}},
     "files": {"/etc/docker/daemon.json": {"last": "<sha256>", "orig": "<sha256>", "created": false},
               "/etc/containerd/certs.d/docker.io/hosts.toml": {"last": "<sha256>", "orig": null,
                                                               "created": true}}}

`files[file]`: every file nodecfg wrote (but the record and its copies): the sha256 of what it
last wrote (`last`), and what was there before its first change: nothing (`created`), or bytes
whose sha256 is `orig`, kept root-only in `/var/lib/nodecfg/orig/<escaped path>` (`orig_path`).
Neither (`orig` null, not created): someone changed the file between two writes of nodecfg's, so
no earlier bytes can be put back; the undo takes out nodecfg's entries only. nodecfg/undo.py
(`book`) keeps `files` up to date in the same apply as the files; older nodecfgs ignore the key.

`added[file][key]`: the entries of that key (list items, or an object's keys) that nodecfg put
there and wants still. For each key a planner merges (`merge_list`, `added_keys`):
- an entry nodecfg adds (it was not there) is recorded;
- an entry that was there already (hand-made, or written by a nodecfg from before records) is
  used as it is: never recorded, never removed;
- a recorded entry no longer wanted is removed from the file and from the record; a recorded one
  still wanted stays recorded (added again if someone removed it meanwhile).

A node gets its record with the first file nodecfg changes there. A record that is not of this
shape fails its runtime (`RecordError`): nodecfg would not know which entries are its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodecfg.errors import NodecfgError
from nodecfg.runtimes.base import FileChange

RECORD_DIR = "/var/lib/nodecfg"
ORIG_DIR = f"{RECORD_DIR}/orig"
OWN_MARK = "# Managed by nodecfg"  # the first line of a file nodecfg writes whole (hosts.toml, the drop-in)
VERSION = 1


def record_path(runtime: str) -> str:
    return f"{RECORD_DIR}/{runtime}.json"


def orig_path(path: str) -> str:
    """Where a file's bytes from before nodecfg's first change are kept: one flat, root-only dir,
    the path escaped (`/etc/docker/daemon.json` -> `etc%2Fdocker%2Fdaemon.json`)."""
    return f"{ORIG_DIR}/" + path.lstrip("/").replace("%", "%25").replace("/", "%2F")


def bookkeeping(path: str) -> bool:
    """A file of nodecfg's own bookkeeping (a record, an original's copy), not a runtime's config."""
    return path.startswith(RECORD_DIR + "/")


class RecordError(NodecfgError):
    """A record nodecfg cannot read: which entries are its own is unknown."""


@dataclass(frozen=True)
class Written:
    """One file nodecfg wrote: the sha256 of its last write, and what was there before its first."""

    last: str
    orig: str | None = None  # the sha256 of the bytes kept at `orig_path`
    created: bool = False  # nothing was there: the undo removes it

    def render(self) -> dict[str, Any]:
        return {"last": self.last, "orig": self.orig, "created": self.created}


@dataclass(frozen=True)
class Record:
    added: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    files: Mapping[str, Written] = field(default_factory=dict)

    def entries(self, path: str, key: str) -> tuple[str, ...]:
        return tuple(self.added.get(path, {}).get(key, ()))

    def keys(self, path: str) -> Mapping[str, tuple[str, ...]]:
        return self.added.get(path, {})

    @property
    def empty(self) -> bool:
        return not self.files and not any(entries for keys in self.added.values() for entries in keys.values())

    def render(self) -> str:
        added = {p: {k: list(v) for k, v in keys.items() if v} for p, keys in sorted(self.added.items())}
        doc: dict[str, Any] = {"version": VERSION, "added": {p: k for p, k in added.items() if k}}
        if self.files:
            doc["files"] = {p: w.render() for p, w in self.files.items()}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def parse(text: str | None, source: str) -> Record:
    """The record as read from the node (None: there is none)."""
    if text is None:
        return Record()
    why = f"{source} is not nodecfg's record of what it added"
    try:
        doc = json.loads(text)
    except ValueError:
        raise RecordError(f"{why} (not JSON); fix or remove it") from None
    added = doc.get("added") if isinstance(doc, dict) and doc.get("version") == VERSION else None
    if not isinstance(added, dict) or not all(
            isinstance(keys, dict) and all(isinstance(v, list) and all(isinstance(e, str) for e in v)
                                           for v in keys.values())
            for keys in added.values()):
        raise RecordError(f"{why} (version {VERSION}: added -> file -> key -> entries); fix or remove it")
    files = doc.get("files", {})
    if not isinstance(files, dict) or not all(_written(w) for w in files.values()):
        raise RecordError(f"{why} (version {VERSION}: files -> file -> last, orig, created); fix or remove it")
    return Record({p: {k: tuple(v) for k, v in keys.items()} for p, keys in added.items()},
                  {p: Written(w["last"], w.get("orig"), bool(w.get("created"))) for p, w in files.items()})


def _written(w: Any) -> bool:
    return (isinstance(w, dict) and isinstance(w.get("last"), str) and isinstance(w.get("orig"), str | None)
            and isinstance(w.get("created", False), bool))


def change(runtime: str, old_text: str | None, new: Record) -> FileChange | None:
    """The record to write when it differs from the node's (none when there is none and nothing
    to record)."""
    if old_text is None and new.empty:
        return None
    text = new.render()
    if text == old_text:
        return None
    return FileChange(record_path(runtime), text, 0o600, old_text, "what nodecfg added (its record)",
                      validate="json")


Same = Callable[[str, str], bool]


def _has(items: Sequence[Any], entry: str, same: Same) -> bool:
    return any(isinstance(c, str) and same(c, entry) for c in items)


def merge_list(current: list[Any], wanted: Sequence[str], recorded: Sequence[str], same: Same, *,
               ordered: bool = False) -> tuple[list[Any], tuple[str, ...]]:
    """A list key merged as the module docstring says: (the new list, the entries to record).

    Every other entry keeps its place. `ordered` (registry-mirrors, tried in order): the wanted
    entries end up in their order, as one block where the first of them stood; else missing ones
    are appended."""
    stale = [r for r in recorded if not _has(wanted, r, same)]
    kept = [c for c in current if not (isinstance(c, str) and any(same(c, s) for s in stale))]
    mine = tuple(w for w in wanted if not _has(kept, w, same) or _has(recorded, w, same))
    merged = kept + [w for w in wanted if not _has(kept, w, same)]
    if ordered and not _in_order(merged, wanted, same):
        ours = [i for i, c in enumerate(kept) if isinstance(c, str) and _has(wanted, c, same)]
        block = [next((c for c in kept if isinstance(c, str) and same(c, w)), w) for w in wanted]
        rest = [c for i, c in enumerate(kept) if i not in ours]
        merged = rest[:ours[0]] + block + rest[ours[0]:]
    return merged, mine


def _in_order(items: Sequence[Any], wanted: Sequence[str], same: Same) -> bool:
    at = [next(i for i, c in enumerate(items) if isinstance(c, str) and same(c, w)) for w in wanted]
    return at == sorted(at)


def added_keys(before: Mapping[str, Any], wanted: Sequence[str], recorded: Sequence[str]) -> tuple[str, ...]:
    """An object key (auths) merged: the wanted keys to record, those absent before or recorded."""
    return tuple(k for k in wanted if k not in before or k in recorded)


def stale_keys(recorded: Sequence[str], wanted: Sequence[str]) -> tuple[str, ...]:
    """The recorded object keys nodecfg no longer wants: to remove."""
    return tuple(k for k in recorded if k not in wanted)


def unmerge_json(text: str, keys: Mapping[str, Sequence[str]], same: Callable[[str, str, str], bool]) -> str | None:
    """A JSON file without the entries nodecfg added (`keys`: key -> entries; items of a list
    compared with `same(key, a, b)`, or keys of an object). None when it is no JSON object.
    An emptied list stays as `[]` (dockerd's reload applies only the keys the file sets)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    changed = False
    for key, entries in keys.items():
        value = doc.get(key)
        if isinstance(value, list):
            kept = [v for v in value if not (isinstance(v, str) and any(same(key, v, e) for e in entries))]
            changed |= kept != value
            doc[key] = kept
        elif isinstance(value, dict):
            for e in entries:
                changed |= value.pop(e, None) is not None
    return json.dumps(doc, indent=2) + "\n" if changed else text
