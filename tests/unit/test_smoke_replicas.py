"""Issue 22: smoke-test with replicas. Every replica is reached from every node; a replica down is
named once for the fleet and fails the run only with --require-all-replicas; a node passes when it
pulls by upstream name; pulls by registry path (registry.address) are warnings; the pulls say which
replica served them where the runtime tells."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nodecfg import report, smoke
from nodecfg.cli import main
from nodecfg.fleet import FleetResult, HostResult
from nodecfg.images import parse_ref
from nodecfg.inventory import Host
from nodecfg.runtimes.base import Check, SmokePlan
from nodecfg.runtimes.containerd import pulls_args
from nodecfg.runtimes.containers import pull_args

A, B, C = "10.0.0.11:5000", "10.0.0.12:5000", "10.0.0.13:5000"
BASE = SmokePlan(A, parse_ref("docker.io/library/busybox:1.36"), parse_ref("docker.io/library/busybox:1.36"),
                 ("docker.io",), False)
PLAN = replace(BASE, replicas=(B, C, A))  # node2's order


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


DUMP = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'
HEALTHY = {
    "unit.docker": "active\tenabled", "unit.containerd": "active\tenabled", "unit.crio": "inactive\tnot-found",
    "reach": "curl\t0\t200", "manifest": "200",
    f"reach@{B}": "curl\t0\t200", f"manifest@{B}": "200",
    f"reach@{C}": "curl\t0\t200", f"manifest@{C}": "200",
    "docker.info": "e30=", "docker.pull": "0\t", "docker.mirror": "0\t",
    "containerd.dump": b64(DUMP), "containerd.certs": "/etc/containerd/certs.d", "containerd.pull": "0\t",
    "containerd.pull.via": B, "cri": "ok\t", "podman": "yes", "podman.pull": "0\t", "podman.via": C,
    "containers.info": b64(json.dumps({"registries": {"docker.io": {
        "Prefix": "docker.io", "Mirrors": [{"Location": r} for r in (B, C, A)]}}})),
}


def probe(**changed: str) -> str:
    return "".join(f"{k}\t{v}\n" for k, v in {**HEALTHY, **changed}.items() if v != "DROP")


def by_name(checks: tuple[Check, ...]) -> dict[str, Check]:
    return {ch.name: ch for ch in checks}


def test_the_probe_reaches_every_other_replica_and_knows_the_nodes_first() -> None:
    args = smoke.probe_script(PLAN, None).args
    assert args[args.index("-f") + 1] == B
    reps = [args[i + 1:i + 6] for i, a in enumerate(args) if a == "-p"]
    assert reps == [(r, f"http://{r}/v2/", r.split(":")[0], "5000",
                     f"http://{r}/v2/library/busybox/manifests/1.36") for r in (B, C)]  # A is the registry's own
    assert "-f" not in smoke.probe_script(BASE, None).args and "-p" not in smoke.probe_script(BASE, None).args
    # the runtimes' pulls go through the node's first replica, and say which one served them
    assert pulls_args(PLAN, "/c")[:2] == ("-e", B) and pulls_args(PLAN, "/c")[-1] == "via"
    assert pulls_args(BASE, "/c")[:2] == ("-e", A) and pulls_args(BASE, "/c")[-1] != "via"
    assert pull_args(PLAN, False)[-1] == "via" and pull_args(BASE, False)[-1] == "no"


DIAG = [
    # (case, probe changes, expected replica statuses in the node's order, other checks expected)
    ("all up", {}, ["ok", "ok", "ok"], {"registry": "ok", "docker": "ok"}),
    ("a replica refused", {f"reach@{C}": "curl\t7\t000", f"manifest@{C}": "DROP"}, ["ok", "FAIL", "ok"],
     {"registry": "ok"}),
    ("a replica without the image", {f"manifest@{B}": "404"}, ["FAIL", "ok", "ok"], {}),
    ("the registry's own replica down: pulls by registry path warn",
     {"reach": "curl\t7\t000", "manifest": "DROP", "docker.pull": "1\t" + b64(
         f"Error response from daemon: Get http://{A}/v2/: dial tcp {A}: connect: connection refused")},
     ["ok", "ok", "FAIL"], {"registry": "WARN", "docker": "WARN"}),
    ("no http tool: not checked", {"reach": "none\t\t", f"reach@{B}": "none\t\t", f"reach@{C}": "none\t\t"},
     ["skip", "skip", "skip"], {"registry": "skip"}),
]


@pytest.mark.parametrize(("changes", "replicas", "expected"), [c[1:] for c in DIAG], ids=[c[0] for c in DIAG])
def test_diagnosis_with_replicas(changes: dict[str, str], replicas: list[str], expected: dict[str, str]) -> None:
    out = probe(**changes)
    checks = by_name(smoke.diagnose(out, PLAN, "node2 (10.0.0.22)"))
    reps = smoke.replica_checks(out, PLAN, "node2 (10.0.0.22)")
    assert [ch.name for ch in reps] == [f"replica {r}" for r in (B, C, A)]
    assert [ch.status for ch in reps] == replicas
    for name, status in expected.items():
        assert checks[name].status == status, checks[name]
    assert not [ch for ch in checks.values() if ch.status == "FAIL"]  # the node pulls by upstream name


def test_details_name_the_replica_that_served_and_registry_address() -> None:
    checks = by_name(smoke.diagnose(probe(), PLAN, "n"))
    assert checks["containerd"].detail == ("ctr pull docker.io/library/busybox:1.36 via /etc/containerd/certs.d "
                                           f"(served by {B})")
    assert checks["podman"].detail == f"podman pull docker.io/library/busybox:1.36 via the mirror {C}"
    quiet = by_name(smoke.diagnose(probe(**{"containerd.pull.via": "", "podman.via": ""}), PLAN, "n"))
    assert quiet["containerd"].detail.endswith("via /etc/containerd/certs.d")  # containerd 2: not told
    assert quiet["podman"].detail.endswith(f"via the replicas {B}, {C}, {A}")
    reps = smoke.replica_checks(probe(**{f"reach@{C}": "curl\t7\t000"}), PLAN, "node2 (10.0.0.22)")
    assert reps[1].detail == f"registry unreachable from node2 (10.0.0.22): http://{C}/v2/: connection refused"
    missing = smoke.replica_checks(probe(**{f"manifest@{B}": "404"}), PLAN, "n")[0]
    assert missing.detail == (f"{B} answers but does not have library/busybox:1.36 (manifest unknown): the "
                              "nodes' pulls fall over to the next replica; run registry-up")
    down = by_name(smoke.diagnose(probe(reach="curl\t7\t000"), PLAN, "n"))
    assert "pulls by registry path go to registry.address 10.0.0.11:5000 alone" in down["registry"].detail
    # without replicas nothing of this: the registry down fails the node, as it always did
    plain = by_name(smoke.diagnose(probe(reach="curl\t7\t000"), BASE, "n"))
    assert plain["registry"].status == "FAIL" and smoke.replica_checks(probe(), BASE, "n") == ()


def test_a_node_that_cannot_pull_by_upstream_name_fails() -> None:
    out = probe(**{"containerd.pull": "1\t" + b64("ctr: failed to resolve reference: connection refused")})
    assert by_name(smoke.diagnose(out, PLAN, "n"))["containerd"].status == "FAIL"


def _result(down_from: int, *, require: bool, failed: bool = False) -> smoke.SmokeResult:
    results = []
    for i in range(1, 5):
        reps = tuple(Check(f"replica {r}", "FAIL" if r == C and i <= down_from else "ok",
                           "registry unreachable from here: connection refused" if r == C else "")
                     for r in (A, B, C))
        err = "containerd: cannot pull" if failed and i == 1 else ""
        results.append(HostResult(Host(f"node{i}", f"10.0.0.2{i}"),
                                  smoke.NodeSmoke((Check("registry", "ok"),), err, reps), error=err or None))
    return smoke.SmokeResult(PLAN, FleetResult(tuple(results)), require)


def test_a_replica_down_is_named_once_and_fails_only_when_required(capsys: pytest.CaptureFixture[str]) -> None:
    res = _result(4, require=False)
    (down,) = res.replicas_down
    assert (down.line, down.nodes) == (f"replica {C} unreachable from 4 of 4 nodes", ("node1", "node2", "node3", "node4"))
    assert res.exit_code == 0 and res.ok
    assert (_result(4, require=True).exit_code, _result(0, require=True).exit_code) == (1, 0)
    assert _result(1, require=False, failed=True).exit_code == 1  # a node that cannot pull: as always
    report.smoke_recap(res, as_json=False)
    out = capsys.readouterr().out
    assert f"replica {C} unreachable from 4 of 4 nodes (node1: registry unreachable from here" in out
    assert "PASS: every node pulls from the registry (4 passed, 0 failed)" in out
    report.smoke_recap(_result(2, require=True), as_json=False)
    out = capsys.readouterr().out
    assert f"replica {C} unreachable from 2 of 4 nodes" in out
    assert "FAIL: every node pulls from the registry; 1 replica(s) down (--require-all-replicas)" in out
    report.smoke_recap(_result(2, require=True), as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert data["replicas_down"] == [{"endpoint": C, "nodes": ["node1", "node2"], "of": 4, "unreachable": True,
                                      "example": "node1: registry unreachable from here: connection refused",
                                      "line": f"replica {C} unreachable from 2 of 4 nodes"}]
    assert [r["name"] for r in data["hosts"][0]["result"]["replicas"]] == [f"replica {r}" for r in (A, B, C)]


def test_cli_require_all_replicas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = tmp_path / "inventory.yaml"
    inv.write_text("master:\n  address: 127.0.0.10\nnodes:\n  - address: 127.0.0.11\n")
    seen: dict[str, object] = {}

    def fake(inventory: object, hosts: object, **kw: object) -> object:
        seen.update(kw)
        return _result(0, require=bool(kw["require_all_replicas"]))

    monkeypatch.setattr(smoke, "smoke_test", fake)
    monkeypatch.setattr(report, "smoke_recap", lambda *a, **k: None)
    assert main(["smoke-test", "-i", str(inv)]) == 0 and seen["require_all_replicas"] is False
    assert main(["smoke-test", "-i", str(inv), "--require-all-replicas"]) == 0 and seen["require_all_replicas"] is True


class _V2(BaseHTTPRequestHandler):
    """A registry that has every image."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *_: object) -> None:
        return None


class _V2Empty(_V2):
    """A registry that answers /v2/ and has no image."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/" else 404)
        self.end_headers()

    do_HEAD = do_GET


def test_every_replica_reached_under_dash(tmp_path: Path) -> None:
    """probe.sh under dash with a real curl: the registry and one replica answer on loopback, one
    replica's port is closed; each gets its own `reach@<endpoint>` and manifest, within the budget."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler) for handler in (_V2, _V2Empty)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    up, other = (f"127.0.0.1:{s.server_address[1]}" for s in servers)
    with socket.socket() as closed_sock:
        closed_sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{closed_sock.getsockname()[1]}"  # bound, not listening: refused
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in ("curl", "timeout", "cat", "mktemp", "rm", "base64", "awk", "date", "sleep"):
            found = shutil.which(tool)
            assert found, tool
            (bin_dir / tool).symlink_to(found)
        plan = SmokePlan(up, parse_ref("docker.io/library/busybox:1.36"), None, (), False,
                         replicas=(other, closed, up))
        script = smoke.probe_script(plan, None)
        try:
            out = subprocess.run(["/bin/dash", "-c", script.program, "nodecfg", "-T", "30", *script.args],
                                 capture_output=True, text=True, check=False, env={"PATH": str(bin_dir)},
                                 timeout=30).stdout
        finally:
            for s in servers:
                s.shutdown()
    vals = smoke.parse_probe(out)
    assert vals["reach"] == ["curl", "0", "200"] and vals["manifest"] == ["200"]
    assert vals[f"reach@{other}"] == ["curl", "0", "200"]
    assert vals[f"manifest@{other}"] == ["404"]
    assert vals[f"reach@{closed}"] == ["curl", "7", "000"] and f"manifest@{closed}" not in vals
    assert f"reach@{up}" not in vals  # the registry's own endpoint is not asked twice
    statuses = [ch.status for ch in smoke.replica_checks(out, plan, "n")]
    assert statuses == ["FAIL", "FAIL", "ok"]  # `other` lacks the image, `closed` is refused
