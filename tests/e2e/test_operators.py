"""Issue 6: a kubespray hosts.yaml as the only file, a node behind the master as jump host, host keys.

node1, node2  reached directly
node3         rejects SSH from this machine: reachable only through the master (ProxyJump)
node2         later gets a new host key: refused and named, the others proceed
HOME is a temp dir, so the host keys are learned into "the user's" ~/.ssh/known_hosts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nodecfg_lab as labmod
import pytest

from tests.e2e.conftest import Lab, by_name, nodecfg, start_lab

# this machine's address on the lab network: the subnet's first host
GATEWAY_BLOCK = f"iptables -I INPUT -p tcp --dport 22 -s {next(labmod.lab_subnet().hosts())} -j REJECT"


def hosts_yaml(lab: Lab) -> str:
    h = lab.hosts
    return f"""\
# kubespray inventory/mycluster/hosts.yaml, as an operator has it
all:
  hosts:
    master: {{ansible_host: {h['master']}, ip: {h['master']}, access_ip: {h['master']}}}
    node1: {{ansible_host: {h['node1']}, ip: {h['node1']}}}
    node2: {{ansible_host: {h['node2']}, ip: {h['node2']}}}
    node3:
      ansible_host: {h['node3']}
      ip: {h['node3']}
      ansible_ssh_common_args: "-o ProxyJump=root@{h['master']}"
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: {lab.key}
    nodecfg:
      images: [docker.io/library/busybox:1.36, registry.k8s.io/pause:3.9]
      ssh: {{connect_timeout: 5}}
  children:
    kube_control_plane:
      hosts:
        master:
    kube_node:
      hosts:
        node1:
        node2:
        node3:
    etcd:
      hosts:
        master:
    k8s_cluster:
      children:
        kube_control_plane:
        kube_node:
        calico_rr:
    calico_rr:
      hosts: {{}}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lab, Path, dict[str, str]]:
    lab = start_lab(3)
    lab.ssh("node3", GATEWAY_BLOCK)
    home = tmp_path_factory.mktemp("home")
    inv = tmp_path_factory.mktemp("kubespray") / "hosts.yaml"
    inv.write_text(hosts_yaml(lab))
    return lab, inv, {"HOME": str(home)}


def run(env: dict[str, str], *args: str) -> tuple[int, dict, str]:
    proc = nodecfg(*args, "--json", env=env)
    try:
        return proc.returncode, json.loads(proc.stdout), proc.stderr
    except ValueError:
        raise AssertionError(f"--json does not parse:\n{proc.stdout}\n{proc.stderr}") from None


def test_node3_is_not_reachable_directly(fleet: tuple[Lab, Path, dict[str, str]]) -> None:
    lab, _, _ = fleet
    proc = subprocess.run(["ssh", "-i", str(lab.key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           f"root@{lab.hosts['node3']}", "true"], capture_output=True, check=False)
    assert proc.returncode != 0


def test_kubespray_inventory_drives_the_whole_job(fleet: tuple[Lab, Path, dict[str, str]]) -> None:
    lab, inv, env = fleet
    proc = nodecfg("registry-up", "-i", str(inv), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rc, data, err = run(env, "configure-nodes", "-i", str(inv))
    assert rc == 0, (data, err)
    hosts = by_name(data)
    assert set(hosts) == {"master", "node1", "node2", "node3"}  # k8s_cluster: control plane + nodes
    assert all(h["ok"] and h["result"]["changed"] for h in hosts.values())
    # node3 was configured through the master
    daemon3 = subprocess.run(["docker", "exec", f"{labmod.lab_name()}-node3", "cat", "/etc/docker/daemon.json"],
                             capture_output=True, text=True, check=True).stdout
    assert json.loads(daemon3)["insecure-registries"] == [f"{lab.hosts['master']}:5000"]
    rc, data, err = run(env, "smoke-test", "-i", str(inv))
    assert rc == 0, (data, err)
    assert by_name(data)["node3"]["ok"] is True
    # unknown hosts were learned into the user's known_hosts, the way accept-new does
    known = (Path(env["HOME"]) / ".ssh" / "known_hosts").read_text()
    for name in ("master", "node1", "node2", "node3"):
        assert lab.hosts[name] in known


def test_changed_host_key_is_refused_and_named(fleet: tuple[Lab, Path, dict[str, str]]) -> None:
    lab, inv, env = fleet
    lab.ssh("node2", "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && systemctl restart ssh")
    before = (Path(env["HOME"]) / ".ssh" / "known_hosts").read_text()
    rc, data, _ = run(env, "configure-nodes", "-i", str(inv))
    assert rc == 1
    hosts = by_name(data)
    assert hosts["node2"]["ok"] is False
    assert "CHANGED" in hosts["node2"]["error"] and lab.hosts["node2"] in hosts["node2"]["error"]
    for name in ("master", "node1", "node3"):
        assert hosts[name]["ok"] is True and hosts[name]["result"]["changed"] is False
    # the changed key was not written anywhere
    assert (Path(env["HOME"]) / ".ssh" / "known_hosts").read_text() == before
