"""Issue 12 (hardening): configure-nodes on lab nodes seeded with what bit real sites.

node1  /etc/docker/daemon.json is a symlink into a managed dir, its target 0600
node2  containerd whose (re)start never returns: a drop-in `ExecStartPre=/bin/sleep infinity`
       added after seeding (daemon-reload, no restart)
node3  reached as a login user without become; config.toml is 0600
node4  credentials already in its files: a `registry.configs."...".auth` password in
       config.toml, an Authorization header in a foreign hosts.toml
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab, by_name, nodecfg, run_json, start_lab

PASSWORD = "Sup3rS3cret-pw"
HEADER = "bWlycm9yOnNlY3JldC1oZWFkZXI="  # base64 of mirror:secret-header
NODE4_CONFIG = f"""\
version = 2

[plugins."io.containerd.grpc.v1.cri".registry.configs."harbor.corp:8443".auth]
  username = "robot"
  password = "{PASSWORD}"
"""
NODE4_HUB = f"""\
server = "https://registry-1.docker.io"

[host."https://mirror.corp"]
  capabilities = ["pull", "resolve"]
  [host."https://mirror.corp".header]
    Authorization = "Basic {HEADER}"
"""
HANG = "/etc/systemd/system/containerd.service.d/hang.conf"


def seed(lab: Lab) -> None:
    lab.ssh("node1", "mkdir -p /srv/managed && printf '%s\\n' '{\"log-level\": \"warn\"}' "
                     "> /srv/managed/daemon.json && chmod 600 /srv/managed/daemon.json && "
                     "ln -sf /srv/managed/daemon.json /etc/docker/daemon.json && systemctl restart docker")
    lab.ssh("node3", "useradd -m -s /bin/bash deploy && install -d -o deploy -m 700 /home/deploy/.ssh && "
                     "install -o deploy -m 600 /root/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys && "
                     "chmod 600 /etc/containerd/config.toml")
    lab.ssh("node4", f"cat > /etc/containerd/config.toml <<'EOF'\n{NODE4_CONFIG}EOF\n"
                     f"mkdir -p /etc/containerd/certs.d/docker.io && "
                     f"cat > /etc/containerd/certs.d/docker.io/hosts.toml <<'EOF'\n{NODE4_HUB}EOF")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lab, str]:
    lab = start_lab(4)
    seed(lab)
    data = lab.inventory_data()
    for node in data["nodes"]:
        if node["name"] == "node3":
            node.update({"user": "deploy", "become": False})
    inv = lab.write_inventory(tmp_path_factory.mktemp("inv") / "inventory.yaml", data)
    return lab, str(inv)


def test_symlinked_0600_daemon_json_keeps_link_target_and_mode(fleet: tuple[Lab, str]) -> None:
    lab, inv = fleet
    rc, data, err = run_json("configure-nodes", "-i", inv, "--limit", "node1")
    assert rc == 0, err
    assert by_name(data)["node1"]["result"]["docker"]["status"] == "changed"
    link = lab.ssh("node1", "readlink /etc/docker/daemon.json; stat -c '%a %U:%G' /srv/managed/daemon.json")
    target, mode = link.stdout.splitlines()
    assert target == "/srv/managed/daemon.json"  # still a link, to the same file
    assert mode == "600 root:root"
    daemon = json.loads(lab.ssh("node1", "cat /srv/managed/daemon.json").stdout)
    assert daemon["log-level"] == "warn" and daemon["insecure-registries"]
    backups = lab.ssh("node1", "ls /srv/managed/").stdout.split()
    assert len([b for b in backups if b.startswith("daemon.json.nodecfg-")]) == 1
    assert lab.ssh("node1", "docker info --format '{{json .RegistryConfig.IndexConfigs}}'").stdout.count(
        ":5000") >= 1
    # a re-run sees the link's target as configured: nothing to do
    rc, data, _ = run_json("configure-nodes", "-i", inv, "--limit", "node1")
    assert rc == 0 and by_name(data)["node1"]["result"]["changed"] is False


def test_diff_and_json_never_print_credentials_already_on_the_node(fleet: tuple[Lab, str]) -> None:
    _, inv = fleet
    proc = nodecfg("configure-nodes", "-i", inv, "--limit", "node4", "--check", "--diff")
    assert proc.returncode == 0, proc.stderr
    assert "config_path" in proc.stdout and "harbor.corp:8443" in proc.stdout  # the diff is there
    assert "https://mirror.corp" in proc.stdout
    rc, data, err = run_json("configure-nodes", "-i", inv, "--limit", "node4", "--check", "--diff")
    assert rc == 0
    diffs = "".join(by_name(data)["node4"]["result"]["diffs"])
    assert "config_path" in diffs and "***" in diffs
    for text in (proc.stdout + proc.stderr, json.dumps(data) + err):
        assert PASSWORD not in text
        assert HEADER not in text


def test_hung_restart_fails_the_node_in_bounded_time_and_rolls_back(fleet: tuple[Lab, str]) -> None:
    lab, inv = fleet
    lab.ssh("node2", f"mkdir -p {Path(HANG).parent} && printf '[Service]\\nExecStartPre=/bin/sleep infinity\\n' "
                     f"> {HANG} && systemctl daemon-reload")
    before = lab.ssh("node2", "sha256sum /etc/containerd/config.toml").stdout.split()[0]
    start = time.monotonic()
    rc, data, err = run_json("configure-nodes", "-i", inv, "--limit", "node1,node2", "--timeout", "20")
    wall = time.monotonic() - start
    try:
        assert rc == 1, err
        assert wall < 90, f"configure-nodes took {wall:.0f}s"
        n2 = by_name(data)["node2"]
        assert not n2["ok"] and n2["seconds"] < 60, n2
        assert "containerd did not come back within 20s" in n2["error"]
        assert n2["result"]["containerd"]["status"] == "rolled back"
        assert "node2" in err  # named in the live progress too
        assert by_name(data)["node1"]["ok"]  # the other node was not held up
        after = lab.ssh("node2", "sha256sum /etc/containerd/config.toml; ls -a /etc/containerd").stdout
        assert after.split()[0] == before  # the previous config is back, byte for byte
        assert ".nodecfg." not in after and ".bak" not in after
        # the hung start was cancelled, then containerd started again with its old config; that
        # start hangs too (the drop-in), and is left to systemd
        state = lab.ssh("node2", "systemctl show -p ActiveState -p SubState containerd").stdout
        assert "SubState=start-pre" in state
    finally:
        lab.ssh("node2", f"rm -f {HANG} && systemctl daemon-reload && systemctl stop containerd; "
                         "systemctl reset-failed containerd; systemctl start containerd", check=False)
    print(f"hung node failed after {n2['seconds']:.1f}s; the run took {wall:.1f}s")


def test_login_user_without_become_gets_one_line_not_base64(fleet: tuple[Lab, str]) -> None:
    _, inv = fleet
    proc = nodecfg("configure-nodes", "-i", inv, "--limit", "node3")
    rc, data, err = run_json("configure-nodes", "-i", inv, "--limit", "node3")
    assert proc.returncode == rc == 1
    error = by_name(data)["node3"]["error"]
    assert "\n" not in error and len(error) <= 300
    assert "cannot read" in error and "/etc/containerd/config.toml" in error
    assert "Permission denied" in error and "set become: true" in error
    for text in (proc.stdout, proc.stderr, json.dumps(data), err):
        assert not re.search(r"[A-Za-z0-9+/=]{80,}", text), text[:2000]  # no base64 blob
        assert "Traceback" not in text


def test_non_utf8_daemon_json_is_refused_and_left_byte_for_byte(fleet: tuple[Lab, str]) -> None:
    lab, inv = fleet
    latin1 = base64.b64encode(b'{"log-level": "warn", "labels": ["caf\xe9"]}\n').decode()
    lab.ssh("node1", f"printf '%s' {latin1} | base64 -d > /srv/managed/daemon.json")
    before = lab.ssh("node1", "sha256sum /srv/managed/daemon.json").stdout.split()[0]
    rc, data, _ = run_json("configure-nodes", "-i", inv, "--limit", "node1")
    assert rc == 1
    docker = by_name(data)["node1"]["result"]["docker"]
    assert docker["status"] == "failed" and "is not UTF-8 text (byte 0xe9" in docker["note"]
    assert lab.ssh("node1", "sha256sum /srv/managed/daemon.json").stdout.split()[0] == before
    assert lab.ssh("node1", "readlink /etc/docker/daemon.json").stdout.strip() == "/srv/managed/daemon.json"
