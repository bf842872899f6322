"""Issue 21: one deadline per node. A node whose dockerd or containerd is frozen (SIGSTOP: it accepts
connections and never answers, as a hung daemon does) fails smoke-test within `--timeout`, naming
what did not answer; the other nodes pass; and nothing of nodecfg's is left running on the frozen
node, before or after the daemon resumes.

node1  dockerd frozen
node2  a containerd node (docker masked), containerd frozen
node3  healthy
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Lab, by_name, configured_lab, leftovers, nodecfg, run_json, smoke_checks

TIMEOUT = 20
SLACK = 5  # process start, the lab's 2 shared cores; the node's own margin is nodecfg/deadline.py's

@pytest.fixture(scope="module")
def lab() -> Lab:
    return configured_lab(3)


@pytest.fixture
def frozen(lab: Lab) -> Iterator[dict[str, str]]:
    """node1's dockerd and node2's containerd stopped with SIGSTOP (node2's docker masked first:
    a containerd node); resumed afterwards. Yields what the test resumes itself, by node."""
    lab.ssh("node2", "systemctl stop docker.socket docker && systemctl mask docker.socket docker")
    lab.ssh("node1", "kill -STOP $(pidof dockerd)")
    lab.ssh("node2", "kill -STOP $(pidof containerd)")
    daemons = {"node1": "dockerd", "node2": "containerd"}
    try:
        yield daemons
    finally:
        for node, daemon in daemons.items():
            lab.ssh(node, f"kill -CONT $(pidof {daemon})", check=False)
        lab.ssh("node2", "systemctl unmask docker.socket docker && systemctl start docker", check=False)


def test_frozen_daemons_fail_their_nodes_within_the_timeout(lab: Lab, frozen: dict[str, str]) -> None:
    start = time.monotonic()
    rc, data, err = run_json("smoke-test", "-i", str(lab.inventory), "--timeout", str(TIMEOUT))
    took = time.monotonic() - start
    print(f"smoke-test --timeout {TIMEOUT} with a frozen dockerd and a frozen containerd: {took:.1f}s")
    assert rc == 1, err
    assert took < TIMEOUT + SLACK, took
    assert "Traceback" not in err
    hosts = by_name(data)
    assert hosts["node3"]["ok"] is True, hosts["node3"]

    # node1: docker named, dockerd suspected; its containerd still checked, and it passes
    n1 = smoke_checks(hosts["node1"])
    assert n1["docker"]["status"] == "FAIL"
    assert re.fullmatch(r"`curl -sf --unix-socket /var/run/docker\.sock http://docker/info` did not answer "
                        r"within [1-5] s: dockerd hung\?", n1["docker"]["detail"]), n1["docker"]
    for check in ("containerd", "config_path", "cri"):
        assert n1[check]["status"] == "ok", (check, n1[check])

    # node2: containerd named; the CRI pull, which would hang the same way, not tried
    n2 = smoke_checks(hosts["node2"])
    assert n2["containerd"]["status"] == "FAIL"
    assert re.fullmatch(r"`ctr -n k8s\.io images ls -q` did not answer within \d+ s: containerd hung\?",
                        n2["containerd"]["detail"]), n2["containerd"]
    assert n2["cri"]["status"] == "skip" and "the ctr step ran out of time" in n2["cri"]["detail"]
    assert n2["docker"]["status"] == "skip"  # masked

    # nothing of nodecfg's on either node while the daemons are still frozen, nor once they resume
    for node, daemon in frozen.items():
        assert leftovers(lab, node) == [], node
        lab.ssh(node, f"kill -CONT $(pidof {daemon})")
        assert leftovers(lab, node) == [], node


def test_the_table_names_host_and_what_did_not_answer(lab: Lab, frozen: dict[str, str]) -> None:
    del frozen
    start = time.monotonic()
    proc = nodecfg("smoke-test", "-i", str(lab.inventory), "--timeout", str(TIMEOUT), "--limit", "node1")
    took = time.monotonic() - start
    print(f"smoke-test --timeout {TIMEOUT} --limit node1 (dockerd frozen): {took:.1f}s")
    assert proc.returncode == 1 and took < TIMEOUT + SLACK
    assert re.search(r"node1 \([\d.]+\): docker: `curl -sf --unix-socket /var/run/docker\.sock "
                     r"http://docker/info` did not answer within [1-5] s: dockerd hung\?", proc.stdout), proc.stdout
    assert "FAIL: 1 of 1 node(s) cannot pull" in proc.stdout


def test_a_budget_smaller_than_the_work_fails_the_node_within_it(lab: Lab, frozen: dict[str, str]) -> None:
    """--timeout 4 on the frozen-dockerd node: the budget ends before docker info's own 5 s; the
    node still comes back within it (+ the margin), and the calls it had no time left for say so."""
    del frozen
    start = time.monotonic()
    rc, data, _ = run_json("smoke-test", "-i", str(lab.inventory), "--timeout", "4", "--limit", "node1")
    took = time.monotonic() - start
    print(f"smoke-test --timeout 4 --limit node1 (dockerd frozen): {took:.1f}s")
    assert rc == 1 and took < 4 + SLACK, took
    n1 = by_name(data)["node1"]
    assert n1["ok"] is False
    assert "dockerd hung?" in n1["error"] or "smoke-test --timeout" in n1["error"], n1
    assert leftovers(lab, "node1") == []
