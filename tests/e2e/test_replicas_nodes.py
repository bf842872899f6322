"""Issue 22 on the nodes: configure-nodes points every runtime at every replica, in each node's own
order; with a node's first replica's registry stopped, and then with a whole replica host stopped,
the node still pulls by upstream name with containerd (1.6, 1.7, 2.1) and podman, and smoke-test
passes and names the replica that is down; re-runs change nothing; removing a replica from the
inventory removes it from every node.

The registry on the master, replica1 and replica2 (own disks, brought up by registry-up), and
node1 bookworm     docker 20.10, containerd 1.6         first replica: the master
node2 trixie       docker 26, containerd 1.7             first replica: replica1
node3 containerd2  docker 28, containerd 2.1, podman 5.4 first replica: replica2
node4 containerd2  the same                              first replica: the master again
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lab, by_name, nodecfg, run_json, smoke_checks, start_lab

FLAVORS = ("bookworm", "trixie", "containerd2", "containerd2")
NODES = ("node1", "node2", "node3", "node4")
REPLICAS = ("master", "replica1", "replica2")  # the registry's hosts, in the inventory's order
HOSTS_TOML = "/etc/containerd/certs.d/docker.io/hosts.toml"
DROP_IN = "/etc/containers/registries.conf.d/99-nodecfg.conf"


@dataclass
class Fleet:
    lab: Lab
    inventory: str

    def endpoint(self, host: str) -> str:
        return f"{self.lab.hosts[host]}:5000"

    def order(self, node: str, replicas: tuple[str, ...] = REPLICAS) -> list[str]:
        """The replicas' endpoints in `node`'s order: node i starts at replica i mod N."""
        reps = [self.endpoint(h) for h in replicas]
        i = NODES.index(node) % len(reps)
        return reps[i:] + reps[:i]


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    lab = start_lab(len(NODES), flavors=FLAVORS, replicas=2)
    assert [r["name"] for r in lab.inventory_data()["registry"]["replicas"]] == list(REPLICAS[1:])
    proc = nodecfg("registry-up", "-i", str(lab.inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Fleet(lab, str(lab.inventory))


def _wait_registry(lab: Lab, host: str) -> None:
    lab.ssh(host, "timeout 20 sh -c 'until curl -sf localhost:5000/v2/ >/dev/null; do sleep 0.2; done'")


def _hosts(lab: Lab, node: str, path: str = HOSTS_TOML) -> list[str]:
    return list(tomllib.loads(lab.ssh(node, f"cat {path}").stdout)["host"])


def _started(lab: Lab, node: str) -> str:
    return lab.ssh(node, "systemctl show -p ActiveEnterTimestampMonotonic --value docker containerd").stdout


def _smoke(fleet: Fleet, *args: str) -> tuple[int, dict[str, Any]]:
    rc, data, err = run_json("smoke-test", "-i", fleet.inventory, *args)
    assert data.get("hosts"), err
    return rc, data


def test_every_runtime_names_every_replica_in_its_nodes_order(fleet: Fleet) -> None:
    lab = fleet.lab
    rc, data, err = run_json("configure-nodes", "-i", fleet.inventory)
    assert rc == 0, json.dumps(data, indent=1) + err
    orders = {}
    for node in NODES:
        want = fleet.order(node)
        orders[node] = _hosts(lab, node)
        assert orders[node] == [f"http://{r}" for r in want], node
        own = _hosts(lab, node, f"/etc/containerd/certs.d/{fleet.endpoint('master')}/hosts.toml")  # by registry path
        assert own == orders[node]
        dial = 'dial_timeout = "2s"' in lab.ssh(node, f"cat {HOSTS_TOML}").stdout
        assert dial is (node in ("node3", "node4")), node  # containerd 2.1 only
        daemon = json.loads(lab.ssh(node, "cat /etc/docker/daemon.json").stdout)
        assert daemon["registry-mirrors"] == [f"http://{r}" for r in want]
        assert set(daemon["insecure-registries"]) == {fleet.endpoint(h) for h in REPLICAS}
        assert lab.ssh(node, "stat -c %a /var/lib/nodecfg/docker.json").stdout.strip() == "600"
    assert len({tuple(o) for o in orders.values()}) == 3  # not every node in the same order
    drop_in = tomllib.loads(lab.ssh("node3", f"cat {DROP_IN}").stdout)
    docker_io = next(r for r in drop_in["registry"] if r.get("prefix") == "docker.io")
    assert [m["location"] for m in docker_io["mirror"]] == fleet.order("node3")
    # podman resolves them so
    info = json.loads(lab.ssh("node3", "podman info --format json").stdout)
    assert [m["Location"] for m in info["registries"]["docker.io"]["Mirrors"]] == fleet.order("node3")


def test_a_rerun_changes_nothing_and_restarts_nothing(fleet: Fleet) -> None:
    before = {n: _started(fleet.lab, n) for n in NODES}
    rc, data, err = run_json("configure-nodes", "-i", fleet.inventory)
    assert rc == 0, err
    assert {h["name"]: h["result"]["files_changed"] for h in data["hosts"]} == {n: [] for n in NODES}
    assert {n: _started(fleet.lab, n) for n in NODES} == before


def test_smoke_passes_and_says_which_replica_served(fleet: Fleet) -> None:
    rc, data = _smoke(fleet)
    assert rc == 0 and data["ok"] and "replicas_down" not in data, data
    hosts = by_name(data)
    # containerd 1.x's ctr and podman say which replica served the pull: the node's first
    assert smoke_checks(hosts["node1"])["containerd"]["detail"].endswith(f"(served by {fleet.endpoint('master')})")
    assert smoke_checks(hosts["node2"])["containerd"]["detail"].endswith(f"(served by {fleet.endpoint('replica1')})")
    assert smoke_checks(hosts["node3"])["podman"]["detail"].endswith(f"via the mirror {fleet.endpoint('replica2')}")
    for host in hosts.values():
        assert [r["status"] for r in host["result"]["replicas"]] == ["ok"] * 3


@pytest.mark.parametrize(("replica", "nodes"), [("replica2", ("node3",)), ("replica1", ("node2",)),
                                               ("master", ("node1", "node4"))])
def test_a_nodes_first_replica_stopped(fleet: Fleet, replica: str, nodes: tuple[str, ...]) -> None:
    """The registry of `nodes`' first replica stopped: they still pull by upstream name (containerd
    and the kubelet's CRI path, podman) from the next replica in their order; smoke-test passes,
    naming the replica that is down; --require-all-replicas fails it."""
    lab = fleet.lab
    endpoint = fleet.endpoint(replica)
    lab.ssh(replica, "docker stop registry >/dev/null")
    try:
        rc, data = _smoke(fleet)
        assert rc == 0 and data["ok"], json.dumps(data, indent=1)
        assert [d["line"] for d in data["replicas_down"]] == [f"replica {endpoint} unreachable from 4 of 4 nodes"]
        hosts = by_name(data)
        for node in nodes:
            assert fleet.order(node)[0] == endpoint
            checks = smoke_checks(hosts[node])
            assert {checks[c]["status"] for c in ("containerd", "cri", "docker mirror")} == {"ok"}, checks
            nxt = fleet.order(node)[1]
            if node in ("node1", "node2"):  # containerd 1.x's ctr tells
                assert checks["containerd"]["detail"].endswith(f"(served by {nxt})")
            else:
                assert checks["podman"] == {"name": "podman", "status": "ok",
                                            "detail": f"podman pull docker.io/library/busybox:1.36 via the mirror {nxt}"}
        if replica == "master":  # registry.address: pulls by registry path have no failover in docker
            for host_data in hosts.values():
                checks = smoke_checks(host_data)
                assert (checks["registry"]["status"], checks["docker"]["status"]) == ("WARN", "WARN")
                assert "registry.address" in checks["docker"]["detail"]
        rc, _, _ = run_json("smoke-test", "-i", fleet.inventory, "--require-all-replicas")
        assert rc == 1
    finally:
        lab.ssh(replica, "docker start registry >/dev/null")
        _wait_registry(lab, replica)


def test_a_whole_replica_host_stopped(fleet: Fleet) -> None:
    """replica2, node3's first replica, stopped as a host: node3 pulls by upstream name with
    containerd 2.1 and podman from the next replica, through the host's silence."""
    fleet.lab.stop("replica2")
    rc, data = _smoke(fleet)
    assert rc == 0 and data["ok"], json.dumps(data, indent=1)
    assert [d["line"] for d in data["replicas_down"]] == [
        f"replica {fleet.endpoint('replica2')} unreachable from 4 of 4 nodes"]
    checks = smoke_checks(by_name(data)["node3"])
    assert {checks[c]["status"] for c in ("containerd", "cri", "podman", "docker mirror")} == {"ok"}, checks
    assert checks["podman"]["detail"].endswith(f"via the mirror {fleet.endpoint('master')}")


def test_removing_a_replica_removes_it_from_every_node(fleet: Fleet, tmp_path: Path) -> None:
    """replica2 (its host still stopped) leaves the inventory: on the next run every node's
    hosts.toml, daemon.json, drop-in and record lose it; a hand-made entry stays; a re-run is quiet."""
    lab = fleet.lab
    hand = "harbor.corp.example:8080"
    lab.ssh("node1", "python3 -c \"import json; p='/etc/docker/daemon.json'; d=json.load(open(p)); "
                     f"d['insecure-registries'].append('{hand}'); json.dump(d, open(p, 'w'), indent=2)\"")
    data = lab.inventory_data()
    data["registry"]["replicas"] = [r for r in data["registry"]["replicas"] if r["name"] == "replica1"]
    inv = str(lab.write_inventory(tmp_path / "fewer.yaml", data))
    rc, out, err = run_json("configure-nodes", "-i", inv)
    assert rc == 0, json.dumps(out, indent=1) + err
    gone = lab.hosts["replica2"]
    for node in NODES:
        files = {p: lab.ssh(node, f"cat {p} 2>/dev/null", check=False).stdout
                 for p in (HOSTS_TOML, "/etc/docker/daemon.json", "/var/lib/nodecfg/docker.json", DROP_IN)}
        assert not [p for p, text in files.items() if gone in text], (node, files)
        assert _hosts(lab, node) == [f"http://{r}" for r in fleet.order(node, ("master", "replica1"))]
    assert hand in lab.ssh("node1", "cat /etc/docker/daemon.json").stdout
    rc, again, err = run_json("configure-nodes", "-i", inv)
    assert rc == 0 and {h["name"]: h["result"]["files_changed"] for h in again["hosts"]} == {n: [] for n in NODES}
    rc, smoke, _ = run_json("smoke-test", "-i", inv)
    assert rc == 0 and "replicas_down" not in smoke, json.dumps(smoke, indent=1)
