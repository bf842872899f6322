"""One deadline per node (nodecfg/deadline.py), on the node itself: the smoke probe and its second
steps under dash against a fake root whose docker / ctr / curl hang the way a SIGSTOPped daemon
makes them hang (they never answer). Each call is killed at the budget by `timeout -k` on the
"node", named in the diagnosis, and nothing of it is left running."""

from __future__ import annotations

import base64
import time
from dataclasses import replace
from pathlib import Path

import pytest

from nodecfg import runtimes, scripts, smoke, tagged
from nodecfg.deadline import KILL_GRACE, MARGIN, BoundedNode, NodeDeadline
from nodecfg.errors import HostError
from nodecfg.images import parse_ref
from nodecfg.inventory import Host
from nodecfg.runtimes.base import SmokePlan, timeout_problem
from nodecfg.ssh import LocalConnection
from tests.unit.nodesh import FakeNode, fake_node

EP = "10.1.1.1:5000"
PLAN = SmokePlan(EP, parse_ref("docker.io/library/busybox:1.36"), None, ("docker.io",), False)
HOST = Host(name="node1", address="10.1.1.2")

# a CLI whose daemon is frozen: it records its pid (and its child's) and never answers; `stubborn`
# also ignores SIGTERM, so only the KILL of `timeout -k` ends it
HANGS = r"""#!/bin/sh
echo "{name} $*" >> "$STUB/calls"
case "$*" in
  *"{hang}"*)
    [ -n "{stubborn}" ] && trap '' TERM
    echo $$ >> "$STUB/pids"
    sleep 1000 &
    echo $! >> "$STUB/pids"
    wait;;
esac
"""


def _hanging(node: FakeNode, name: str, hang: str, *, stubborn: bool = False) -> None:
    path = node.stub / "bin" / name
    if path.exists():
        path.unlink()
    path.write_text(HANGS.replace("{name}", name).replace("{hang}", hang)
                    .replace("{stubborn}", "yes" if stubborn else ""))
    path.chmod(0o755)


def _alive(node: FakeNode) -> list[int]:
    """The hung processes still running (a zombie is dead: only its parent has not reaped it)."""
    pids = [int(p) for p in (node.stub / "pids").read_text().split()] if (node.stub / "pids").exists() else []
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _gone(node: FakeNode, within: float = 2.0) -> list[int]:
    end = time.monotonic() + within
    while (alive := _alive(node)) and time.monotonic() < end:
        time.sleep(0.1)
    return alive


def _units(node: FakeNode, *active: str) -> None:
    for unit in ("docker.service", "containerd.service", "crio.service"):
        state = "active" if unit.split(".")[0] in active else "inactive"
        node.unit(unit, ActiveState=state, UnitFileState="enabled" if state == "active" else "not-found")


def _docker_node(tmp_path: Path) -> FakeNode:
    node = fake_node(tmp_path)
    _units(node, "docker")
    (node.stub / "docker-info.json").write_text('{"RegistryConfig": {}}')
    return node


@pytest.mark.parametrize("stubborn", [False, True], ids=["dies-on-TERM", "ignores-TERM"])
def test_a_hung_docker_pull_is_killed_on_the_node_before_the_budget_ends(tmp_path: Path, stubborn: bool) -> None:
    """-T 4: the pull gets its TERM KILL_GRACE (2) s before the budget's end, its KILL at the end:
    whether the hung CLI dies on the TERM or not, nothing of it outlives the 4 s."""
    node = _docker_node(tmp_path)
    _hanging(node, "docker", "pull", stubborn=stubborn)
    probe = smoke.probe_script(PLAN, None)
    start = time.monotonic()
    out = node.run(replace(probe, args=("-T", "4", *probe.args))).stdout
    took = time.monotonic() - start
    assert 1 <= took < (4 + 0.5 if stubborn else 2 + 0.5), took
    assert not _gone(node, within=1)
    vals = smoke.parse_probe(out)
    assert vals["docker.pull"][0] == "124"
    seconds, command = vals["timeout.docker.pull"]
    assert seconds in ("1", "2") and tagged.b64text(command) == f"docker pull -q {EP}/library/busybox:1.36"
    assert out.endswith("end\tprobe\n")
    checks = {c.name: c for c in smoke.diagnose(out, PLAN, "node1")}
    assert checks["docker"].status == "FAIL"
    assert checks["docker"].detail == (f"`docker pull -q {EP}/library/busybox:1.36` did not answer within "
                                       f"{seconds} s: dockerd hung?")


def test_a_call_with_no_time_left_is_not_started(tmp_path: Path) -> None:
    node = fake_node(tmp_path)
    out = node.run(scripts.script("call.sh", [], ["-T", "2", "bounded", "x.y", "5", "sleep", "9"])).stdout
    assert out == tagged.encode("timeout.x.y", "0", tagged_b64("sleep 9")) + tagged.encode("end", "call")
    out = node.run(scripts.script("call.sh", [], ["-T", "4", "bounded", "x.y", "5", "sleep", "0"])).stdout
    assert out == tagged.encode("end", "call")  # 2 s (4 - the kill grace) to sleep 0 s: done
    vals = {"timeout.docker.info": ["0", tagged_b64("docker info")]}
    assert timeout_problem(vals, "dockerd", "docker.info") == (
        "`docker info` was not run: the node's smoke-test --timeout was spent before it")


def tagged_b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_kill_grace_is_the_same_on_both_sides() -> None:
    assert f"kill_grace={KILL_GRACE} " in scripts.read("lib.sh")


def test_a_frozen_dockerd_is_named_at_docker_info_and_nothing_is_pulled(tmp_path: Path) -> None:
    """docker info is the first thing asked of dockerd (5 s at most): frozen, the probe pulls
    nothing through docker and goes on with the other runtimes."""
    node = _docker_node(tmp_path)
    _units(node, "docker", "containerd")
    _hanging(node, "curl", "http://docker/info")
    _hanging(node, "docker", "info")
    (node.stub / "containerd-dump.toml").write_text("version = 2\n")
    start = time.monotonic()
    out = node.run(smoke.probe_script(PLAN, None)).stdout
    assert time.monotonic() - start < 5 + 1.5
    assert not _gone(node)
    assert not [c for c in node.calls() if c.startswith(("docker pull", "docker info"))]  # curl said it
    vals = smoke.parse_probe(out)
    assert tagged.b64text(vals["containerd.dump"][0]) == "version = 2\n"  # containerd was still asked
    checks = {c.name: c for c in smoke.diagnose(out, PLAN, "node1")}
    assert checks["docker"].status == "FAIL"
    assert checks["docker"].detail.endswith("did not answer within 5 s: dockerd hung?")
    assert checks["docker"].detail.startswith("`curl -sf --unix-socket /var/run/docker.sock http://docker/info`")
    assert checks["docker mirror"].status == "skip"
    assert checks["config_path"].status == "FAIL"  # the fake dump has no config_path: diagnosed, not hung


def _local(node: FakeNode, monkeypatch: pytest.MonkeyPatch, seconds: float) -> BoundedNode:
    """The fake node as what smoke-test runs its steps on: the scripts go through `ssh.run` on a
    LocalConnection (sh -c, here), with the fake node's PATH."""
    monkeypatch.setenv("PATH", str(node.stub / "bin"))
    monkeypatch.setenv("STUB", str(node.stub))
    return BoundedNode(str(HOST), LocalConnection(), False, NodeDeadline.start(seconds))


def test_smoke_node_with_a_frozen_docker_fails_within_its_deadline(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole chain: `timeout -k` around the script, -T, `bounded` around the call, the
    diagnosis naming what did not answer; the node's result comes within its budget."""
    node = _docker_node(tmp_path)
    _hanging(node, "docker", "pull", stubborn=True)
    bounded = _local(node, monkeypatch, 5)
    start = time.monotonic()
    result = smoke.smoke_node(bounded, HOST, PLAN, None)
    assert time.monotonic() - start < 5 + 0.5  # every call dead by the budget's end
    assert not _gone(node)
    assert "docker: `docker pull -q 10.1.1.1:5000/library/busybox:1.36` did not answer within" in result.error
    assert result.error.endswith("dockerd hung?")


def test_smoke_node_with_a_frozen_containerd_skips_the_cri_pull(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """containerd's second step asks ctr for its images first (10 s at most): frozen, nothing is
    pulled, and the CRI pull (which would hang the same way) is not tried."""
    node = fake_node(tmp_path)
    _units(node, "containerd")
    dump = f'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{tmp_path}"\n'
    (node.stub / "containerd-dump.toml").write_text(dump)
    (tmp_path / "docker.io").mkdir()
    (tmp_path / "docker.io" / "hosts.toml").write_text(f'server = "https://registry-1.docker.io"\n'
                                                      f'[host."http://{EP}"]\n')
    _hanging(node, "ctr", "images")
    bounded = _local(node, monkeypatch, 6)
    start = time.monotonic()
    result = smoke.smoke_node(bounded, HOST, PLAN, None)
    took = time.monotonic() - start
    assert took < 6 + 0.5, took
    assert not _gone(node)
    checks = {c.name: c for c in result.checks}
    assert checks["containerd"].detail.startswith("`ctr -n k8s.io images ls -q` did not answer within ")
    assert checks["containerd"].detail.endswith(" s: containerd hung?")
    assert checks["cri"].status == "skip" and "the ctr step ran out of time" in checks["cri"].detail


def test_a_step_cut_short_on_the_node_fails_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Something the scripts do not bound (here `awk`) hangs: the `timeout -k` around the whole
    script cuts it at the budget, and the node fails, naming the step."""
    node = _docker_node(tmp_path)
    _hanging(node, "awk", "")
    bounded = _local(node, monkeypatch, 2)
    start = time.monotonic()
    with pytest.raises(HostError, match=r"node1 \(10.1.1.2\): the probe did not finish: cut short on the node "
                                        r"when its smoke-test --timeout of 2s ran out"):
        smoke.smoke_node(bounded, HOST, PLAN, None)
    assert time.monotonic() - start < 2 + MARGIN
    assert not _gone(node)


def test_garbled_timeout_records_stay_one_line() -> None:
    vals = {"timeout.docker.pull": ["x", "%%%"], "docker.pull": ["124", ""], "unit.docker": ["active", "enabled"]}
    out = "\n".join("\t".join([k, *v]) for k, v in vals.items())
    checks = {c.name: c for c in smoke.diagnose(out, PLAN, "node1")}
    assert checks["docker"].detail == "`%%%` was not run: the node's smoke-test --timeout was spent before it"


def test_every_runtime_call_in_the_node_scripts_is_bounded() -> None:
    """No docker / ctr / crictl / podman / systemctl / dockerd / containerd call in the node scripts
    runs outside lib.sh's `bounded` (or curl, whose --max-time bounds it), but a binary asked for its
    own `--version`, which waits for no daemon (and the whole script runs under `timeout -k`)."""
    import re

    clis = r"(docker|dockerd|ctr|crictl|podman|systemctl|containerd|crio)"
    for name in ("lib.sh", "facts.sh", "apply.sh", "rollback.sh", "probe.sh", "call.sh",
                 *(f"{rt.name}.sh" for rt in runtimes.registered())):
        for n, line in enumerate(scripts.read(name).splitlines(), 1):
            code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
            for m in re.finditer(rf"(^|[;|&(!]|\$\(|\bthen|\bdo|\belse|\bif|\bwhile|\buntil)\s*{clis}\s", code):
                before = code[:m.start(2)]
                if code[m.end(2):].lstrip().startswith("--version"):
                    continue
                assert re.search(r"bounded [\w.]+ (\S+ )$", before), f"{name}:{n}: {line.strip()}"


def test_without_a_budget_a_call_has_its_own_cap_or_none(tmp_path: Path) -> None:
    """A node script run by hand (no -T): capped calls keep their cap, uncapped ones just run."""
    node = fake_node(tmp_path)
    out = node.run(scripts.script("call.sh", [], ["bounded", "x.y", "0", "sh", "-c", "echo ran"])).stdout
    assert out == "ran\n" + tagged.encode("end", "call")
    start = time.monotonic()
    out = node.run(scripts.script("call.sh", [], ["bounded", "x.y", "1", "sleep", "9"])).stdout
    assert time.monotonic() - start < 3
    assert out == tagged.encode("timeout.x.y", "1", tagged_b64("sleep 9")) + tagged.encode("end", "call")
