"""What nodecfg added to files others own, remembered on the node: /var/lib/nodecfg/<runtime>.json.

nodecfg merges entries into files that are not its own (docker's daemon.json lists and root's
~/.docker/config.json auths, /etc/containers/auth.json). To take back an entry it no longer wants
(a replica removed from the inventory) without ever taking one it did not add (a hand-made entry,
or one that was there before nodecfg came), a runtime that merges keeps a record of the entries IT
added. The record is one more file of that runtime's plan, so the same apply writes it, in the same
step as the files it describes (temp file, compare-and-swap, rename; rolled back with them), root
only (0600; it holds no secret, only registry names).

The format, small on purpose (the undo of issue 23 reads it):

    {"version": 1,
     "added": {"/etc/docker/daemon.json": {"insecure-registries": ["10.0.0.12:5000"],
                                          "registry-mirrors": ["http://10.0.0.12:5000"]},
               "/root/.docker/config.json": {"auths": ["10.0.0.12:5000"]}}}

`added[file][key]`: the entries of that key (list items, or an object's keys) that nodecfg put
there and wants still. For each key a planner merges (`merge_list`, `added_keys`):
- an entry nodecfg adds (it was not there) is recorded;
- an entry that was there already (hand-made, or written by a nodecfg from before records) is
  used as it is: never recorded, never removed;
- a recorded entry no longer wanted is removed from the file and from the record; a recorded one
  still wanted stays recorded (added again if someone removed it meanwhile).

Without replicas a node that has no record gets none (`change`): nodecfg then writes exactly what
it always has, and a node's first record comes with the first entry it adds for a replica. A record that is not of
this shape fails its runtime (`RecordError`): nodecfg would not know which entries are its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodecfg.errors import NodecfgError
from nodecfg.runtimes.base import FileChange

RECORD_DIR = "/var/lib/nodecfg"
VERSION = 1


def record_path(runtime: str) -> str:
    return f"{RECORD_DIR}/{runtime}.json"


class RecordError(NodecfgError):
    """A record nodecfg cannot read: which entries are its own is unknown."""


@dataclass(frozen=True)
class Record:
    added: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    def entries(self, path: str, key: str) -> tuple[str, ...]:
        return tuple(self.added.get(path, {}).get(key, ()))

    def keys(self, path: str) -> Mapping[str, tuple[str, ...]]:
        return self.added.get(path, {})

    @property
    def empty(self) -> bool:
        return not any(entries for keys in self.added.values() for entries in keys.values())

    def render(self) -> str:
        added = {p: {k: list(v) for k, v in keys.items() if v} for p, keys in sorted(self.added.items())}
        return json.dumps({"version": VERSION, "added": {p: k for p, k in added.items() if k}},
                          indent=2, sort_keys=True) + "\n"


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
    return Record({p: {k: tuple(v) for k, v in keys.items()} for p, keys in added.items()})


def change(runtime: str, old_text: str | None, new: Record, *, replicas: bool) -> FileChange | None:
    """The record to write when it differs from the node's. A node that has none gets one only
    when nodecfg adds an entry while the inventory has replicas: without replicas nodecfg writes
    what it wrote before records existed, byte for byte."""
    if old_text is None and (not replicas or new.empty):
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
