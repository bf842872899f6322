"""Issue 4 (registry auth on nodes) and issue 5 (401 diagnosis): a registry that requires a login.

Nodes get the credentials in root-only files (docker: /root/.docker/config.json; containerd: a
hosts.toml Authorization header), pull with them, and the password shows up nowhere else.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab, by_name, nodecfg, run_json, start_lab

PASSWORD = "pu11er-S3cret-x9"
ENV = {"NODECFG_E2E_PW": PASSWORD}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lab, str]:
    lab = start_lab(2)
    data = lab.inventory_data()
    data["registry"]["auth"] = {"username": "puller", "password_env": "NODECFG_E2E_PW"}
    inv = str(lab.write_inventory(tmp_path_factory.mktemp("auth") / "inventory.yaml", data))
    proc = nodecfg("registry-up", "-i", inv, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # plain HTTP with a login: said once, in one line
    assert [ln for ln in proc.stderr.splitlines() if "in clear" in ln] == [
        "nodecfg: warning: registry.auth without registry.tls: the password crosses the network in clear "
        "on every pull (HTTP Basic); set registry.tls: true"]
    return lab, inv


def test_nodes_get_root_only_credentials_and_pull(fleet: tuple[Lab, str]) -> None:
    lab, inv = fleet
    proc = nodecfg("configure-nodes", "-i", inv, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    for name in ("node1", "node2"):
        modes = lab.ssh(name, "stat -c '%a %U %n' /root/.docker/config.json "
                              "/etc/containerd/certs.d/*/hosts.toml").stdout.split("\n")
        assert all(line.startswith("600 root ") for line in modes if line), modes
        # the password is in no file that others can read
        leak = lab.ssh(name, f"grep -rlF {PASSWORD} /etc /root /tmp /var/log 2>/dev/null | "
                             "xargs -r stat -c '%a %n' | grep -v '^600 ' || true").stdout
        assert leak.strip() == "", leak
        pull = lab.ssh(name, "docker pull -q busybox:1.36 && docker rmi busybox:1.36 && "
                             "ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d "
                             "registry.k8s.io/pause:3.9 >/dev/null", check=False)
        assert pull.returncode == 0, pull.stdout + pull.stderr
    rc, data, err = run_json("smoke-test", "-i", inv, env=ENV)
    assert rc == 0, (data, err)
    assert PASSWORD not in json.dumps(data) + err


def test_wrong_credentials_on_a_node_are_diagnosed_as_401(fleet: tuple[Lab, str]) -> None:
    _, inv = fleet
    proc = nodecfg("configure-nodes", "-i", inv, "--limit", "node1", env={"NODECFG_E2E_PW": "wrong-one"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rc, data, _ = run_json("smoke-test", "-i", inv, env=ENV)
    assert rc == 1
    hosts = by_name(data)
    assert hosts["node2"]["ok"] is True
    checks = {c["name"]: c for c in hosts["node1"]["result"]["checks"]}
    assert checks["registry"]["status"] == "ok"  # the inventory's own credentials work
    assert checks["docker"]["status"] == "FAIL" and "401" in checks["docker"]["detail"]
    assert checks["containerd"]["status"] == "FAIL" and "401" in checks["containerd"]["detail"]
    # the right password again: node1 is fixed, and nothing else changes on node2
    rc, fixed, _ = run_json("configure-nodes", "-i", inv, env=ENV)
    assert rc == 0
    changed = {h["name"]: h["result"]["changed"] for h in fixed["hosts"]}
    assert changed == {"node1": True, "node2": False}
    rc, _, _ = run_json("smoke-test", "-i", inv, env=ENV)
    assert rc == 0


def test_password_never_on_a_command_line(fleet: tuple[Lab, str], tmp_path: Path) -> None:
    lab, inv = fleet
    # audit every exec on node1 while nodecfg works on it
    lab.ssh("node1", "rm -f /etc/docker/daemon.json /root/.docker/config.json && systemctl restart docker")
    lab.ssh("node1", "nohup sh -c 'for i in $(seq 1 400); do cat /proc/[0-9]*/cmdline 2>/dev/null | "
                     "tr \"\\0\" \" \"; echo; sleep 0.02; done' > /tmp/cmdlines 2>/dev/null &")
    proc = nodecfg("configure-nodes", "-i", inv, "--limit", "node1", env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lab.ssh("node1", "sleep 9")
    cmdlines = lab.ssh("node1", "cat /tmp/cmdlines").stdout
    assert "docker" in cmdlines  # the audit saw nodecfg's commands
    assert PASSWORD not in cmdlines
