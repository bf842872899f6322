"""smoke-test: prove every node can pull from the registry, and say exactly why one can't.

Per node, one command runs every probe (registry reachable from the node, docker pulls, containerd
pulls, config_path in effect) and prints raw results; `diagnose()` turns them into checks with
operator-facing reasons. A pull through a mirror is only attempted when the node's mirror config
names the registry: without it the node would go to the upstream, which an offline node can't reach.
Images a node didn't have before are removed afterwards, so a re-run really pulls again.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodecfg import runtimes as registry
from nodecfg import ssh
from nodecfg.bundle.manifests import DOCKER_LIST, OCI_INDEX
from nodecfg.errors import HostError, UsageError
from nodecfg.fleet import FleetResult, HostResult, run_fleet
from nodecfg.images import DOCKER_HUB, parse_ref
from nodecfg.inventory import Host, Inventory, Secret
from nodecfg.registry import MANIFEST_TYPES, curl_auth_prelude
from nodecfg.runtimes.base import Check, SmokePlan, parse_probe, unit_of
from nodecfg.runtimes.common import unit_states

__all__ = ["Check", "SmokePlan", "check_names", "choose_plan", "diagnose", "parse_probe",
           "probe_script", "reach_probe", "smoke_node", "smoke_test"]

INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)


def check_names() -> tuple[str, ...]:
    """The recap's columns: the registry, then every runtime's checks."""
    return ("registry", *(name for rt in registry.registered() for name in rt.checks))


@dataclass(frozen=True)
class NodeSmoke:
    checks: tuple[Check, ...]
    error: str = ""


def choose_plan(inv: Inventory, image: str | None, catalog_first: Callable[[], str | None]) -> SmokePlan:
    reg = inv.registry
    refs = [parse_ref(i) for i in inv.images]
    if image:
        chosen = parse_ref(image)
    elif refs:
        chosen = refs[0]
    else:
        first = catalog_first()
        if first is None:
            raise UsageError("smoke-test: no --image, no images in the inventory, and the "
                             "registry's catalog is empty; run registry-up first")
        chosen = parse_ref(first)
    hub = chosen if chosen.registry == DOCKER_HUB else next(
        (r for r in refs if r.registry == DOCKER_HUB), None)
    if DOCKER_HUB not in reg.mirrors:
        hub = None
    return SmokePlan(reg.endpoint, chosen, hub, reg.mirrors, reg.auth is not None)


# python3's HTTP GET, for nodes without curl and wget: prints the status code, 000 if none
_PY_GET = ("import sys, urllib.error, urllib.request\n"
           "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)\n"
           "except urllib.error.HTTPError as exc:\n    print(exc.code)\n"
           "except Exception:\n    print('000'); sys.exit(7)\n")
# bash (named: dash has no /dev/tcp) speaking HTTP/1.0 itself: prints the status code
_BASH_GET = ('exec 3<>"/dev/tcp/$1/$2" || exit 7; '
             'printf "GET /v2/ HTTP/1.0\\r\\nHost: %s:%s\\r\\n\\r\\n" "$1" "$2" >&3; '
             'read -r _ code _ <&3; printf %s "$code"')


def reach_probe(url: str, host: str, port: str, accept: str, manifest_url: str) -> str:
    """Shell: does the registry answer HTTP from the node? With curl (credentials and the manifest
    too), else wget, else python3, else bash's /dev/tcp; a node with none of them says `none`
    (reported "not checked", never a failure). Prints `reach <tool> <rc> <http code>`."""
    q = shlex.quote
    url = q(url)  # a value from the inventory: quoted, never spliced ([v6] brackets would glob)
    return (
        "if command -v curl >/dev/null; then "
        f"code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {url}); rc=$?; "
        "printf 'reach\\tcurl\\t%s\\t%s\\n' \"$rc\" \"$code\"; "
        f"if [ \"$code\" = 401 ] && [ -s \"$ncfg\" ]; then code=$(curl -s -o /dev/null -w '%{{http_code}}' "
        f"--max-time 5 -K \"$ncfg\" {url}); printf 'reach.auth\\t%s\\n' \"$code\"; fi; "
        f"code=$(curl -s -o /dev/null -I -w '%{{http_code}}' --max-time 5 -K \"$ncfg\" {accept} "
        f"{q(manifest_url)}); printf 'manifest\\t%s\\n' \"$code\"; "
        f"elif command -v wget >/dev/null; then code=$(wget -q -S -O /dev/null -T 5 {url} 2>&1 | "
        "awk '/HTTP\\//{c=$2} END{print c}'); printf 'reach\\twget\\t0\\t%s\\n' \"${code:-000}\"; "
        f"elif command -v python3 >/dev/null; then code=$(timeout 8 python3 -c {q(_PY_GET)} {url}); rc=$?; "
        "printf 'reach\\tpython3\\t%s\\t%s\\n' \"$rc\" \"${code:-000}\"; "
        f"elif command -v bash >/dev/null; then code=$(timeout 5 bash -c {q(_BASH_GET)} _ {q(host)} {q(port)} "
        "2>/dev/null); rc=$?; printf 'reach\\tbash\\t%s\\t%s\\n' \"$rc\" \"${code:-000}\"; "
        "else printf 'reach\\tnone\\t\\t\\n'; fi"
    )


def probe_script(plan: SmokePlan, credentials: tuple[str, Secret] | None) -> str:
    ep = plan.endpoint
    host, port = ep.rsplit(":", 1)
    url = f"http://{ep}/v2/"
    manifest_url = f"http://{ep}/v2/{plan.image.path}/manifests/{plan.image.tag}"
    accept = " ".join(f"-H {shlex.quote('Accept: ' + t)}" for t in (*MANIFEST_TYPES, *INDEX_TYPES))
    runtimes = registry.registered()
    names = tuple(dict.fromkeys(unit_of(rt) for rt in runtimes))
    lines = [
        curl_auth_prelude(credentials),
        # every runtime's unit in one systemctl call: `unit <runtime> <ActiveState> <UnitFileState>`
        "units=$(" + unit_states("unit\\t", ("ActiveState", "UnitFileState"), names) + ")",
        "printf '%s\\n' \"$units\"",
        "active() { printf '%s\\n' \"$units\" | awk -F'\\t' -v u=\"$1\" '$2 == u && $3 == \"active\" { f = 1 } "
        "END { exit !f }'; }",
        reach_probe(url, host, port, accept, manifest_url),
    ]
    for rt in runtimes:  # each runtime's own probe, when its unit is active
        lines += [f"if active {unit_of(rt)}; then",
                  *("  " + ln for ln in rt.probe_fragment(plan).splitlines()), "fi"]
    lines.append("true")
    return "\n".join(lines) + "\n"


def diagnose(output: str, plan: SmokePlan, node: str) -> tuple[Check, ...]:
    """Turn the raw probe lines into checks with reasons (pure)."""
    ep = plan.endpoint
    vals = parse_probe(output)
    checks: list[Check] = []
    reach = vals.get("reach", ["", "", "000"])
    tool, rc, code = [*reach, "", "", ""][:3]
    auth_code = (vals.get("reach.auth") or [""])[0]
    if tool == "none":
        checks.append(Check("registry", "skip", "not checked: the node has no curl, wget, python3 or "
                            "bash (the pulls below still prove it)"))
    elif code in ("200",) or (code == "401" and auth_code == "200"):
        checks.append(Check("registry", "ok", f"GET http://{ep}/v2/ -> {auth_code or code} ({tool})"))
    elif code == "401" and plan.has_auth and tool != "curl":
        checks.append(Check("registry", "ok", f"GET http://{ep}/v2/ -> 401 ({tool}; the credentials "
                            "are proven by the pulls)"))
    elif code == "401":
        detail = ("401: the registry rejected the inventory's credentials" if plan.has_auth and auth_code
                  else "401: the registry requires credentials and the inventory has no registry.auth")
        checks.append(Check("registry", "FAIL", detail))
    elif code and code != "000":
        checks.append(Check("registry", "FAIL", f"GET http://{ep}/v2/ answered HTTP {code} ({tool}): "
                            "is something else listening on that port?"))
    else:
        why = {"6": "name does not resolve", "7": "connection refused",
               "28": "no answer within 5s"}.get(rc, f"{tool} exit code {rc}")
        checks.append(Check("registry", "FAIL",
                            f"registry unreachable from {node}: http://{ep}/v2/: {why}"))
    active_runtimes = 0
    runtimes = registry.registered()
    for rt in runtimes:  # its unit-state check is named by its unit (`unit_of`: usually its name)
        unit = unit_of(rt)
        active, enabled = vals.get(f"unit.{unit}", ["", ""])
        if active == "active":
            active_runtimes += 1
            continue
        state = "masked" if enabled == "masked" else ("not installed" if enabled in ("", "not-found")
                                                     and active in ("inactive", "") else None)
        if state:
            checks.append(Check(unit, "skip", state))
        else:
            checks.append(Check(unit, "FAIL", f"{unit} is {active or 'unknown'} (enabled: "
                                f"{enabled or '?'}): runtime down"))
        checks.extend(rt.down_checks(state))
    for rt in runtimes:
        checks.extend(rt.diagnose(vals, plan))
    # a runtime without a unit of its own (podman) that pulled counts as one the node has
    if active_runtimes == 0 and not any(ch.status == "ok" and ch.name != "registry" for ch in checks):
        checks.append(Check("runtime", "FAIL", "no container runtime is active on this node"))
    return tuple(checks)


def smoke_node(c: Any, host: Host, plan: SmokePlan,
               credentials: tuple[str, Secret] | None) -> NodeSmoke:
    become = host.ssh.become
    res = ssh.run(c, "sh -s", stdin=probe_script(plan, credentials).encode(), become=become, timeout=300)
    if "unit\t" not in res.stdout:
        raise HostError(f"{host}: the probe did not run: {res.brief()}")
    output = res.stdout
    for rt in registry.registered():  # a runtime's second step, on the same connection
        output += rt.probe_more(c, become, plan, parse_probe(output))
    checks = diagnose(output, plan, f"{host.name} ({host.address})")
    failed = [ch for ch in checks if ch.status == "FAIL"]
    return NodeSmoke(checks, "; ".join(f"{ch.name}: {ch.detail}" for ch in failed))


@dataclass(frozen=True)
class SmokeResult:
    plan: SmokePlan
    fleet: FleetResult[NodeSmoke]

    @property
    def exit_code(self) -> int:
        return self.fleet.exit_code


def smoke_test(inv: Inventory, hosts: tuple[Host, ...], *, image: str | None, forks: int,
               on_done: Callable[[HostResult[NodeSmoke]], Any] | None = None) -> SmokeResult:
    credentials = None
    if inv.registry.auth is not None:
        credentials = (inv.registry.auth.username, inv.registry.auth.password())

    def catalog_first() -> str | None:
        from nodecfg.registry import catalog_on_master

        catalog = catalog_on_master(inv)
        for repo, tags in sorted(catalog.items()):
            if tags:
                return f"{inv.registry.endpoint}/{repo}:{tags[0]}"
        return None

    plan = choose_plan(inv, image, catalog_first)

    def one(host: Host) -> NodeSmoke:
        c = ssh.connect(host)
        try:
            return smoke_node(c, host, plan, credentials)
        finally:
            ssh.close(c)

    return SmokeResult(plan, run_fleet(hosts, one, forks=forks, on_done=on_done))
