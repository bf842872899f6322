"""Issue 4: configure-nodes on a lab fleet seeded with real-world states.

node1  a daemon.json with other keys and another insecure registry
node2  the full `containerd config default` output, edited and commented
node3  docker masked
node4  reached as a sudo user (become: true)
node5  down
node6  a kubespray-style drop-in passing --insecure-registry to dockerd (must be refused)
node7  containerd that won't start with config_path (must be rolled back)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lab, by_name, nodecfg, run_json, start_lab

EXISTING_DAEMON_JSON = {
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "insecure-registries": ["harbor.corp:8080"],
    "live-restore": True,
}
WATCHED = ("/etc/docker/daemon.json /etc/containerd/config.toml "
           "/etc/containerd/certs.d/*/hosts.toml /root/.docker/config.json")
REACHABLE = ("node1", "node2", "node3", "node4", "node6", "node7")


def seed(lab: Lab) -> None:
    lab.ssh("node1", f"echo '{json.dumps(EXISTING_DAEMON_JSON)}' > /etc/docker/daemon.json && "
                     "systemctl restart docker")
    lab.ssh("node2", "containerd config default > /etc/containerd/config.toml && "
                     "sed -i 's/SystemdCgroup = false/SystemdCgroup = true  # kubelet: systemd driver/; "
                     "s|sandbox_image = .*|sandbox_image = \"registry.k8s.io/pause:3.9\"|; "
                     "1i # site config, owned by the platform team' /etc/containerd/config.toml && "
                     "systemctl restart containerd")
    lab.ssh("node3", "systemctl stop docker.service docker.socket && systemctl mask docker.service")
    lab.ssh("node4", "useradd -m -s /bin/bash deploy && "
                     "echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy && "
                     "install -d -o deploy -m 700 /home/deploy/.ssh && "
                     "install -o deploy -m 600 /root/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys")
    lab.ssh("node6", "mkdir -p /etc/systemd/system/docker.service.d && printf '%s\\n' '[Service]' "
                     "'ExecStart=' 'ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock --insecure-registry=harbor.corp:8080' "
                     "> /etc/systemd/system/docker.service.d/kubespray.conf && "
                     "systemctl daemon-reload && systemctl restart docker")
    lab.ssh("node7", "mkdir -p /etc/systemd/system/containerd.service.d && printf '%s\\n' '[Service]' "
                     "\"ExecStartPre=/bin/sh -c '! grep -q ^.*config_path.=..[/] /etc/containerd/config.toml'\" "
                     "> /etc/systemd/system/containerd.service.d/refuse.conf && systemctl daemon-reload")
    lab.stop("node5")


def snapshot(lab: Lab, name: str) -> str:
    return lab.ssh(name, f"sha256sum {WATCHED} 2>/dev/null; ls -la /etc/docker /etc/containerd "
                         "/etc/containerd/certs.d 2>/dev/null; true").stdout


def start_times(lab: Lab, name: str) -> str:
    return lab.ssh(name, "systemctl show -p ActiveEnterTimestampMonotonic --value docker containerd").stdout


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lab, str]:
    lab = start_lab(7)
    assert nodecfg("registry-up", "-i", str(lab.inventory)).returncode == 0
    seed(lab)
    data = lab.inventory_data()
    for node in data["nodes"]:
        if node["name"] == "node4":
            node.update({"user": "deploy", "become": True})
    inv = lab.write_inventory(tmp_path_factory.mktemp("inv") / "inventory.yaml", data)
    return lab, str(inv)


def outcome(data: dict[str, Any], name: str) -> dict[str, Any]:
    return by_name(data)[name]


def test_check_changes_nothing(fleet: tuple[Lab, str]) -> None:
    lab, inv = fleet
    before = {n: snapshot(lab, n) for n in REACHABLE}
    times = {n: start_times(lab, n) for n in REACHABLE}
    rc, data, _ = run_json("configure-nodes", "-i", inv, "--check")
    assert rc == 1  # node5 is down
    assert outcome(data, "node5")["unreachable"] is True
    assert outcome(data, "node1")["result"]["docker"]["status"] == "would change"
    assert outcome(data, "node3")["result"]["docker"]["status"] == "masked"
    assert {n: snapshot(lab, n) for n in REACHABLE} == before
    assert {n: start_times(lab, n) for n in REACHABLE} == times
    diff = nodecfg("configure-nodes", "-i", inv, "--check", "--diff", "--limit", "node1")
    registry = f"{lab.hosts['master']}:5000"
    assert registry in diff.stdout
    assert snapshot(lab, "node1") == before["node1"]


def test_first_run(fleet: tuple[Lab, str]) -> None:
    lab, inv = fleet
    node6_before, node7_before = snapshot(lab, "node6"), snapshot(lab, "node7")
    rc, data, err = run_json("configure-nodes", "-i", inv)
    assert rc == 1, err
    for name in ("node1", "node2", "node3", "node4"):
        assert outcome(data, name)["ok"], outcome(data, name)
    # the down node fails after the connect timeout (the lab inventory: 5 s), named; the others
    # were not held up
    assert outcome(data, "node5")["unreachable"] and "unreachable" in outcome(data, "node5")["error"]
    # the kubespray drop-in: refused with the reason, daemon.json untouched
    n6 = outcome(data, "node6")
    assert not n6["ok"] and "--insecure-registry harbor.corp:8080" in n6["error"]
    assert "/etc/docker/daemon.json" not in n6["result"]["files_changed"]
    assert "/etc/docker/daemon.json" not in snapshot(lab, "node6") or \
        snapshot(lab, "node6").count("daemon.json") == node6_before.count("daemon.json")
    # node7: containerd did not come back with config_path: restored and running again
    n7 = outcome(data, "node7")
    assert not n7["ok"] and n7["result"]["containerd"]["status"] == "rolled back"
    assert lab.ssh("node7", "systemctl is-active containerd").stdout.strip() == "active"
    cfg7 = lab.ssh("node7", "sha256sum /etc/containerd/config.toml").stdout.split()[0]
    assert cfg7 in node7_before
    # merged, never clobbered
    daemon = json.loads(lab.ssh("node1", "cat /etc/docker/daemon.json").stdout)
    for key, value in EXISTING_DAEMON_JSON.items():
        if key != "insecure-registries":
            assert daemon[key] == value
    registry = f"{lab.hosts['master']}:5000"
    assert daemon["insecure-registries"] == ["harbor.corp:8080", registry]
    assert daemon["registry-mirrors"] == [f"http://{registry}"]
    assert lab.ssh("node1", "ls /etc/docker/ | grep -c 'daemon.json.nodecfg-.*bak'").stdout.strip() == "1"
    cfg2 = lab.ssh("node2", "cat /etc/containerd/config.toml").stdout
    assert cfg2.startswith("# site config, owned by the platform team")
    assert "SystemdCgroup = true  # kubelet: systemd driver" in cfg2
    assert 'sandbox_image = "registry.k8s.io/pause:3.9"' in cfg2
    assert 'config_path = "/etc/containerd/certs.d"' in cfg2
    assert cfg2.count('[plugins."io.containerd.grpc.v1.cri".registry]') == 1
    # docker stays masked on node3
    assert lab.ssh("node3", "systemctl is-enabled docker", check=False).stdout.strip() == "masked"
    assert outcome(data, "node3")["result"]["docker"]["status"] == "masked"
    # node4 was configured through sudo: root-owned files
    assert lab.ssh("node4", "stat -c %U /etc/docker/daemon.json").stdout.strip() == "root"


@pytest.mark.parametrize("name", ["node1", "node2", "node3", "node4"])
def test_every_configured_node_pulls(fleet: tuple[Lab, str], name: str) -> None:
    lab, _ = fleet
    pause = lab.ssh(name, "ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d "
                          "registry.k8s.io/pause:3.9", check=False)
    assert pause.returncode == 0, pause.stdout + pause.stderr
    dump = lab.ssh(name, "containerd config dump | grep config_path").stdout
    assert '"/etc/containerd/certs.d"' in dump
    if name != "node3":  # docker is masked there
        pull = lab.ssh(name, "docker pull busybox:1.36", check=False)
        assert pull.returncode == 0, pull.stdout + pull.stderr


def test_second_run_changes_and_restarts_nothing(fleet: tuple[Lab, str]) -> None:
    lab, inv = fleet
    ok_nodes = ("node1", "node2", "node3", "node4")
    before = {n: snapshot(lab, n) for n in ok_nodes}
    times = {n: start_times(lab, n) for n in ok_nodes}
    rc, data, _ = run_json("configure-nodes", "-i", inv,
                           "--limit", ",".join(ok_nodes))
    assert rc == 0
    for name in ok_nodes:
        result = outcome(data, name)["result"]
        assert result["changed"] is False and result["files_changed"] == []
        assert result["docker"]["action"] == result["containerd"]["action"] == "none"
    assert {n: snapshot(lab, n) for n in ok_nodes} == before
    assert {n: start_times(lab, n) for n in ok_nodes} == times


def test_recap_table(fleet: tuple[Lab, str]) -> None:
    _, inv = fleet
    proc = nodecfg("configure-nodes", "-i", inv)
    assert proc.returncode == 1
    assert "RECAP" in proc.stdout
    assert "UNREACHABLE" in proc.stdout and "node5" in proc.stdout
    assert "7 node(s): 4 ok (0 changed), 3 failed" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_inventory_example_path(tmp_path: Path) -> None:
    # a key file that does not exist: exit 2 before any host is contacted
    data = "ssh: {key: /nonexistent/key}\nmaster: {address: 127.0.0.2}\nnodes: [127.0.0.3]\n"
    inv = tmp_path / "inv.yaml"
    inv.write_text(data)
    proc = nodecfg("configure-nodes", "-i", str(inv))
    assert proc.returncode == 2 and "SSH key file not found: /nonexistent/key" in proc.stderr
