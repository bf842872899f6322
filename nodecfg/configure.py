"""configure-nodes: per node, facts (one command) -> a pure NodePlan -> apply (one command).

Where a change goes: what is read from a node is `facts_script` / `parse_facts`; what the files
should say is decided by the pure planners of the registered runtimes (`nodecfg/runtimes/`, one
module each behind `runtimes.base.Runtime`; nothing here names one); `apply_script` turns a plan
into the arguments of the one script that changes the node; `configure_node` checks the result and
calls `rollback_script` when a runtime did not take the change. The scripts themselves are files,
`nodecfg/scripts/{facts,apply,rollback}.sh` with each runtime's functions: what is built here is
only their arguments and stdin (`scripts.NodeScript`), and `nodecfg.tagged` reads what they print.

The facts change nothing on a node but the cache of its runtimes' binaries' versions
(`VERSION_CACHE`, lib.sh `version_of`; not with --check).

Facts are not trusted blindly: every file is *exists* (its exact bytes, mode, owner, the target of
a symlink), *absent*, or *unreadable* (never taken for absent), and the output must end with its
end marker. A node whose facts are incomplete, or whose file to change could not be read, fails
before anything is planned; a file that is not UTF-8 is refused (it can't be merged), not rewritten.

apply writes each changed file as nodecfg/scripts/apply.sh's header says (the contract, said
there once: exact bytes to a temp file, validated — JSON and TOML here first, `dockerd --validate`
or `containerd config dump` on the node —, compare-and-swap against what facts saw, a backup
`<file>.nodecfg-<time>.bak` at most 0600 of which the newest `Options.keep_backups` are kept,
rename), reloads docker / restarts containerd only when their config changed, and checks the
*effect*: `docker info` lists the registry, containerd answers with its CRI plugin loaded and the
config dump shows config_path. A runtime whose change did not take is rolled back
(scripts/rollback.sh, compare-and-swap too: only a file still holding what this run wrote is put
back; one changed since is left and named), runtime recovered, node failed.

Every plan that writes also writes its runtime's record in the same apply (`undo.book`); `--undo`
plans from those records instead (`undo.plan_undo`) and goes through the same apply, verify and
rollback, then a second apply (`_second_apply`): nodecfg/undo.py says how.

Every step on a node has a deadline (`Options.step_timeout`, `--timeout`): facts,
validation, each reload or restart (queued with `--no-block`, then polled), each verify, the
rollback. It holds on the node itself: each script runs under coreutils `timeout -k`, and each
systemctl / dockerd / docker / containerd / ctr / podman call in it under lib.sh's `bounded` (a
`timeout -k` of its own), so nothing of nodecfg's outlives a step there. A node's errors reach the
operator as one line, secrets masked.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import functools
import hashlib
import json
import secrets
import shlex
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from nodecfg import runtimes, scripts, ssh, tagged, undo
from nodecfg.credentials import Credentials
from nodecfg.errors import HostError, UsageError
from nodecfg.fleet import FleetResult, HostResult, run_fleet
from nodecfg.inventory import Host, Inventory, Secret, TlsSettings
from nodecfg.runtimes import record as books
from nodecfg.runtimes.base import (
    IMPORT_LEVELS,
    OutcomeAction,
    OutcomeStatus,
    RuntimeFacts,
    Want,
    split_fact_dir,
    unit_of,
    verifies_unchanged,
)
from nodecfg.runtimes.common import (
    FileChange,
    FileFact,
    FileState,
    RuntimePlan,
    ServiceFacts,
    last_meaningful_line,
    mask_secrets,
    secret_values,
)
from nodecfg.scripts import NodeScript


@dataclass(frozen=True)
class Options:
    check: bool = False
    diff: bool = False
    become_password: Secret | None = None
    # seconds each step on a node may take (facts, apply, each reload/restart, verify, rollback);
    # `--timeout` sets it and the SSH connect timeout alike
    step_timeout: float = 60.0
    keep_backups: int = 3  # nodecfg's backups kept per file (`--keep-backups`, at least 1)
    undo: bool = False  # `--undo`: take nodecfg's settings off instead (nodecfg/undo.py)

    def __post_init__(self) -> None:
        if self.keep_backups < 1:
            raise UsageError(f"keep_backups must be at least 1, got {self.keep_backups}")


# ---------------------------------------------------------------------------------------------
# facts

FACTS_END = "end\tnodecfg-facts"
# where a node remembers its runtimes' binaries' versions, each under the binary's identity (lib.sh
# `version_of`: a replaced or rewritten binary is asked again); tmpfs, root's alone
VERSION_CACHE = "/run/nodecfg"


def _libraries() -> list[str]:
    """Every registered runtime's function file, for the node scripts."""
    return [rt.shell() for rt in runtimes.registered()]


def facts_script(extra_files: tuple[str, ...] = (), extra_dirs: tuple[str, ...] = (),
                 deadline: float = 60.0, version_cache: str | None = None) -> NodeScript:
    """One command (scripts/facts.sh) that prints everything the planners need, as tagged lines,
    and ends with `FACTS_END`: output without it is incomplete, and an incomplete answer fails the
    node. Its arguments: each command's bound (`deadline`), where the node remembers its
    binaries' versions (`version_cache`: configure-nodes gives VERSION_CACHE), every runtime's unit
    and name, the files to read, the dirs to list."""
    registered = runtimes.registered()
    args: list[str] = ["-t", f"{deadline:g}"]
    if version_cache:
        args += ["-c", version_cache]
    for unit in dict.fromkeys(unit_of(rt) for rt in registered):
        args += ["-u", f"{unit}.service"]
    for rt in registered:
        args += ["-r", rt.name]
    # every runtime's record, and the original copies (nodecfg/undo.py)
    kept = (*(books.record_path(rt.name) for rt in registered),)
    for f in dict.fromkeys((*(f for rt in registered for f in rt.fact_files), *kept, *extra_files)):
        args += ["-f", f]
    for entry in dict.fromkeys((*(d for rt in registered for d in rt.fact_dirs), f"{books.ORIG_DIR}/*",
                                *extra_dirs)):
        args += ["-d", *split_fact_dir(entry)]
    return scripts.script("facts.sh", _libraries(), args)


class FactsError(HostError):
    """A node's facts are incomplete or could not be decoded: it is failed, never planned."""


@dataclass(frozen=True)
class NodeFacts:
    runtimes: dict[str, RuntimeFacts]  # runtime name -> its own facts
    files: dict[str, FileFact] = field(default_factory=dict)
    dirs: dict[str, FileFact] = field(default_factory=dict)  # certs dirs: EXISTS = listed
    systemd_error: str = ""  # systemctl gave no unit states: nothing can be planned

    def file(self, path: str) -> FileFact | None:
        """What facts know of `path`; None when they never looked (gather them, then plan)."""
        if path in self.files:
            return self.files[path]
        if path.startswith(books.ORIG_DIR + "/") and "/" not in path[len(books.ORIG_DIR) + 1:]:
            d = self.dirs.get(books.ORIG_DIR)  # listed whole: a copy it does not name is absent
            if d is not None and d.state is FileState.UNREADABLE:
                return FileFact(path, FileState.UNREADABLE, reason=f"{d.path}: {d.reason}")
            if d is not None:
                return FileFact(path, FileState.ABSENT)
        if path.endswith("/hosts.toml"):
            d = self.dirs.get(path.rsplit("/", 2)[0])
            if d is not None and d.state is FileState.UNREADABLE:
                return FileFact(path, FileState.UNREADABLE, reason=f"{d.path}: {d.reason}")
            if d is not None:
                return FileFact(path, FileState.ABSENT)
        return None


def _exec_argv(value: str) -> tuple[str, ...]:
    """argv from systemd's ExecStart property: `{ path=... ; argv[]=a b c ; ... }`."""
    marker = "argv[]="
    if marker not in value:
        return ()
    argv = value.split(marker, 1)[1].split(" ; ", 1)[0]
    try:
        return tuple(shlex.split(argv))
    except ValueError:
        return tuple(argv.split())


def _untar(b64: str) -> dict[str, bytes]:
    """path -> bytes of the files in a base64 tar (absolute member names, `tar -P`); raises
    ValueError when the archive is damaged (truncated output, a tar that died)."""
    import binascii
    import io
    import tarfile

    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(b64, validate=True)), mode="r:") as tar:
            for member in tar:
                if member.isfile() or member.islnk():  # two paths to one inode: a hard-link member
                    data = tar.extractfile(member)
                    if data is not None:
                        out["/" + member.name.lstrip("/")] = data.read()
    except (tarfile.TarError, binascii.Error, ValueError, KeyError) as exc:
        raise ValueError(f"the facts archive is damaged ({exc})") from None
    return out


def _file_fact(path: str, rest: list[str], data: dict[str, bytes], archive_problem: str) -> FileFact:
    state = rest[0] if rest else ""
    if state == "absent":
        return FileFact(path, FileState.ABSENT)
    if state == "unreadable":
        return FileFact(path, FileState.UNREADABLE, reason=rest[1] if len(rest) > 1 else "unreadable")
    numbers = rest[2].split() if len(rest) > 2 else []
    if (state != "file" or len(numbers) != 4 or not all(n.isascii() and n.isdigit() for n in numbers)
            or set(numbers[0]) - set("01234567")):
        return FileFact(path, FileState.UNREADABLE, reason="facts about it are garbled")
    mode, uid, gid, size = numbers
    real = rest[1] or path
    if path not in data:
        return FileFact(path, FileState.UNREADABLE, reason=archive_problem or "missing from the facts")
    if len(data[path]) != int(size):
        return FileFact(path, FileState.UNREADABLE,
                        reason=f"changed while it was read ({size} bytes, {len(data[path])} read)")
    return FileFact(path, FileState.EXISTS, data[path], real, int(mode, 8), int(uid), int(gid))


def parse_facts(output: str) -> NodeFacts:
    """The facts script's output -> NodeFacts. Raises FactsError when the output is incomplete
    (no end marker: a timeout, a killed script) or has no unit states; a file whose bytes did not
    arrive intact is UNREADABLE, never absent."""
    lines = output.splitlines()
    if not lines or lines[-1] != FACTS_END:
        raise FactsError("the facts output is incomplete (it ended before its end marker)")
    registered = runtimes.registered()
    units: dict[str, dict[str, str]] = {unit_of(rt): {} for rt in registered}
    misc: dict[str, str] = {}
    paths: dict[str, list[str]] = {}
    dirs: dict[str, FileFact] = {}
    data: dict[str, bytes] = {}
    archive_problem = ""
    for record in tagged.decode("\n".join(lines[:-1])):
        key, rest = record.tag, record.rest
        if key.startswith("unit."):
            prop, _, value = rest.partition("=")
            units.setdefault(key[5:], {})[prop] = value
        elif key == "path":
            path, *fields = rest.split("\t")
            paths[path] = fields
        elif key == "dir":
            path, _, state = rest.partition("\t")
            state, _, why = state.partition("\t")
            dirs[path] = FileFact(path, {"listed": FileState.EXISTS, "absent": FileState.ABSENT}.get(
                state, FileState.UNREADABLE), reason=why or state)
        elif key == "files":
            try:
                data.update(_untar(rest))
            except ValueError as exc:
                archive_problem = str(exc)
        elif key == "file":
            path, _, b64 = rest.partition("\t")
            with contextlib.suppress(ValueError):  # if not, its size check makes it unreadable
                data[path] = base64.b64decode(b64, validate=True)
        elif key == "tar":
            if rest != "0" and not archive_problem:
                archive_problem = f"not in the facts archive (tar exit {rest or '?'})"
        else:
            misc[key] = rest
    systemd_error = "" if any(units.values()) else (
        last_meaningful_line(misc.get("error.systemctl", "")) or "systemctl printed no unit states")
    files = {p: _file_fact(p, f, data, archive_problem) for p, f in paths.items()}

    own: dict[str, RuntimeFacts] = {}
    for rt in registered:
        u = units.get(unit_of(rt), {})
        load = u.get("LoadState", "not-found")
        service = ServiceFacts(
            name=rt.name,
            installed=bool(misc.get(f"bin.{rt.name}")) and load != "not-found",
            masked=load == "masked" or u.get("UnitFileState", "") in ("masked", "masked-runtime"),
            active=u.get("ActiveState") == "active",
            active_since=u.get("ActiveEnterTimestampMonotonic", ""),
            main_pid=int(pid) if (pid := u.get("MainPID", "")).isascii() and pid.isdigit() else 0,
            version=rt.version_of(misc.get(f"version.{rt.name}", "")),
            exec_start=_exec_argv(u.get("ExecStart", "")),
            drop_ins=tuple(u.get("DropInPaths", "").split()),
        )
        own[rt.name] = rt.read_facts(service, misc, files, dirs)
    return NodeFacts(own, files, dirs, systemd_error)


# ---------------------------------------------------------------------------------------------
# plan (pure)


@dataclass(frozen=True)
class NodePlan:
    plans: tuple[RuntimePlan, ...]  # one per runtime, lowest layer first (`runtimes.by_layer`)

    @property
    def runtimes(self) -> tuple[RuntimePlan, ...]:
        return self.plans

    def __getitem__(self, runtime: str) -> RuntimePlan:
        for rp in self.plans:
            if rp.runtime == runtime:
                return rp
        raise KeyError(runtime)

    @property
    def files(self) -> tuple[FileChange, ...]:
        return tuple(f for p in self.runtimes for f in p.files)

    @property
    def then(self) -> tuple[FileChange, ...]:
        """--undo: what its second apply writes (`RuntimePlan.then`)."""
        return tuple(f for p in self.runtimes for f in p.then)


def plan_node(facts: NodeFacts, inv: Inventory, credentials: Credentials | None,
              check: bool = False, host: Host | None = None) -> NodePlan:
    want = want_of(inv, credentials, check, host)
    return NodePlan(tuple(rt.plan(facts.runtimes[rt.name], want) for rt in runtimes.by_layer()))


def want_of(inv: Inventory, credentials: Credentials | None, check: bool = False,
            host: Host | None = None) -> Want:
    """What the inventory asks of `host`'s runtimes: with replicas, in its own order
    (`Inventory.replicas_for`); None: the order of the first node."""
    ca = _nodes_ca(inv.registry.tls, not check) if inv.registry.tls is not None else None
    replicas = inv.replicas_for(host if host is not None else inv.nodes[0])
    return Want(inv.registry.endpoint, inv.registry.mirrors, credentials, ca, replicas)


@functools.cache
def _nodes_ca(settings: TlsSettings, write: bool) -> str:
    """The CA the nodes must trust, read (or made: kept, or in memory for --check) once per run."""
    from nodecfg.registry import tls  # cryptography's x509 only with TLS: ~15-40 ms a run (issue 24)

    return tls.ca_for_nodes(settings, write=write).decode()


def unified_diff(change: FileChange, after: str = "nodecfg") -> str:
    """The change as a unified diff, credentials masked on both sides (`mask_secrets`): a password
    already in the node's file is as secret as the one nodecfg adds. Files nodecfg writes its own
    credentials into are not shown at all."""
    if change.secret:
        gone = " (removed)" if change.remove else ""
        return f"--- {change.path}\n+++ {change.path}{gone}\n(contents hidden: the file holds credentials)\n"
    # diff the real lines (a changed password is a changed line), then mask each line of the diff
    # with the credentials found in either version
    values = secret_values(change.old or "") | secret_values(change.content)
    diff = difflib.unified_diff((change.old or "").splitlines(keepends=True),
                                change.content.splitlines(keepends=True),
                                f"{change.path} (before)" if change.old is not None else "/dev/null",
                                "/dev/null" if change.remove else f"{change.path} ({after})")
    return "".join(mask_secrets(line, values) for line in diff)


def _validate_content(change: FileChange, runtime: str) -> str | None:
    """Local validation before anything is sent: the text must parse as its format."""
    fmt = runtimes.named(runtime).formats.get(change.validate, change.validate)
    if change.remove:
        return None
    try:
        if fmt == "json":
            json.loads(change.content)
        elif fmt == "toml":
            tomllib.loads(change.content)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        return f"{change.path}: generated content does not parse ({exc})"
    return None


def unread(facts: NodeFacts) -> tuple[str, ...]:
    """What the runtimes' configs name that facts did not read (a runtime's facts may say so in
    `unread`: containerd's imports): files, and `dir/glob` entries, for one more look."""
    return tuple(dict.fromkeys(e for rf in facts.runtimes.values() for e in getattr(rf, "unread", ())))


def unknown_paths(plan: NodePlan, facts: NodeFacts) -> tuple[str, ...]:
    """Files the plan writes that facts never looked at (a `--config-file` daemon.json, a custom
    certs dir, a moved mirror's hosts.toml): gather them before planning for real."""
    return tuple(f.path for f in plan.files if facts.file(f.path) is None)


def refuse_unsafe(plan: NodePlan, facts: NodeFacts) -> tuple[NodePlan, dict[str, str]]:
    """The planners see only the files that could be read as text; a file they would write over
    that was really there must not be clobbered. Returns the plan with every runtime that would
    write over a non-UTF-8 file failed (it can't be merged; left untouched), and the files that
    could not be read at all (path -> why), which fail the whole node."""
    unreadable: dict[str, str] = {}
    kept: list[RuntimePlan] = []
    for rp in plan.runtimes:
        refused = []
        for f in rp.files:
            fact = facts.file(f.path)
            if fact is None or fact.state is FileState.UNREADABLE:
                unreadable[f.path] = fact.reason if fact is not None else "the facts did not cover it"
            elif (why := fact.not_utf8()) is not None:
                refused.append(why)
        kept.append(RuntimePlan(rp.runtime, "failed", "; ".join(refused)) if refused else rp)
    return NodePlan(tuple(kept)), unreadable


def targets(plan: NodePlan, facts: NodeFacts) -> dict[str, FileFact]:
    """What apply compares and writes, per planned path: facts' view (EXISTS or ABSENT)."""
    out = {}
    for f in plan.files:
        fact = facts.file(f.path)
        assert fact is not None and fact.state is not FileState.UNREADABLE, f.path
        out[f.path] = fact
    return out


# ---------------------------------------------------------------------------------------------
# apply (the scripts' arguments are pure functions of the plan and the facts)

APPLY_END = "end\tapply"
ROLLBACK_END = "end\trollback"

def _real(change: FileChange, fact: FileFact) -> str:
    """The file a write replaces: a symlink's target (the link is kept), else the path."""
    return fact.real_path if fact.exists and fact.real_path else change.path


def target_mode(change: FileChange, fact: FileFact) -> int:
    """An existing file keeps its mode (a 0600 daemon.json stays 0600); a file that holds
    credentials is never left more open than planned. A new file gets the planned mode."""
    if not fact.exists or fact.mode is None:
        return change.mode
    return fact.mode & change.mode if change.secret else fact.mode


def backup_path(change: FileChange, fact: FileFact, stamp: str) -> str:
    return f"{_real(change, fact)}.nodecfg-{stamp}.bak"


def apply_script(plan: NodePlan, files: dict[str, FileFact], want: Want, deadline: float = 10,
                 stamp: str = "0", *, run: str = "0", keep_backups: int = 3, undo: bool = False,
                 act: bool = True, purge: tuple[str, ...] = (), rmdirs: tuple[str, ...] = ()) -> NodeScript:
    """The one script that changes a node (scripts/apply.sh, whose header is the contract: temp
    file, validation, compare-and-swap, backup, rename, action, verify), as its arguments: every
    file to write (the file it replaces, its mode and owner, its validator, the sha256 facts saw,
    its backup `<file>.nodecfg-<stamp>.bak`), this run's id `run` (its temp files), how many backups
    to keep per file, then each runtime's action, highest layer first. Every file's bytes travel
    base64 on stdin (a credential never reaches argv); every wait is bounded by `deadline`; the
    script ends with `APPLY_END`.

    `--undo` (nodecfg/undo.py): `undo` makes the verifies wait for each runtime's `gone` instead;
    a removal is `-F` with mode `rm`; `act` False (its second apply) runs no action and no verify;
    `purge`: files whose backups of nodecfg's all go at the end, `rmdirs`: dirs then removed if empty."""
    args = ["-t", f"{deadline:g}", "-e", want.endpoint]
    for m in want.mirrors:
        args += ["-m", m]
    for r in want.replicas:
        args += ["-p", r]
    if want.ca_pem is not None:
        args += ["-S", "https"]  # the registry serves TLS: what the verifies look for
    args += ["-R", run, "-K", str(keep_backups)]
    if undo:
        args.append("-X")
        for rp in plan.runtimes:
            for word in rp.gone:
                args += ["-g", rp.runtime, word]
    owner = {f.path: rp.runtime for rp in plan.runtimes for f in rp.files}
    data = []
    for f in plan.files:
        fact = files[f.path]
        keep = f"{fact.uid}:{fact.gid}" if fact.exists and fact.uid is not None else "-"
        mode = "rm" if f.remove else f"{target_mode(f, fact):o}"
        args += ["-F", f.path, _real(f, fact), mode, keep, f.validate, owner[f.path],
                 fact.sha256 or "absent", backup_path(f, fact, stamp) if fact.exists else "-"]
        data.append(base64.b64encode(f.content.encode("utf-8")) + b"\n")
    planned = {rp.runtime for rp in plan.runtimes}
    for rt in runtimes.by_layer(reverse=True):
        if rt.name not in planned or not act:  # a plan made for fewer runtimes (tests)
            continue
        rp = plan[rt.name]
        if rp.action != "none":
            args += ["-A", rt.name, unit_of(rt), rp.action]
        elif rp.files and verifies_unchanged(rt):  # read per command: its files are in effect
            args += ["-A", rt.name, unit_of(rt), "none"]
    for unit in dict.fromkeys(unit_of(rt) for rt in runtimes.registered()):
        args += ["-U", f"{unit}.service"]
    for real in purge:
        args += ["-P", real]
    for d in rmdirs:
        args += ["-Q", d]
    return scripts.script("apply.sh", _libraries(), args, b"".join(data))


def apply_budget(deadline: float) -> float:
    """How long the apply script may run in all: writing and validating, and each runtime's
    reload or restart and its verify get `deadline` each."""
    return 6 * deadline + 5


def rollback_script(plan: RuntimePlan, files: dict[str, FileFact], *, was_active: bool,
                    deadline: float = 10, stamp: str = "0", run: str = "0") -> NodeScript:
    """Put back one runtime's previous files and bring it back as it was, every wait bounded
    (scripts/rollback.sh, then the runtime's `<name>_rollback`).

    Works from the plan and facts alone (the apply may have died half-way), compare-and-swap as
    the apply: a file is put back only while it holds exactly what this run (`run`) wrote; one
    changed on the node since is left as it is and named (`conflict`). A start that hangs (an
    ExecStartPre that never returns) is cancelled by `systemctl stop`, then the runtime is started
    again with its old config and waited for, at most `deadline` seconds; a start still queued
    then is left to systemd and said."""
    rt = runtimes.named(plan.runtime)
    args = ["-t", f"{deadline:g}", "-r", rt.name, "-u", unit_of(rt), "-a", plan.action,
            "-w", "1" if was_active else "0", "-R", run]
    for i, f in enumerate(plan.files):
        fact = files[f.path]
        ours = "absent" if f.remove else hashlib.sha256(f.content.encode("utf-8")).hexdigest()
        args += ["-F", f.path, _real(f, fact), str(i), backup_path(f, fact, stamp) if fact.exists else "-",
                 ours, fact.sha256 or "absent", f"{fact.mode:o}" if fact.exists and fact.mode is not None else "-"]
    return scripts.script("rollback.sh", _libraries(), args)


def rollback_budget(deadline: float) -> float:
    """The stop of a hung start and the wait for the restarted runtime get `deadline` each."""
    return 3 * deadline + 5


# ---------------------------------------------------------------------------------------------
# outcome


@dataclass(frozen=True)
class RuntimeOutcome:
    runtime: str
    status: OutcomeStatus
    action: OutcomeAction = "none"
    files: tuple[str, ...] = ()
    note: str = ""
    version: str = ""
    active: bool = False


@dataclass(frozen=True)
class NodeOutcome:
    runtimes: dict[str, RuntimeOutcome]  # runtime name -> outcome, lowest layer first
    diffs: tuple[str, ...] = ()
    error: str = ""

    @property
    def files_changed(self) -> tuple[str, ...]:
        return tuple(f for o in self.runtimes.values() for f in o.files)

    @property
    def changed(self) -> bool:
        return bool(self.files_changed)


def visible(rp: RuntimePlan) -> tuple[str, ...]:
    """The runtime's config files a plan changes (both applies of --undo), not nodecfg's own
    bookkeeping (its record, the original copies: nodecfg/undo.py)."""
    return tuple(dict.fromkeys(f.path for f in (*rp.files, *rp.then) if not books.bookkeeping(f.path)))


def net_changes(plan: NodePlan) -> tuple[FileChange, ...]:
    """Each config file's change as the operator sees it (--diff): from what facts saw to what the
    last apply leaves (--undo's transitional daemon.json is not shown)."""
    out: dict[str, FileChange] = {}
    for f in (*plan.files, *plan.then):
        if not books.bookkeeping(f.path):
            out[f.path] = replace(f, old=out[f.path].old) if f.path in out else f
    return tuple(out.values())


def _outcome_from_plan(rp: RuntimePlan, svc: ServiceFacts, check: bool) -> RuntimeOutcome:
    if rp.status != "configure":
        return RuntimeOutcome(rp.runtime, rp.status, note=rp.note, version=svc.version,
                              active=svc.active)
    if not visible(rp):
        return RuntimeOutcome(rp.runtime, "unchanged", note=rp.note, version=svc.version,
                              active=svc.active)
    done: dict[str, OutcomeAction] = {"reload": "reloaded", "restart": "restarted"}
    would: dict[str, OutcomeAction] = {"reload": "would reload", "restart": "would restart"}
    action = (would if check else done).get(rp.action, "none")
    return RuntimeOutcome(rp.runtime, "would change" if check else "changed", action,
                          visible(rp), rp.note, svc.version, svc.active)


@dataclass(frozen=True)
class ApplyReport:
    """What the apply script said, line by line."""

    complete: bool = False  # its end marker arrived
    invalid: dict[str, str] = field(default_factory=dict)  # path -> why (nothing written)
    conflicts: dict[str, str] = field(default_factory=dict)  # path -> what changed (nothing written)
    written: dict[str, str | None] = field(default_factory=dict)  # path -> its backup
    values: dict[str, str] = field(default_factory=dict)


def parse_apply(output: str) -> ApplyReport:
    report = ApplyReport(complete=APPLY_END in output.splitlines())
    backups: dict[str, str] = {}
    for record in tagged.decode(output):
        key, rest = record.tag, record.rest
        path, _, why = rest.partition("\t")
        if key == "invalid":
            report.invalid[path] = last_meaningful_line(why) or "rejected"
        elif key == "conflict":
            report.conflicts[path] = why
        elif key == "backup":
            backups[path] = why
        elif key == "wrote":
            report.written[rest] = backups.get(rest)
        elif key != "end":
            report.values[key] = rest
    return report


def _settled(values: dict[str, str], runtime: str, prefix: str = "settled.") -> tuple[str, str, str, str]:
    """(ActiveState, SubState, Result, Job) of a runtime as a settle loop left it."""
    fields = [*values.get(f"{prefix}{runtime}", "").split("\t"), "", "", "", ""]
    return fields[0], fields[1], fields[2], fields[3]


def _runtime_error(rp: RuntimePlan, values: dict[str, str], want: Want, deadline: float,
                   undo: bool = False) -> str | None:
    rt = runtimes.named(rp.runtime)

    def effect() -> str | None:
        return rt.undone(rp, values) if undo else rt.check_effect(rp, values, want)

    if rp.action == "none":
        return effect() if rp.files and verifies_unchanged(rt) else None
    state, sub, result, job = _settled(values, unit_of(rt))
    log = last_meaningful_line(values.get(f"actionlog.{rp.runtime}", ""))
    if job:
        return (f"{rp.runtime} did not come back within {deadline:g}s of its {rp.action} "
                f"({state}: {sub})")
    if state != "active":
        how = ", ".join(x for x in (sub, result if result != "success" else "") if x)
        return (f"{rp.runtime} is {state or 'gone'}{f' ({how})' if how else ''} after its {rp.action}"
                + (f": {log}" if log else ""))
    return effect()


def _by_reason(unreadable: dict[str, str]) -> str:
    """`a, b: Permission denied; c: not a regular file`."""
    groups: dict[str, list[str]] = {}
    for path, why in unreadable.items():
        groups.setdefault(why, []).append(path)
    return "; ".join(f"{', '.join(paths)}: {why}" for why, paths in groups.items())


_NOT_ROOT = ("Permission denied", "Operation not permitted", "Failed to connect to bus",
             "Access denied", "Interactive authentication required")


def _hint(reason: str, host: Host) -> str:
    """What to do about a node's refusal, when it is clear."""
    if "a password is required" in reason or "a terminal is required" in reason:
        return " — use --ask-become-pass, or a NOPASSWD sudo rule for this user"
    if any(s in reason for s in _NOT_ROOT) and not host.ssh.become and host.ssh.user != "root":
        return " — set become: true"
    return ""


def configure_node(c: Any, host: Host, inv: Inventory, options: Options,
                   credentials: Credentials | None) -> NodeOutcome:
    """Facts, plan, apply and verify one node over an open connection `c`.

    Every step on the node has a deadline, `options.step_timeout` (`--timeout`), enforced on the
    node and again here (`ssh.run(timeout=...)`), as the module docstring says."""
    become = host.ssh.become
    deadline = options.step_timeout
    stamp = time.strftime("%Y%m%d%H%M%S")  # names its backups, in the order runs were made
    run = secrets.token_hex(6)  # names its temp files: its own, never another run's

    def sh(script: NodeScript, budget: float, step: str) -> ssh.RunResult:
        try:
            return ssh.run(c, script.command(f"timeout -k 2 {budget:g}"), stdin=script.stdin,
                           become=become, become_password=options.become_password,
                           timeout=budget + 5)
        except HostError as exc:
            why = (f"no answer within {budget + 5:g}s" if "timed out" in str(exc)
                   else last_meaningful_line(str(exc)))
            raise HostError(f"{host}: {step}: {why}") from None

    def gather(files: tuple[str, ...], dirs: tuple[str, ...]) -> NodeFacts:
        cache = None if options.check else VERSION_CACHE  # --check changes nothing, not even the cache
        res = sh(facts_script(files, dirs, deadline, cache), deadline, "gathering facts")
        try:
            return parse_facts(res.stdout)
        except FactsError as exc:
            why = (f"no answer within {deadline:g}s" if res.exit_code in (124, 137)
                   else last_meaningful_line(res.stderr) or str(exc))
            raise HostError(f"{host}: gathering facts failed: {why}{_hint(why, host)}") from None

    facts = gather((), ())
    if facts.systemd_error:  # nothing can be planned; a file it can't read says more, if any
        unreadable = {p: f.reason for p, f in facts.files.items() if f.state is FileState.UNREADABLE}
        why = (f"cannot read {_by_reason(unreadable)}" if unreadable
               else f"cannot query systemd: {facts.systemd_error}")
        raise HostError(f"{host}: {why}{_hint(why, host)}")
    if options.undo:
        missing = undo.paths_to_read(facts)
        if missing:  # the files nodecfg recorded: look at each
            facts = gather(missing, ())
        plan = undo.plan_undo(facts)
    else:
        files_seen: tuple[str, ...] = ()
        dirs_seen: tuple[str, ...] = ()
        for _ in range(IMPORT_LEVELS):  # the files a config imports (imports of imports: one look a level)
            more = unread(facts)
            if not more:
                break
            files_seen += tuple(m for m in more if "*" not in m)
            dirs_seen += tuple(m for m in more if "*" in m)
            facts = gather(files_seen, dirs_seen)
        plan = plan_node(facts, inv, credentials, options.check, host)
        missing = unknown_paths(plan, facts)
        if missing:  # a custom daemon.json or certs dir, a moved mirror: look at those files too
            listed = tuple(d for rp in plan.runtimes for d in runtimes.named(rp.runtime).dirs_to_list(rp))
            facts = gather((*files_seen, *missing), (*dirs_seen, *listed))
            plan = plan_node(facts, inv, credentials, options.check, host)
        plan = undo.book(plan, facts)  # its record, in the same apply
    plan, unreadable = refuse_unsafe(plan, facts)
    if unreadable:
        why = f"cannot read {_by_reason(unreadable)}"
        raise HostError(f"{host}: {why}{_hint(why, host)}")
    for rp in plan.runtimes:
        for f in (*rp.files, *rp.then):
            problem = _validate_content(f, rp.runtime)
            if problem:
                raise HostError(f"{host}: {problem}")
    svc = {name: rf.service for name, rf in facts.runtimes.items()}
    outcomes = {rp.runtime: _outcome_from_plan(rp, svc[rp.runtime], options.check)
                for rp in plan.runtimes}
    after = "after --undo" if options.undo else "nodecfg"
    diffs = tuple(unified_diff(f, after) for f in net_changes(plan)) if options.diff else ()
    if options.check or not (plan.files or plan.then):
        return _finish(outcomes, diffs)
    want = want_of(inv, credentials, host=host)
    files = targets(plan, facts)
    # highest layer first, as apply acts (a rollback's start must not queue behind another's)
    last_first = tuple(plan[rt.name] for rt in runtimes.by_layer(reverse=True))

    def rollback(rp: RuntimePlan, error: str) -> None:
        try:
            rb = sh(rollback_script(rp, files, was_active=svc[rp.runtime].active, deadline=deadline,
                                    stamp=stamp, run=run), rollback_budget(deadline), "rolling back")
            done = parse_apply(rb.stdout)
            values = done.values
            unit = unit_of(runtimes.named(rp.runtime))
            state, sub, _, job = _settled(values, unit, "after.")
            back = f"{unit} {state or 'state unknown'}" + (f" ({sub})" if state != "active" and sub
                                                           else "")
            if job:
                back += f", its start still queued after {deadline:g}s"
            if ROLLBACK_END not in rb.stdout.splitlines():
                back += f" (the rollback did not finish: {last_meaningful_line(rb.stderr) or 'cut short'})"
            kept = "; ".join(f"{path} not restored: {why}" for path, why in done.conflicts.items())
            note = f"{error}; {kept + '; other ' if kept else ''}previous files restored, {back}"
        except HostError as exc:
            state, note = "", f"{error}; rolling back failed: {last_meaningful_line(str(exc))}"
        outcomes[rp.runtime] = replace(outcomes[rp.runtime], status="rolled back",
                                       active=state == "active", note=note)

    if not plan.files:  # --undo with only nodecfg's bookkeeping left to remove
        return _finish(_second_apply(sh, plan, facts, files, want, stamp, run, options, outcomes), diffs)
    try:
        res = sh(apply_script(plan, files, want, deadline, stamp, run=run, keep_backups=options.keep_backups,
                              undo=options.undo),
                 apply_budget(deadline), "applying")
        report = parse_apply(res.stdout)
        lost = "" if report.complete else (
            f"no answer within {apply_budget(deadline):g}s" if res.exit_code in (124, 137)
            else last_meaningful_line(res.stderr) or "the apply script was cut short")
    except HostError as exc:
        report, lost = ApplyReport(), last_meaningful_line(str(exc))
    if lost:  # the node's state is unknown: put back every runtime that had something to write
        for rp in last_first:
            if rp.files:
                rollback(rp, f"applying did not finish ({lost}{_hint(lost, host)})")
        return _finish(outcomes, diffs)
    refused = {**report.invalid, **report.conflicts}
    if refused:
        why = "; ".join(f"{p}: {w}" for p, w in refused.items())
        what = "nothing written" if report.conflicts else "rejected on the node, nothing written"
        for rt, o in outcomes.items():
            if o.files:
                outcomes[rt] = replace(o, status="failed", action="none",
                                       note=f"{what}: {why}{_hint(why, host)}")
        return _finish(outcomes, diffs)
    errors = {}
    for rp in plan.runtimes:
        unit = unit_of(runtimes.named(rp.runtime))
        active = report.values.get(f"after.{unit}", "").startswith("active")
        outcomes[rp.runtime] = replace(outcomes[rp.runtime], active=active)
        errors[rp.runtime] = _runtime_error(rp, report.values, want, deadline, options.undo)
    for rp in last_first:
        error = errors[rp.runtime]
        if error is not None:
            rollback(rp, error)
    if options.undo and not any(errors.values()):
        outcomes = _second_apply(sh, plan, facts, files, want, stamp, run, options, outcomes)
    return _finish(outcomes, diffs)


def _second_apply(sh: Callable[[NodeScript, float, str], ssh.RunResult], plan: NodePlan,
                  facts: NodeFacts, files: dict[str, FileFact], want: Want, stamp: str, run: str,
                  options: Options, outcomes: dict[str, RuntimeOutcome]) -> dict[str, RuntimeOutcome]:
    """--undo, once the first apply's actions verified: the files of `RuntimePlan.then` (nodecfg's
    record and original copies removed, docker's final daemon.json), no action; then nodecfg's
    backups of every file undone, and the dirs left empty (nodecfg/undo.py)."""
    later = NodePlan(tuple(RuntimePlan(rp.runtime, rp.status, files=rp.then) for rp in plan.runtimes))
    if not later.files:
        return outcomes
    first = {f.path: f for f in plan.files}
    after: dict[str, FileFact] = {}
    for f in later.files:
        if f.path in first:  # as the first apply left it
            w, prev = first[f.path], files[f.path]
            after[f.path] = (FileFact(f.path, FileState.ABSENT) if w.remove else
                             FileFact(f.path, FileState.EXISTS, w.content.encode("utf-8"), _real(w, prev),
                                      target_mode(w, prev), prev.uid, prev.gid))
        else:
            fact = facts.file(f.path)
            assert fact is not None, f.path
            after[f.path] = fact
    done = (*((f, files[f.path]) for f in plan.files), *((f, after[f.path]) for f in later.files))
    # with their original copies' (one that was dropped on the way may have left backups)
    copies = tuple(books.orig_path(f.path) for f in plan.files if not books.bookkeeping(f.path))
    purge = tuple(dict.fromkeys((*(_real(f, fact) for f, fact in done), *copies)))
    certs = [f.path.rsplit("/", 1)[0] for f, _ in done if f.remove and "/certs.d/" in f.path]
    rmdirs = (*dict.fromkeys(certs), books.ORIG_DIR, books.RECORD_DIR)
    step = "undoing (its second step: nodecfg's record and backups)"
    try:
        res = sh(apply_script(later, after, want, options.step_timeout, stamp, run=run + "b", undo=True,
                              act=False, purge=purge, rmdirs=rmdirs), apply_budget(options.step_timeout), step)
        report = parse_apply(res.stdout)
        why = "" if report.complete else last_meaningful_line(res.stderr) or "cut short"
        why = why or "; ".join(f"{p}: {w}" for p, w in {**report.invalid, **report.conflicts}.items())
    except HostError as exc:
        why = last_meaningful_line(str(exc))
    if not why:
        return outcomes
    out = dict(outcomes)
    for rp in later.runtimes:
        if rp.files:
            out[rp.runtime] = replace(out[rp.runtime], status="failed",
                                      note=f"{step} failed: {why}; run --undo again")
    return out


def _finish(outcomes: dict[str, RuntimeOutcome], diffs: tuple[str, ...]) -> NodeOutcome:
    """The node's outcome: every note one line (it may quote a node), the error their summary."""
    outcomes = {rt: replace(o, note=last_meaningful_line(o.note)) for rt, o in outcomes.items()}
    failed = [o for o in outcomes.values() if o.status in ("failed", "rolled back")]
    error = last_meaningful_line("; ".join(f"{o.runtime}: {o.note}" for o in failed))
    return NodeOutcome(outcomes, diffs, error)


def configure_nodes(inv: Inventory, hosts: tuple[Host, ...], options: Options, *, forks: int,
                    on_done: Callable[[HostResult[NodeOutcome]], Any] | None = None,
                    ) -> FleetResult[NodeOutcome]:
    credentials = Credentials.of(inv.registry.auth)
    want_of(inv, credentials, options.check)  # a CA that can't be read fails here, before any host is contacted

    def one(host: Host) -> NodeOutcome:
        try:
            c = ssh.connect(host, fabric=False)  # no Fabric/invoke import: ~30 ms a run (docs/benchmarks.md, issue 24)
            try:
                return configure_node(c, host, inv, options, credentials)
            finally:
                ssh.close(c)
        except HostError as exc:  # a node's error is one line, whatever it came from
            raise type(exc)(last_meaningful_line(str(exc))) from None

    return run_fleet(hosts, one, forks=forks, on_done=on_done)
