"""smoke-test: prove every node can pull from the registry, and say exactly why one can't.

Per node, one command runs every probe (registry reachable from the node, docker pulls, containerd
pulls, config_path in effect) and prints raw results; `diagnose()` turns them into checks with
operator-facing reasons. A pull through a mirror is only attempted when the node's mirror config
names the registry: without it the node would go to the upstream, which an offline node can't reach.
Images a node didn't have before are removed afterwards, so a re-run really pulls again.

A node's whole work — the SSH connect, the probe, the runtimes' second steps, the CRI pull — has one
deadline, `--timeout` (`DEFAULT_TIMEOUT`), enforced on the node and here: nodecfg/deadline.py.

With replicas, each node is given its own order (`Inventory.replicas_for`): its mirror pulls go
through it, as the kubelet's would, and say which replica served them where the runtime tells
(ctr of containerd 1.x, podman). Every replica is reached from every node (`replica_checks`, the
registry's own check per replica): a replica down is named once for the fleet (`SmokeResult.
replicas_down`: "replica 10.0.0.12:5000 unreachable from 12 of 12 nodes"), and fails the run only
with `--require-all-replicas`; a node passes when it pulls by upstream name. Pulls by registry path
go to registry.address alone (docker has no failover there): with replicas, the registry check and
docker's pull by registry path are warnings (WARN), naming registry.address.

Over TLS, the certificate each registry host serves, and the CA here, are checked for their dates
while the nodes run (registry/expiry.py): one that expires within 30 days is a warning line
(`SmokeResult.warnings`), never a failure.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from nodecfg import runtimes, scripts, ssh, tagged, tlsdiag
from nodecfg.bundle.manifests import INDEX_TYPES, MANIFEST_TYPES
from nodecfg.credentials import Credentials
from nodecfg.deadline import BoundedNode, NodeDeadline
from nodecfg.errors import HostError, UsageError
from nodecfg.fleet import FleetResult, HostResult, run_fleet
from nodecfg.images import DOCKER_HUB, parse_ref
from nodecfg.inventory import Host, Inventory
from nodecfg.runtimes.base import Check, SmokePlan, fields, first, parse_probe, rc_msg, timeout_problem, unit_of
from nodecfg.scripts import NodeScript

__all__ = ["Check", "SmokePlan", "check_names", "choose_plan", "diagnose", "parse_probe",
           "probe_script", "smoke_node", "smoke_test"]

DEFAULT_TIMEOUT = 120.0  # seconds for a node's whole smoke test (--timeout): connect, probe, pulls
SERVED_WAIT = 15.0  # seconds the served certificate's date may take after the nodes are done


def check_names() -> tuple[str, ...]:
    """The recap's columns: the registry, then every runtime's checks."""
    return ("registry", *(name for rt in runtimes.registered() for name in rt.checks))


@dataclass(frozen=True)
class NodeSmoke:
    checks: tuple[Check, ...]
    error: str = ""
    replicas: tuple[Check, ...] = ()  # each replica reached from the node (`replica_checks`)


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
    return SmokePlan(reg.endpoint, chosen, hub, reg.mirrors, reg.auth is not None, reg.scheme)


def probe_script(plan: SmokePlan, credentials: Credentials | None) -> NodeScript:
    """The one probe (scripts/probe.sh): every runtime's unit in one systemctl call, the registry
    reachable from the node (curl with the credentials and the manifest, else wget, else python3,
    else bash's /dev/tcp; a node with none of them says `none`, reported "not checked"), then each
    runtime's `<name>_probe` when its unit is active. Values from the inventory are arguments; the
    credentials are curl's config on stdin, never in an argv."""
    ep, scheme = plan.endpoint, plan.scheme
    host, port = ep.rsplit(":", 1)
    args = ["-e", ep, "-i", f"{ep}/{plan.image.target}",
            "-h", plan.hub_image.upstream if plan.hub_image is not None else "",
            "-u", f"{scheme}://{ep}/v2/", "-H", host, "-P", port,
            "-M", f"{scheme}://{ep}/v2/{plan.image.path}/manifests/{plan.image.tag}", "-S", scheme]
    for media_type in (*MANIFEST_TYPES, *INDEX_TYPES):
        args += ["-a", media_type]
    for rt in runtimes.registered():
        args += ["-r", rt.name, unit_of(rt)]
        if scheme == "https" and rt.trust_file(ep):
            args += ["-C", rt.trust_file(ep)]
    if plan.replicas:
        args += ["-f", plan.replicas[0]]
    for r in plan.replicas:
        if r != ep:  # the registry's own endpoint is reached above
            r_host, r_port = r.rsplit(":", 1)
            args += ["-p", r, f"{scheme}://{r}/v2/", r_host, r_port,
                     f"{scheme}://{r}/v2/{plan.image.path}/manifests/{plan.image.tag}"]
    stdin = base64.b64encode(credentials.curl_config()) if credentials is not None else b""
    return scripts.script("probe.sh", [rt.shell() for rt in runtimes.registered()], args, stdin)


def registry_check(vals: Mapping[str, list[str]], plan: SmokePlan, node: str) -> Check:  # noqa: PLR0911
    """The registry seen from the node: reachable, answering /v2/, the credentials taken — over TLS
    with the CA the node holds, a TLS failure named (tlsdiag) with its fix."""
    ep, scheme = plan.endpoint, plan.scheme
    url = f"{scheme}://{ep}/v2/"
    tool, rc, code = fields(vals, "reach", 3)
    auth_code = (vals.get("reach.auth") or [""])[0]
    ca = (vals.get("reach.ca") or [""])[0]
    err = rc_msg(["", *(vals.get("reach.err") or [""])])[1]
    via = f"{tool}; CA {ca}" if scheme == "https" and ca not in ("", "none") else tool
    if tool == "noca":
        return Check("registry", "FAIL", f"the registry serves TLS and the node holds no CA for it (none of "
                     f"{', '.join(rt.trust_file(ep) for rt in runtimes.registered() if rt.trust_file(ep))}); "
                     "run configure-nodes")
    if tool == "none":
        return Check("registry", "skip", "not checked: the node has no curl, wget, python3" +
                     (" (bash speaks no TLS)" if scheme == "https" else " or bash") +
                     " (the pulls below still prove it)")
    if code in ("200",) or (code == "401" and auth_code == "200"):
        return Check("registry", "ok", f"GET {url} -> {auth_code or code} ({via})")
    if code == "401" and plan.has_auth and tool != "curl":
        return Check("registry", "ok", f"GET {url} -> 401 ({via}; the credentials are proven by the pulls)")
    if code == "401":
        return Check("registry", "FAIL", "401: the registry rejected the inventory's credentials"
                     if plan.has_auth and auth_code
                     else "401: the registry requires credentials and the inventory has no registry.auth")
    if code == "400" and scheme == "http":
        return Check("registry", "FAIL", f"GET {url} answered HTTP 400 ({via}): HTTP spoken to an HTTPS "
                     "registry: it serves TLS; set registry.tls in the inventory and run configure-nodes")
    if code and code != "000":
        return Check("registry", "FAIL", f"GET {url} answered HTTP {code} ({via}): "
                     "is something else listening on that port?")
    problem = tlsdiag.classify(err) if scheme == "https" else None
    if problem is not None:
        return Check("registry", "FAIL", f"{problem} (GET {url} with {ca}: {err})")
    why = {"6": "name does not resolve", "7": "connection refused", "28": "no answer within 5s",
           "124": "no answer in time"}.get(rc, err or f"{tool} exit code {rc}")
    return Check("registry", "FAIL", f"registry unreachable from {node}: {url}: {why}")


def replica_checks(output: str, plan: SmokePlan, node: str) -> tuple[Check, ...]:
    """Each replica as the node reached it (`replica <endpoint>`), in the node's order: the
    registry's own check on its `reach@<endpoint>` values (pure). A replica that answers without
    the image fails too: the node's pulls fall over to the next one."""
    vals = parse_probe(output)
    out = []
    for ep in plan.replicas:
        sfx = "" if ep == plan.endpoint else f"@{ep}"
        own = {k[:len(k) - len(sfx)]: v for k, v in vals.items() if k.endswith(sfx)} if sfx else vals
        ch = registry_check(own, replace(plan, endpoint=ep), node)
        if ch.status == "ok" and first(own, "manifest") == "404":
            ch = Check(ch.name, "FAIL", f"{ep} answers but does not have {plan.image.target} (manifest "
                       "unknown): the nodes' pulls fall over to the next replica; run registry-up")
        out.append(Check(f"replica {ep}", ch.status, ch.detail))
    return tuple(out)


def diagnose(output: str, plan: SmokePlan, node: str) -> tuple[Check, ...]:
    """Turn the raw probe lines into checks with reasons (pure)."""
    vals = parse_probe(output)
    checks: list[Check] = [registry_check(vals, plan, node)]
    if plan.replicas and checks[0].status == "FAIL":
        checks[0] = Check("registry", "WARN", f"{checks[0].detail}; pulls by registry path go to "
                          f"registry.address {plan.endpoint} alone (dockerd has no failover there: point "
                          "a DNS name or VIP at the replicas); pulls by upstream name use the replicas")
    active_runtimes = 0
    registered = runtimes.registered()
    for rt in registered:  # its unit-state check is named by its unit (`unit_of`: usually its name)
        unit = unit_of(rt)
        active, enabled = fields(vals, f"unit.{unit}", 2)
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
    for rt in registered:
        checks.extend(rt.diagnose(vals, plan))
    # a runtime without a unit of its own (podman) that pulled counts as one the node has
    if active_runtimes == 0 and not any(ch.status == "ok" and ch.name != "registry" for ch in checks):
        checks.append(Check("runtime", "FAIL", "no container runtime is active on this node"))
    return tuple(checks)


def smoke_node(node: BoundedNode, host: Host, plan: SmokePlan,
               credentials: Credentials | None) -> NodeSmoke:
    """The probe, then each runtime's second step, on one node within its deadline; diagnosed."""
    res = node.run(probe_script(plan, credentials), "the probe")
    if not any(r.tag.startswith("unit.") for r in tagged.decode(res.stdout)):
        hung = timeout_problem(parse_probe(res.stdout), "systemd", "systemctl")
        raise HostError(f"{host}: the probe did not run: {hung or res.brief()}")
    output = res.stdout
    for rt in runtimes.registered():  # a runtime's second step, on the same connection
        output += rt.probe_more(node, plan, parse_probe(output))
    name = f"{host.name} ({host.address})"
    checks = diagnose(output, plan, name)
    failed = [ch for ch in checks if ch.status == "FAIL"]
    return NodeSmoke(checks, "; ".join(f"{ch.name}: {ch.detail}" for ch in failed),
                     replica_checks(output, plan, name))


@dataclass(frozen=True)
class ReplicaDown:
    """A replica that failed its check from some of the nodes that ran."""

    endpoint: str
    nodes: tuple[str, ...]  # the nodes it failed from, in inventory order
    of: int  # the nodes that ran
    example: str  # the first of those nodes' reason
    unreachable: bool = True  # False: it answers, without the image

    @property
    def line(self) -> str:
        what = "unreachable from" if self.unreachable else "without the image for"
        return f"replica {self.endpoint} {what} {len(self.nodes)} of {self.of} nodes"


@dataclass(frozen=True)
class SmokeResult:
    plan: SmokePlan
    fleet: FleetResult[NodeSmoke]
    require_all_replicas: bool = False  # --require-all-replicas: a replica down fails the run
    warnings: tuple[str, ...] = ()  # a certificate or CA that expires within 30 days (registry/expiry.py)

    @property
    def replicas_down(self) -> tuple[ReplicaDown, ...]:
        ran = [r for r in self.fleet.results if r.value is not None]
        down: dict[str, list[tuple[str, str]]] = {}
        for r in ran:
            assert r.value is not None
            for ch in r.value.replicas:
                if ch.status == "FAIL":
                    down.setdefault(ch.name.removeprefix("replica "), []).append((r.host.name, ch.detail))
        return tuple(ReplicaDown(ep, tuple(n for n, _ in failed), len(ran), f"{failed[0][0]}: {failed[0][1]}",
                                 not all(" does not have " in why for _, why in failed))
                     for ep, failed in down.items())

    @property
    def ok(self) -> bool:
        return not self.fleet.failed and not (self.require_all_replicas and self.replicas_down)

    @property
    def exit_code(self) -> int:
        return self.fleet.exit_code or (0 if self.ok else 1)


def smoke_test(inv: Inventory, hosts: tuple[Host, ...], *, image: str | None, forks: int,
               timeout: float = DEFAULT_TIMEOUT, require_all_replicas: bool = False,
               on_done: Callable[[HostResult[NodeSmoke]], Any] | None = None) -> SmokeResult:
    """Every node of `hosts` probed (at most `forks` at a time), each within `timeout` seconds
    from its connect to its last answer (nodecfg/deadline.py), through its own order of the
    replicas."""
    credentials = Credentials.of(inv.registry.auth)

    def catalog_first() -> str | None:
        from nodecfg.registry import master

        catalog = master.catalog(inv, step=timeout)  # the master, under the same bound as a node
        for repo, tags in sorted(catalog.items()):
            if tags:
                return f"{inv.registry.endpoint}/{repo}:{tags[0]}"
        return None

    plan = choose_plan(inv, image, catalog_first)

    def one(host: Host) -> NodeSmoke:
        deadline = NodeDeadline.start(timeout)
        try:
            c = ssh.connect(host, fabric=False, give_up_at=deadline.give_up_at)  # no Fabric import (issue 24)
        except HostError as exc:
            if deadline.left() > 0:
                raise
            raise type(exc)(f"{exc} (no SSH answer within the node's {timeout:g}s: smoke-test --timeout)") from None
        try:
            return smoke_node(BoundedNode(str(host), c, host.ssh.become, deadline), host,
                              replace(plan, replicas=inv.replicas_for(host)), credentials)
        finally:
            ssh.close(c)

    served = _served_warnings(inv, timeout)
    fleet = run_fleet(hosts, one, forks=forks, on_done=on_done)
    return SmokeResult(plan, fleet, require_all_replicas, _wait(served) if served is not None else ())


def _wait(served: Future[tuple[str, ...]]) -> tuple[str, ...]:
    try:
        return served.result(timeout=SERVED_WAIT)
    except TimeoutError:
        return (f"the certificate the registry serves was not read within {SERVED_WAIT:g}s after the nodes: "
                "its date was not checked",)


def _served_warnings(inv: Inventory, timeout: float) -> Future[tuple[str, ...]] | None:
    """Over TLS, the served certificates' and the CA's dates, read beside the nodes' run (expiry.py)."""
    if inv.registry.tls is None:
        return None
    import datetime as dt
    import threading

    from nodecfg.registry.expiry import served_warnings

    out: Future[tuple[str, ...]] = Future()

    def read() -> None:
        try:
            out.set_result(served_warnings(inv, dt.datetime.now(dt.UTC), min(timeout, 30.0)))
        except Exception as exc:  # noqa: BLE001 -- a warning's own failure is one line, never the run's
            out.set_result((f"the registry's certificate could not be checked for its date: {exc}",))

    threading.Thread(target=read, name="served-cert", daemon=True).start()
    return out
