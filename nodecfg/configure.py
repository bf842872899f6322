"""configure-nodes: per node, facts (one command) -> a pure NodePlan -> apply (one command).

Where a change goes: what is read from a node is `facts_script` / `parse_facts`; what the files
should say is decided by the pure planners in `runtimes/docker.py` and `runtimes/containerd.py`;
`apply_script` turns a plan into the one shell script that changes the node; `configure_node`
checks the result and calls `rollback_script` when a runtime did not take the change.

apply writes every changed file to a temp file beside it, validates it (JSON and TOML here before
sending; on the node `dockerd --validate` where docker has it, `containerd -c FILE config dump`),
keeps the previous version as `<file>.nodecfg-<time>.bak`, renames the temp file into place,
reloads docker / restarts containerd (side by side) only when their config changed, and checks the
*effect*: `docker info` lists the registry, containerd answers with its CRI plugin loaded and the
config dump shows config_path. A runtime whose change did not take is rolled back: backups
restored, runtime recovered, node failed. Every wait on a node is bounded.
"""

from __future__ import annotations

import base64
import difflib
import json
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from nodecfg import ssh
from nodecfg.errors import HostError
from nodecfg.fleet import FleetResult, HostResult, run_fleet
from nodecfg.inventory import Host, Inventory, Secret
from nodecfg.runtimes import containerd as ctd
from nodecfg.runtimes import docker as dkr
from nodecfg.runtimes.common import FileChange, RuntimePlan, ServiceFacts, unit_states, wait_until

RUNTIMES = ("docker", "containerd")
UNIT_PROPS = ("LoadState", "ActiveState", "UnitFileState", "ActiveEnterTimestampMonotonic",
              "MainPID", "ExecStart", "DropInPaths")


@dataclass(frozen=True)
class Options:
    check: bool = False
    diff: bool = False
    become_password: Secret | None = None


# ---------------------------------------------------------------------------------------------
# facts


def facts_script(extra_files: tuple[str, ...] = (), extra_dirs: tuple[str, ...] = ()) -> str:
    """One command that prints everything the planners need, as tab-separated lines."""
    props = " ".join(f"-p {p}" for p in UNIT_PROPS)
    dirs = " ".join(shlex.quote(d) for d in (ctd.DEFAULT_CERTS_D, *extra_dirs))
    files = " ".join(shlex.quote(f) for f in (dkr.DAEMON_JSON, dkr.ROOT_DOCKER_CONFIG,
                                              ctd.CONFIG_TOML, *extra_files))
    return f"""\
f() {{ [ -f "$1" ] && printf 'file\\t%s\\t%s\\n' "$1" "$(base64 -w0 < "$1")"; }}
units=$(systemctl show docker.service containerd.service -p Id {props} 2>/dev/null)
printf '%s\\n' "$units" | awk 'BEGIN {{ RS = ""; FS = "\\n" }} {{
  id = ""; for (i = 1; i <= NF; i++) if ($i ~ /^Id=/) {{ id = substr($i, 4); sub(/\\.service$/, "", id) }}
  for (i = 1; i <= NF; i++) if ($i !~ /^Id=/) printf "unit.%s\\t%s\\n", id, $i }}'
printf 'bin.docker\\t%s\\n' "$(command -v dockerd)"
printf 'bin.containerd\\t%s\\n' "$(command -v containerd)"
# the running dockerd answers /version in a few ms; starting the dockerd binary costs ~40 ms CPU,
# which on a busy node is most of the facts' cost
dv=$(curl -s --max-time 2 --unix-socket /var/run/docker.sock http://docker/version 2>/dev/null \
     | grep -o '"Version":"[^"]*"' | tail -n 1 | cut -d'"' -f4)
if [ -n "$dv" ]; then printf 'version.docker\tDocker version %s\n' "$dv"
else printf 'version.docker\t%s\n' "$(dockerd --version 2>/dev/null)"; fi
printf 'version.containerd\\t%s\\n' "$(containerd --version 2>/dev/null)"
pid=$(printf '%s\\n' "$units" | awk 'BEGIN {{ RS = ""; FS = "\\n" }} /Id=docker.service/ {{
  for (i = 1; i <= NF; i++) if ($i ~ /^MainPID=/) print substr($i, 9) }}')
if [ "${{pid:-0}}" -gt 0 ] 2>/dev/null; then printf 'cmdline.docker\\t%s\\n' "$(base64 -w0 < /proc/$pid/cmdline)"; fi
# every config file in one archive: two processes, whatever the number of files
set --
for p in {files}; do [ -f "$p" ] && set -- "$@" "$p"; done
for d in {dirs}; do for h in "$d"/*/hosts.toml; do [ -f "$h" ] && set -- "$@" "$h"; done; done
if ! command -v tar >/dev/null; then for p in "$@"; do f "$p"; done
elif [ $# -gt 0 ]; then printf 'files\\t%s\\n' "$(tar -chf - -P -- "$@" 2>/dev/null | base64 -w0)"; fi
true
"""


@dataclass(frozen=True)
class NodeFacts:
    docker: dkr.DockerFacts
    containerd: ctd.ContainerdFacts
    files: dict[str, str] = field(default_factory=dict)


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


def _untar(b64: str) -> dict[str, str]:
    """path -> text of the regular files in a base64 tar (absolute member names, `tar -P`)."""
    import io
    import tarfile

    out: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(b64)), mode="r:") as tar:
            for member in tar:
                data = tar.extractfile(member) if member.isfile() else None
                if data is not None:
                    out["/" + member.name.lstrip("/")] = data.read().decode("utf-8", "replace")
    except (tarfile.TarError, ValueError):
        pass
    return out


def parse_facts(output: str) -> NodeFacts:
    units: dict[str, dict[str, str]] = {r: {} for r in RUNTIMES}
    misc: dict[str, str] = {}
    files: dict[str, str] = {}
    for line in output.splitlines():
        key, _, rest = line.partition("\t")
        if key.startswith("unit."):
            prop, _, value = rest.partition("=")
            units.setdefault(key[5:], {})[prop] = value
        elif key == "files":
            files.update(_untar(rest))
        elif key == "file":
            path, _, b64 = rest.partition("\t")
            files[path] = base64.b64decode(b64).decode("utf-8", "replace")
        else:
            misc[key] = rest
    services = {}
    for rt in RUNTIMES:
        u = units.get(rt, {})
        load = u.get("LoadState", "not-found")
        version = misc.get(f"version.{rt}", "").split()
        services[rt] = ServiceFacts(
            name=rt,
            installed=bool(misc.get(f"bin.{rt}")) and load != "not-found",
            masked=load == "masked" or u.get("UnitFileState", "") in ("masked", "masked-runtime"),
            active=u.get("ActiveState") == "active",
            active_since=u.get("ActiveEnterTimestampMonotonic", ""),
            main_pid=int(u.get("MainPID", "0") or 0),
            version=_version_word(version, rt),
            exec_start=_exec_argv(u.get("ExecStart", "")),
            drop_ins=tuple(u.get("DropInPaths", "").split()),
        )
    cmdline_b64 = misc.get("cmdline.docker", "")
    cmdline = tuple(a for a in base64.b64decode(cmdline_b64).decode("utf-8", "replace").split("\0")
                    if a) if cmdline_b64 else services["docker"].exec_start
    docker_facts = dkr.DockerFacts(
        service=services["docker"],
        daemon_json=files.get(dkr.config_file_flag(cmdline) or dkr.DAEMON_JSON),
        daemon_json_path=dkr.config_file_flag(cmdline) or dkr.DAEMON_JSON,
        client_config=files.get(dkr.ROOT_DOCKER_CONFIG),
        cmdline=cmdline,
        drop_ins=services["docker"].drop_ins,
    )
    cfg_file = _containerd_config_flag(services["containerd"].exec_start) or ctd.CONFIG_TOML
    containerd_facts = ctd.ContainerdFacts(
        service=services["containerd"],
        config_toml=files.get(cfg_file),
        config_file=cfg_file,
        hosts={p: t for p, t in files.items() if p.endswith("/hosts.toml")},
    )
    return NodeFacts(docker_facts, containerd_facts, files)


def _version_word(words: list[str], runtime: str) -> str:
    """'Docker version 20.10.24+dfsg1, build ...' -> 20.10.24+dfsg1; containerd's third word."""
    if runtime == "docker":
        return words[2].rstrip(",") if len(words) > 2 else ""
    return words[2] if len(words) > 2 else ""


def _containerd_config_flag(argv: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


# ---------------------------------------------------------------------------------------------
# plan (pure)


@dataclass(frozen=True)
class NodePlan:
    docker: RuntimePlan
    containerd: RuntimePlan

    @property
    def runtimes(self) -> tuple[RuntimePlan, ...]:
        return (self.containerd, self.docker)  # containerd first: docker talks to it

    @property
    def files(self) -> tuple[FileChange, ...]:
        return tuple(f for p in self.runtimes for f in p.files)


def plan_node(facts: NodeFacts, inv: Inventory, credentials: tuple[str, str] | None) -> NodePlan:
    reg = inv.registry
    return NodePlan(
        docker=dkr.plan_docker(facts.docker, reg.endpoint, "docker.io" in reg.mirrors, credentials),
        containerd=ctd.plan_containerd(facts.containerd, reg.endpoint, reg.mirrors, credentials),
    )


def unified_diff(change: FileChange) -> str:
    if change.secret:
        return f"--- {change.path}\n+++ {change.path}\n(contents hidden: the file holds credentials)\n"
    old = (change.old or "").splitlines(keepends=True)
    new = change.content.splitlines(keepends=True)
    return "".join(difflib.unified_diff(old, new, f"{change.path} (before)" if change.old is not None
                                        else "/dev/null", f"{change.path} (nodecfg)"))


def _validate_content(change: FileChange) -> str | None:
    """Local validation before anything is sent: the text must parse as its format."""
    try:
        if change.validate in ("json", "dockerd"):
            json.loads(change.content)
        elif change.validate in ("toml", "containerd"):
            tomllib.loads(change.content)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        return f"{change.path}: generated content does not parse ({exc})"
    return None


# ---------------------------------------------------------------------------------------------
# apply (the scripts are pure functions of the plan)


def apply_script(plan: NodePlan, endpoint: str, mirror_docker_io: bool) -> str:
    """The one script that changes a node. Few processes: on a busy node every fork costs, so the
    temp files are written by the shell's own printf with their mode set by umask, under noclobber
    (`set -C`: a temp name that already exists is an error, never followed), and the backups are
    hard links to the previous files (the rename then leaves them untouched)."""
    lines = ["umask 022", "ts=$(date +%Y%m%d%H%M%S)", "bad=0", "temps=", "set -C"]
    for i, f in enumerate(plan.files):
        directory = f.path.rsplit("/", 1)[0]
        d = shlex.quote(directory)
        t = f"t{i}"
        lines += [
            f"[ -d {d} ] || mkdir -p {d}",
            f"{t}={shlex.quote(f'{directory}/.nodecfg.{i}.')}$$",
            f'temps="$temps ${t}"',
            f"umask {0o777 & ~f.mode:03o}",
            f"printf '%s' {shlex.quote(f.content)} > \"${t}\" || {{ printf 'invalid\\t%s\\t%s\\n' "
            f"{shlex.quote(f.path)} 'cannot create a temp file'; bad=1; }}",
            "umask 022",
        ]
        if f.validate == "containerd":
            # containerd's own reading of the new file; the verify after the restart reuses it
            lines.append(f"if dump=$(containerd -c \"${t}\" config dump 2>\"${t}.err\"); then "
                         "printf 'containerd.dump\\t%s\\n' \"$(printf '%s\\n' \"$dump\" | base64 -w0)\"; "
                         f"else printf 'invalid\\t%s\\t%s\\n' {shlex.quote(f.path)} "
                         f"\"$(tail -n 1 \"${t}.err\")\"; bad=1; fi; rm -f \"${t}.err\"")
        check = {"dockerd": f"dockerd --validate --config-file \"${t}\""}.get(f.validate)
        if check:
            lines.append(f"if ! out=$({check} 2>&1 >/dev/null); then printf 'invalid\\t%s\\t%s\\n' "
                         f"{shlex.quote(f.path)} \"$(printf '%s' \"$out\" | tail -n 1)\"; bad=1; fi")
    lines.append("if [ $bad = 1 ]; then rm -f $temps; exit 0; fi")
    for i, f in enumerate(plan.files):
        p = shlex.quote(f.path)
        lines += [
            f"if [ -e {p} ]; then ln -f {p} {p}.nodecfg-$ts.bak && "
            f"printf 'backup\\t%s\\t%s\\n' {p} {p}.nodecfg-$ts.bak; fi",
            f"mv -f \"$t{i}\" {p} && printf 'wrote\\t%s\\n' {p}",
        ]
    # containerd's restart and docker's reload are independent: run them side by side
    for rp in plan.runtimes:
        if rp.action != "none":
            lines.append(f"(systemctl {rp.action} {rp.runtime}.service 2>&1 | tail -n 1 | "
                         f"sed 's/^/actionlog.{rp.runtime}\\t/') &")
    lines.append("wait")
    if plan.containerd.action == "restart":
        lines.append(ctd.verify_script())
    if plan.docker.action == "reload":
        lines.append(dkr.verify_script(endpoint, mirror_docker_io))
    lines += [_state_probe(), "true"]
    return "\n".join(lines) + "\n"


def _state_probe() -> str:
    """`after.<runtime>\\t<ActiveState>\\t<ActiveEnterTimestampMonotonic>`, one systemctl call."""
    return unit_states("after.", ("ActiveState", "ActiveEnterTimestampMonotonic"))


def rollback_script(plan: RuntimePlan, written: dict[str, str | None]) -> str:
    """Put back the previous files of one runtime and bring it back up."""
    lines = []
    for f in plan.files:
        if f.path not in written:
            continue
        p = shlex.quote(f.path)
        backup = written[f.path]
        lines.append(f"mv -f {shlex.quote(backup)} {p}" if backup else f"rm -f {p}")
    unit = f"{plan.runtime}.service"
    if plan.runtime == "containerd":
        lines.append(f"systemctl reset-failed {unit} 2>/dev/null; systemctl restart {unit}")
    else:
        lines.append(f"if systemctl is-active -q {unit}; then systemctl reload {unit}; else "
                     f"systemctl reset-failed {unit} 2>/dev/null; systemctl start {unit}; fi")
    probe = ("timeout 3 ctr --connect-timeout 1s version" if plan.runtime == "containerd"
             else "timeout 5 docker info")
    lines.append(wait_until(f"{probe} >/dev/null 2>&1", 15))
    lines += [_state_probe(), "true"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# outcome


@dataclass(frozen=True)
class RuntimeOutcome:
    runtime: str
    status: str  # unchanged | changed | would change | masked | absent | failed | rolled back
    action: str = "none"  # none | reloaded | restarted | would reload | would restart
    files: tuple[str, ...] = ()
    note: str = ""
    version: str = ""
    active: bool = False


@dataclass(frozen=True)
class NodeOutcome:
    docker: RuntimeOutcome
    containerd: RuntimeOutcome
    diffs: tuple[str, ...] = ()
    error: str = ""

    @property
    def files_changed(self) -> tuple[str, ...]:
        return (*self.containerd.files, *self.docker.files)

    @property
    def changed(self) -> bool:
        return bool(self.files_changed)


def _outcome_from_plan(rp: RuntimePlan, svc: ServiceFacts, check: bool) -> RuntimeOutcome:
    if rp.status != "configure":
        return RuntimeOutcome(rp.runtime, rp.status, note=rp.note, version=svc.version,
                              active=svc.active)
    if not rp.files:
        return RuntimeOutcome(rp.runtime, "unchanged", note=rp.note, version=svc.version,
                              active=svc.active)
    action = {"reload": "reloaded", "restart": "restarted"}.get(rp.action, "none")
    if check:
        action = {"reload": "would reload", "restart": "would restart"}.get(rp.action, "none")
    return RuntimeOutcome(rp.runtime, "would change" if check else "changed", action,
                          tuple(f.path for f in rp.files), rp.note, svc.version, svc.active)


def _parse_apply(output: str) -> tuple[dict[str, str], dict[str, str | None], dict[str, str]]:
    invalid: dict[str, str] = {}
    written: dict[str, str | None] = {}
    values: dict[str, str] = {}
    backups: dict[str, str] = {}
    for line in output.splitlines():
        key, _, rest = line.partition("\t")
        if key == "invalid":
            path, _, why = rest.partition("\t")
            invalid[path] = why
        elif key == "backup":
            path, _, bak = rest.partition("\t")
            backups[path] = bak
        elif key == "wrote":
            written[rest] = backups.get(rest)
        else:
            values[key] = rest
    return invalid, written, values


def _runtime_error(rp: RuntimePlan, values: dict[str, str], endpoint: str, mirror: bool,
                   certs_dir: str) -> str | None:
    after = values.get(f"after.{rp.runtime}", "").split("\t")[0]
    if rp.action == "none":
        return None
    if after != "active":
        log = values.get(f"actionlog.{rp.runtime}", "")
        return f"{rp.runtime} is {after or 'gone'} after {rp.action}" + (f": {log}" if log else "")
    if rp.runtime == "docker":
        return dkr.check_effect(values.get("docker.info", ""), endpoint, mirror)
    return ctd.check_effect(values.get("containerd.dump", ""), values.get("containerd.cri", ""),
                            certs_dir)


def configure_node(c: Any, host: Host, inv: Inventory, options: Options,
                   credentials: tuple[str, str] | None) -> NodeOutcome:
    """Facts, plan, apply and verify one node over an open connection `c`."""
    become = host.ssh.become

    def sh(script: str) -> ssh.RunResult:
        return ssh.run(c, "sh -s", stdin=script.encode(), become=become,
                       become_password=options.become_password)

    res = sh(facts_script())
    if not res.ok or "unit.docker" not in res.stdout:
        raise HostError(f"{host}: gathering facts failed: {res.brief()}")
    facts = parse_facts(res.stdout)
    plan = plan_node(facts, inv, credentials)
    certs_dir = _certs_dir(plan)
    if certs_dir != ctd.DEFAULT_CERTS_D or facts.docker.daemon_json_path != dkr.DAEMON_JSON:
        res = sh(facts_script((facts.docker.daemon_json_path,), (certs_dir,)))
        facts = parse_facts(res.stdout)
        plan = plan_node(facts, inv, credentials)
    for f in plan.files:
        problem = _validate_content(f)
        if problem:
            raise HostError(f"{host}: {problem}")
    svc = {"docker": facts.docker.service, "containerd": facts.containerd.service}
    outcomes = {rp.runtime: _outcome_from_plan(rp, svc[rp.runtime], options.check)
                for rp in plan.runtimes}
    diffs = tuple(unified_diff(f) for f in plan.files) if options.diff else ()
    failed = [o for o in outcomes.values() if o.status == "failed"]
    if options.check or not plan.files:
        return _finish(outcomes, diffs, failed)
    reg = inv.registry
    mirror = "docker.io" in reg.mirrors
    res = sh(apply_script(plan, reg.endpoint, mirror))
    if not res.ok:
        raise HostError(f"{host}: applying the plan failed: {res.brief()}")
    invalid, written, values = _parse_apply(res.stdout)
    if invalid:
        why = "; ".join(f"{p}: {w}" for p, w in invalid.items())
        for rt, o in outcomes.items():
            if any(f in invalid for f in o.files):
                outcomes[rt] = replace(o, status="failed", action="none",
                                       note=f"validation failed, nothing written: {why}")
        return _finish(outcomes, diffs, [o for o in outcomes.values() if o.status == "failed"])
    for rp in plan.runtimes:
        error = _runtime_error(rp, values, reg.endpoint, mirror, certs_dir)
        active = values.get(f"after.{rp.runtime}", "").startswith("active")
        outcomes[rp.runtime] = replace(outcomes[rp.runtime], active=active)
        if error is None:
            continue
        rb = sh(rollback_script(rp, written))
        state = dict(line.split("\t", 1) for line in rb.stdout.splitlines() if "\t" in line)
        back = state.get(f"after.{rp.runtime}", "").split("\t")[0]
        outcomes[rp.runtime] = replace(
            outcomes[rp.runtime], status="rolled back", active=back == "active",
            note=f"{error}; previous files restored, {rp.runtime} {back or 'state unknown'}")
    failed = [o for o in outcomes.values() if o.status in ("failed", "rolled back")]
    return _finish(outcomes, diffs, failed)


def _certs_dir(plan: NodePlan) -> str:
    for f in plan.containerd.files:
        if f.path.endswith("/hosts.toml"):
            return f.path.rsplit("/", 2)[0]
    return ctd.DEFAULT_CERTS_D


def _finish(outcomes: dict[str, RuntimeOutcome], diffs: tuple[str, ...],
            failed: list[RuntimeOutcome]) -> NodeOutcome:
    error = "; ".join(f"{o.runtime}: {o.note}" for o in failed)
    return NodeOutcome(outcomes["docker"], outcomes["containerd"], diffs, error)


def configure_nodes(inv: Inventory, hosts: tuple[Host, ...], options: Options, *, forks: int,
                    on_done: Callable[[HostResult[NodeOutcome]], Any] | None = None,
                    ) -> FleetResult[NodeOutcome]:
    credentials = None
    if inv.registry.auth is not None:
        credentials = (inv.registry.auth.username, inv.registry.auth.password().reveal())

    def one(host: Host) -> NodeOutcome:
        c = ssh.connect(host)
        try:
            return configure_node(c, host, inv, options, credentials)
        finally:
            ssh.close(c)

    return run_fleet(hosts, one, forks=forks, on_done=on_done)
