"""The Runtime protocol: what one container runtime supplies to configure-nodes, smoke-test and
the reports, and the typed statuses they share.

A runtime is one module under `nodecfg/runtimes/` holding one object that satisfies `Runtime`
(registered in `nodecfg/runtimes/__init__.py`). configure.py, smoke.py and report.py only ever
iterate over the registry; everything that names a unit, a config file or a CLI lives here:

- node-side code: one shell file of functions (`shell()`, nodecfg/scripts/<name>.sh) that the
  node scripts call: its facts, the validation of a written file, the verify after its action,
  its rollback, its smoke probe;
- facts: its unit, the files and dirs facts must read, and `read_facts` turning the facts'
  output into its own facts object;
- plan: `plan(facts, want)`, pure; the least disruptive action is in the plan (`reload` or
  `restart`, or `none`), and its `<name>_rollback` function undoes it;
- verify: `check_effect` reading what its `<name>_verify` printed;
- smoke: an optional second step on the connection (`probe_more`, through a `BoundedNode`: the
  node's one deadline, nodecfg/deadline.py), its checks' names (the recap's columns) and
  `diagnose`, which names a call that ran out of time (`timeout_problem`).

Statuses are `Literal`s: with mypy's strict_equality a misspelt status is an error wherever it is
assigned or compared, and their values are exactly the strings the reports print.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from nodecfg.tagged import b64text, last_values
from nodecfg.tlsdiag import classify as classify_tls

if TYPE_CHECKING:
    from nodecfg.credentials import Credentials
    from nodecfg.deadline import BoundedNode
    from nodecfg.images import ImageRef
    from nodecfg.runtimes.record import Record

# what a planner decided for a runtime on a node
PlanStatus = Literal["configure", "absent", "masked", "failed"]
# the least disruptive action that makes a config change take
Action = Literal["none", "reload", "restart"]
# what configure-nodes reports per runtime
OutcomeStatus = Literal["unchanged", "changed", "would change", "masked", "absent", "failed",
                        "rolled back"]
OutcomeAction = Literal["none", "reloaded", "restarted", "would reload", "would restart"]
# one smoke-test check
# one smoke-test check: WARN is a problem that does not keep the node from pulling
CheckStatus = Literal["ok", "FAIL", "WARN", "skip"]


@dataclass(frozen=True)
class ServiceFacts:
    """What systemd says about a runtime's unit, plus its version."""

    name: str
    installed: bool = False
    masked: bool = False
    active: bool = False
    active_since: str = ""  # ActiveEnterTimestampMonotonic: changes on every (re)start
    main_pid: int = 0
    version: str = ""
    exec_start: tuple[str, ...] = ()
    drop_ins: tuple[str, ...] = ()

    @property
    def major(self) -> int:
        return self.release[0]

    @property
    def release(self) -> tuple[int, int]:
        """(major, minor) of its version ("2.1.9+unknown" -> (2, 1)); 0 for a part it lacks."""
        major, minor = [*self.version.lstrip("v").split("."), "", ""][:2]
        return (int(major) if major.isdigit() else 0, int(minor) if minor.isdigit() else 0)


class FileState(enum.Enum):
    """What facts know of a file. As pyinfra: *absent* (None there) is not *unreadable* (False):
    a file that could not be read is never taken for a missing one."""

    EXISTS = "exists"
    ABSENT = "absent"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class FileFact:
    """One file on a node as facts saw it: its bytes, and where and how it sits.

    `real_path` is the file a write must replace: the symlink's target when `path` is a link
    (sites keep configs in a managed dir and link them), else `path` itself."""

    path: str
    state: FileState
    data: bytes | None = None  # EXISTS: the exact bytes
    real_path: str = ""
    mode: int | None = None  # permission bits (stat %a)
    uid: int | None = None
    gid: int | None = None
    reason: str = ""  # UNREADABLE: why, in one line

    @property
    def exists(self) -> bool:
        return self.state is FileState.EXISTS

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.data).hexdigest() if self.data is not None else None

    def text(self) -> str | None:
        """The content as text for the planners, None unless it exists and is valid UTF-8."""
        if self.data is None:
            return None
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def not_utf8(self) -> str | None:
        """Why the bytes are not UTF-8 text (None when they are, or there are none)."""
        if self.data is None:
            return None
        try:
            self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (f"{self.path} is not UTF-8 text (byte 0x{self.data[exc.start]:02x} at offset "
                    f"{exc.start}); it can't be merged as TOML or JSON: left untouched")
        return None


@dataclass(frozen=True)
class FileChange:
    """One file to (over)write atomically on a node, the previous version kept as a backup."""

    path: str
    content: str
    mode: int
    old: str | None  # None: the file doesn't exist yet
    reason: str
    secret: bool = False  # never shown in --diff or logs
    validate: str = ""  # "json" | "dockerd" | "toml" | "containerd" | ""
    remove: bool = False  # the file is removed (configure-nodes --undo); `content` is ""


@dataclass(frozen=True)
class RuntimePlan:
    """What one runtime on one node needs."""

    runtime: str  # the runtime's name
    status: PlanStatus
    note: str = ""
    files: tuple[FileChange, ...] = field(default_factory=tuple)
    action: Action = "none"
    # the entries it added to files others own and wants there (record.py's `added`; None: the plan
    # says nothing of them): nodecfg/undo.py `book` writes them into its record
    added: Mapping[str, Mapping[str, tuple[str, ...]]] | None = None
    # configure-nodes --undo: files written in a second apply, once the first one's action verified
    # (docker's final daemon.json, after a reload on one that names the keys nodecfg set as [])
    then: tuple[FileChange, ...] = field(default_factory=tuple)
    # configure-nodes --undo: what must no longer show in the running runtime (its verify waits for
    # it to go, and `undone` judges it)
    gone: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.files)


@dataclass(frozen=True)
class Want:
    """What the inventory asks of every runtime: the planners' and verifiers' input."""

    endpoint: str  # registry.address:port: where pulls by registry path go
    mirrors: tuple[str, ...]
    credentials: Credentials | None = None
    ca_pem: str | None = None  # the registry's CA when it serves TLS; None: plain HTTP
    # the registry's replicas in this node's order (`Inventory.replicas_for`); () without replicas:
    # every runtime then names the registry's endpoint alone, as before replicas existed
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str = ""


@dataclass(frozen=True)
class SmokePlan:
    """What to pull where: decided once for the whole fleet."""

    endpoint: str
    image: ImageRef  # pulled as <endpoint>/<target> by docker, and by upstream name by containerd
    hub_image: ImageRef | None  # a docker.io image for docker's registry-mirrors check
    mirrors: tuple[str, ...]
    has_auth: bool
    scheme: str = "http"  # "https": the registry serves TLS, verified with the node's copy of the CA
    replicas: tuple[str, ...] = ()  # the registry's replicas in this node's order (per node)

    @property
    def pulls_from(self) -> tuple[str, ...]:
        """Where this node's mirror pulls go, in its order: its replicas, else the registry."""
        return self.replicas or (self.endpoint,)

    @property
    def ctr_ref(self) -> str:
        """What containerd pulls: the upstream name when it is mirrored (as the kubelet asks for
        it), else the registry's own name."""
        if self.image.registry in self.mirrors:
            return self.image.upstream
        return f"{self.endpoint}/{self.image.target}"


class RuntimeFacts(Protocol):
    """A runtime's own facts: whatever its planner needs, and at least its unit's state."""

    @property
    def service(self) -> ServiceFacts: ...


F = TypeVar("F", bound=RuntimeFacts)


class Runtime(Protocol[F]):
    """One container runtime. Names are the `<name>` of its unit `<name>.service` (unless it has a
    `unit` attribute naming another one: `unit_of`) and of every tagged line its functions print
    (`version.<name>`, `<name>.pull`, ...)."""

    name: str
    # files are written and results listed lowest layer first; reloads/restarts and rollbacks go
    # highest first, so a runtime's action never queues behind one of the runtime it talks to
    layer: int
    fact_files: tuple[str, ...]  # config files facts always read
    # dirs whose `*/hosts.toml` facts always read; `<dir>/<glob>` (a `*` in its last part) reads
    # the files matching that glob instead
    fact_dirs: tuple[str, ...]
    formats: Mapping[str, str]  # FileChange.validate -> the format it is parsed as here
    checks: tuple[str, ...]  # its smoke-test checks, in the recap's column order

    # its node-side code: one shell file of functions (nodecfg/scripts/<name>.sh, read with
    # `nodecfg.scripts.read`), no value formatted into it. The node scripts call, per runtime:
    #   <name>_facts                    prints `bin.<name>`, `version.<name>` and any other tagged
    #                                   line it needs; `$units` holds `systemctl show` of every unit
    #   <name>_validate KIND TEMP PATH  validates a written temp file whose FileChange.validate is
    #                                   KIND (returns 0 for a KIND not its own); calls
    #                                   `fail PATH WHY` when it is refused
    #   <name>_verify                   run once its action settled active (or after a write with no
    #                                   action, `verifies_unchanged`): prints what `check_effect`
    #                                   reads; `$deadline`, `$endpoint`, `$mirrors` hold the wants
    #   <name>_rollback                 brings it back on its restored files: `changed` / `down`
    #                                   are commands (files were restored; it was active and is
    #                                   not), `$job` its queued job, `$was_active`, `$deadline`
    #   <name>_probe                    smoke-test, run when its unit is active: `$endpoint`,
    #                                   `$image_ref` (<endpoint>/<target>), `$hub_ref` (or "")
    # Every call of theirs to a daemon or a CLI goes through lib.sh's `bounded TAG MAX CMD...`.
    def shell(self) -> str:
        """Its function file's text."""
        ...

    def read_facts(self, service: ServiceFacts, values: Mapping[str, str],
                   files: Mapping[str, FileFact], dirs: Mapping[str, FileFact]) -> F:
        """Its facts from its unit's state, the facts' tagged values, the files read and the dirs
        listed (EXISTS: listed, its files matching the glob asked are in `files`)."""
        ...

    def version_of(self, line: str) -> str:
        """`version.<name>` as printed -> the bare version."""
        ...

    # plan (pure)
    def plan(self, facts: F, want: Want) -> RuntimePlan: ...

    def dirs_to_list(self, plan: RuntimePlan) -> tuple[str, ...]:
        """Dirs a second facts look must list for this plan (a custom certs dir)."""
        ...

    def trust_file(self, endpoint: str) -> str:
        """Where it trusts the registry's CA on a node when the registry serves TLS ("" none)."""
        ...

    # verify
    def check_effect(self, plan: RuntimePlan, values: Mapping[str, str], want: Want) -> str | None:
        """None when the running runtime shows the change, else why not."""
        ...

    # configure-nodes --undo (nodecfg/undo.py)
    def unmerge(self, path: str, text: str, rec: Record) -> str | None:
        """`path`, changed since nodecfg last wrote it, without what `rec` says is nodecfg's (None:
        it has no rule for that file, which is then left as it is)."""
        ...

    def undo_plan(self, facts: F, files: tuple[FileChange, ...], notes: tuple[str, ...]) -> RuntimePlan:
        """What makes the undo's `files` take: the action (only when running and not masked), what
        must then be `gone`, files for the second apply (`then`)."""
        ...

    def undone(self, plan: RuntimePlan, values: Mapping[str, str]) -> str | None:
        """None when the running runtime shows none of `plan.gone` after the undo's action, else why."""
        ...

    # smoke-test
    def probe_more(self, node: BoundedNode, plan: SmokePlan, vals: Mapping[str, list[str]]) -> str:
        """A second step on the node (`node.run`, within what is left of its deadline), given the
        first probe's values: more lines of output ("" when none)."""
        ...

    def down_checks(self, state: str | None) -> tuple[Check, ...]:
        """Its other checks when its unit is not active (`state`: masked / not installed; None
        when it is down)."""
        ...

    def diagnose(self, vals: Mapping[str, list[str]], plan: SmokePlan) -> tuple[Check, ...]:
        """Its checks from the probe's values (pure)."""
        ...


def unit_of(rt: Runtime[Any]) -> str:
    """Its systemd unit without `.service`: its `unit` attribute when it has one (a runtime whose
    name is not its unit's, as `containers` and crio.service), else its name."""
    return str(getattr(rt, "unit", "") or rt.name)


def verifies_unchanged(rt: Runtime[Any]) -> bool:
    """Its `<name>_verify` also runs, and `check_effect` also judges, after files were written
    with no reload or restart (`verify_without_action`: a tool that reads its config per command,
    as podman). Without it, as for docker and containerd, there is nothing to verify then."""
    return bool(getattr(rt, "verify_without_action", False))


# how many more facts looks a node gets for the files its runtimes' configs import (a look per
# level of imports of imports); a runtime's facts name what is still unread in `unread`
IMPORT_LEVELS = 4


def split_fact_dir(entry: str) -> tuple[str, str]:
    """A `fact_dirs` entry -> (dir, glob): `/d` -> (`/d`, `*/hosts.toml`), `/d/*.conf` -> (`/d`, `*.conf`),
    `/d/*/ca.crt` -> (`/d`, `*/ca.crt`)."""
    parts = entry.rstrip("/").split("/")
    star = next((i for i, p in enumerate(parts) if "*" in p), None)
    if star is not None and star > 1:
        return "/".join(parts[:star]), "/".join(parts[star:])
    return entry, "*/hosts.toml"


# ---------------------------------------------------------------------------------------------
# what every runtime's diagnosis uses


def rc_msg(parts: list[str]) -> tuple[str, str]:
    """`<rc>\\t<base64 message>` fields -> (rc, message on one line; the raw field when it is not
    base64)."""
    rc = parts[0] if parts else ""
    raw = parts[1] if len(parts) > 1 else ""
    try:
        msg = base64.b64decode(raw).decode("utf-8", "replace")
    except ValueError:
        msg = raw
    return rc, " ".join(msg.split())


def pull_problem(msg: str, what: str, ep: str, manifest: str = "") -> str:  # noqa: PLR0911
    low = msg.lower()
    if manifest == "404":
        # containerd falls back to the upstream after the mirror's 404, and then reports the
        # upstream's (offline) error: the registry's own answer is the real reason
        return (f"manifest unknown: the registry at {ep} does not have this image; run registry-up "
                f"(the node's {what} said: {msg})")
    if "http response to https client" in low:
        return (f"HTTP answered where HTTPS was expected: {what} does not treat {ep} as a plain-HTTP "
                "registry (insecure-registries / hosts.toml missing); run configure-nodes")
    tls = classify_tls(msg)
    if tls is not None:
        return f"{tls} ({what} said: {msg})"
    if "manifest unknown" in low or ("not found" in low and "manifest" in low) or "not found: not found" in low:
        return f"manifest unknown: the image is not in the registry; run registry-up ({msg})"
    if "unauthorized" in low or "no basic auth" in low or "401" in low:
        return f"401: {what} has no or wrong credentials for {ep} ({msg})"
    if "connection refused" in low or "no route" in low or "i/o timeout" in low:
        return f"registry unreachable from the node for {what} ({msg})"
    return msg or "failed"


def timeout_problem(vals: Mapping[str, list[str]], daemon: str, *tags: str) -> str | None:
    """Why a check has no answer when one of its node-side calls ran out of time (`timeout.<tag>
    <seconds> <base64 command>`, printed by lib.sh's `bounded`): "`docker pull x` did not answer
    within 18 s: dockerd hung?", or, when no time was left to start it, that the node's budget was
    spent first. The first of `tags` (in the order the calls ran) that timed out; None when none did."""
    for tag in tags:
        fields = vals.get(f"timeout.{tag}")
        if fields is None:
            continue
        seconds = fields[0] if fields else ""
        command = " ".join((b64text(fields[1]) if len(fields) > 1 else "").split()) or tag
        if not seconds.isdigit() or seconds == "0":
            return f"`{command}` was not run: the node's smoke-test --timeout was spent before it"
        return f"`{command}` did not answer within {seconds} s: {daemon} hung?"
    return None


def parse_probe(output: str) -> dict[str, list[str]]:
    """A probe's tagged lines: tag -> fields of its last line (`unit.<unit>` -> [active, enabled])."""
    return last_values(output)


def first(vals: Mapping[str, list[str]], key: str) -> str:
    """The first field of a probe value, "" when absent."""
    return (vals.get(key) or [""])[0]


def fields(vals: Mapping[str, list[str]], key: str, n: int) -> list[str]:
    """The first `n` fields of a probe value, "" for each one the line lacks (absent, or cut short)."""
    return [*vals.get(key, []), *[""] * n][:n]
