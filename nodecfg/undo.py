"""configure-nodes --undo, and the bookkeeping on every configure run that makes it possible
(docs/undo.md says it for operators).

Bookkeeping (`book`, pure): every configure plan that writes a file also writes its runtime's record
(/var/lib/nodecfg/<runtime>.json, nodecfg/runtimes/record.py) in the same apply: the entries the
planner says it added to others' files (`RuntimePlan.added`), and per file it wrote the sha256 of
that write and what was there before nodecfg's first change: nothing (`created`), or bytes kept
root-only at `record.orig_path` (a copy written in that same apply, compare-and-swapped and rolled
back with the rest). A file that someone changed between two writes of nodecfg's loses its
original (putting it back would take their change too): the undo then takes out nodecfg's entries
only. A file that an older nodecfg created (it starts with nodecfg's `# Managed by nodecfg` mark)
counts as created.

Undo (`plan_undo`, pure): per runtime with a record, per recorded file:
- absent now: someone removed it; nothing to do;
- unchanged since nodecfg's last write: a created file is removed, another gets back its original
  bytes (its copy must still hold them, else the runtime fails naming it);
- changed since: the runtime takes out only what its record says is nodecfg's (`unmerge`: list
  entries and auths it added, the config_path it set); a file it has no such rule for is left as
  it is, and named.
The runtime then says what makes that take (`undo_plan`: a reload or restart only for a runtime
whose config changed and that is running; a masked one stays masked, untouched by any action) and
what must no longer be in effect (`RuntimePlan.gone`, which its verify waits for). The record and
the original copies go in a second apply (`RuntimePlan.then`), once the first one's actions
verified; with them nodecfg's backups of every file undone. A node without records (never
configured, or configured by a nodecfg from before records of files) gets nothing undone.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nodecfg import runtimes
from nodecfg.runtimes import record
from nodecfg.runtimes.base import FileChange, FileFact, FileState, Runtime, RuntimePlan, split_fact_dir

if TYPE_CHECKING:
    from nodecfg.configure import NodeFacts, NodePlan


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _drop(fact: FileFact | None, reason: str) -> FileChange | None:
    """The removal of a file of nodecfg's bookkeeping, when it is there."""
    if fact is None or not fact.exists or fact.text() is None:
        return None
    return FileChange(fact.path, "", 0o600, fact.text(), reason, secret=True, remove=True)


# ---------------------------------------------------------------------------------------------
# bookkeeping, on every configure run


def book(plan: NodePlan, facts: NodeFacts) -> NodePlan:
    """The plan with each writing runtime's record (and the original copies) added to its files."""
    from nodecfg.configure import NodePlan

    return NodePlan(tuple(_book(rp, facts) for rp in plan.runtimes))


def _book(rp: RuntimePlan, facts: NodeFacts) -> RuntimePlan:
    if rp.status != "configure" or not rp.files:
        return rp
    path = record.record_path(rp.runtime)
    fact = facts.file(path)
    old_text = fact.text() if fact is not None and fact.exists else None
    try:
        mine = record.parse(old_text, path)
    except record.RecordError as exc:
        return RuntimePlan(rp.runtime, "failed", str(exc))
    files = dict(mine.files)
    extra: list[FileChange] = []
    for f in rp.files:
        if record.bookkeeping(f.path):
            continue
        last = _sha(f.content)
        seen = files.get(f.path)
        copy = facts.file(record.orig_path(f.path))
        if f.old is None or (seen is None and f.old.lstrip().startswith(record.OWN_MARK)):
            files[f.path] = record.Written(last, created=True)
            if seen is not None and seen.orig is not None and (gone := _drop(copy, "no longer its original")):
                extra.append(gone)
        elif seen is None:  # nodecfg's first change of a file that was there: keep its bytes
            files[f.path] = record.Written(last, _sha(f.old))
            extra.append(FileChange(record.orig_path(f.path), f.old, 0o600,
                                    copy.text() if copy is not None and copy.exists else None,
                                    f"{f.path} as it was before nodecfg", secret=True))
        elif seen.last == _sha(f.old):  # untouched since nodecfg's last write
            files[f.path] = replace(seen, last=last)
        else:  # someone changed it since: its original would take their change too
            files[f.path] = record.Written(last)
            if seen.orig is not None and (gone := _drop(copy, "no longer its original")):
                extra.append(gone)
    new = record.Record(rp.added if rp.added is not None else mine.added, files)
    change = record.change(rp.runtime, old_text, new)
    return replace(rp, files=(*rp.files, *extra, *((change,) if change is not None else ())))


# ---------------------------------------------------------------------------------------------
# undo


def paths_to_read(facts: NodeFacts) -> tuple[str, ...]:
    """The recorded files facts have not looked at yet (gather them, then plan the undo)."""
    out: list[str] = []
    for rt in runtimes.registered():
        fact = facts.file(record.record_path(rt.name))
        if fact is None or not fact.exists:
            continue
        try:
            mine = record.parse(fact.text(), fact.path)
        except record.RecordError:
            continue  # plan_undo fails the runtime, naming it
        out += [p for p in (*mine.files, *mine.added) if facts.file(p) is None]
    return tuple(dict.fromkeys(out))


def plan_undo(facts: NodeFacts) -> NodePlan:
    from nodecfg.configure import NodePlan

    return NodePlan(tuple(_undo(rt, facts) for rt in runtimes.by_layer()))


def _undo(rt: Runtime[Any], facts: NodeFacts) -> RuntimePlan:
    rf = facts.runtimes[rt.name]
    svc = rf.service
    fact = facts.file(record.record_path(rt.name))
    if fact is None or not fact.exists:
        if not svc.installed:
            return RuntimePlan(rt.name, "absent", "not installed; nothing of nodecfg's recorded")
        if svc.masked:
            return RuntimePlan(rt.name, "masked", "masked; nothing of nodecfg's recorded (left masked)")
        marked = [p for p, f in facts.files.items() if _owned(rt, p) and (f.text() or "").startswith(record.OWN_MARK)]
        return RuntimePlan(rt.name, "configure", f"{', '.join(marked)}: written by a nodecfg that kept no record "
                           "of its files; nothing undone (docs/undo.md)" if marked else "")
    try:
        if fact.text() is None:
            raise record.RecordError(f"{fact.path} is not UTF-8 text")
        mine = record.parse(fact.text(), fact.path)
    except record.RecordError as exc:
        return RuntimePlan(rt.name, "failed", str(exc))
    changes: list[FileChange] = []
    notes: list[str] = []
    # a record of a nodecfg from before records of files (`added` only): entries taken out
    for path in dict.fromkeys((*mine.files, *mine.added)):
        decided = _undo_file(rt, path, mine.files.get(path), mine, facts)
        if isinstance(decided, str):
            if decided.startswith("!"):
                return RuntimePlan(rt.name, "failed", decided[1:])
            notes.append(decided)
        elif decided is not None:
            changes.append(decided)
    plan = rt.undo_plan(rf, tuple(changes), tuple(notes))
    drops = [_drop(facts.file(p), "nodecfg's record") for p in
             (*(record.orig_path(p) for p, w in mine.files.items() if w.orig), fact.path)]
    return replace(plan, then=(*plan.then, *(d for d in drops if d is not None)))


def _owned(rt: Runtime[Any], path: str) -> bool:
    """A file among those the runtime's facts read (its fact files, or under its fact dirs)."""
    return path in rt.fact_files or any(path.startswith(split_fact_dir(d)[0] + "/") for d in rt.fact_dirs)


def _undo_file(rt: Runtime[Any], path: str, written: record.Written | None,  # noqa: PLR0911
               mine: record.Record, facts: NodeFacts) -> FileChange | str | None:
    """One recorded file: its change, a note (a string; failing the runtime when it starts with
    `!`), or None when nothing is to be done."""
    cur = facts.file(path)
    if cur is None or cur.state is FileState.UNREADABLE:
        return f"!cannot read {path}: {cur.reason if cur is not None else 'the facts did not cover it'}"
    if not cur.exists:
        return None  # removed since: nothing of nodecfg's left there
    text = cur.text()
    if text is None:
        return f"!{cur.not_utf8()}"
    mode = cur.mode if cur.mode is not None else 0o644
    secret = not mode & 0o077  # a root-only file may hold credentials: its diff is not shown
    if written is not None and cur.sha256 == written.last:
        if written.created:
            return FileChange(path, "", mode, text, "nodecfg created it", secret=secret, remove=True)
        if written.orig is not None:
            copy = facts.file(record.orig_path(path))
            if copy is None or not copy.exists or copy.sha256 != written.orig or copy.text() is None:
                return (f"!{path}: its bytes from before nodecfg ({record.orig_path(path)}) are missing or "
                        "changed; left as it is")
            return FileChange(path, str(copy.text()), mode, text, "its bytes from before nodecfg", secret=secret)
    new = rt.unmerge(path, text, mine)
    if new is None:
        return f"{path} changed since nodecfg wrote it: left as it is"
    if new == text:
        return None
    # JSON or TOML: parsed here before anything is sent
    return FileChange(path, new, mode, text, "nodecfg's entries taken out", secret=secret,
                      validate="json" if path.endswith(".json") else "toml")
