"""Issue 2: the lab gives real nodes — sshd, systemd, docker and containerd — and an inventory."""

from __future__ import annotations

from nodecfg.inventory import load_inventory
from tests.e2e.conftest import nodecfg, start_lab


def test_lab_up_gives_real_ssh_nodes_with_both_runtimes() -> None:
    lab = start_lab(3)
    assert set(lab.hosts) == {"master", "node1", "node2", "node3"}
    inv = load_inventory(lab.inventory)
    assert [n.name for n in inv.nodes] == ["node1", "node2", "node3"]
    for name in lab.hosts:
        out = lab.ssh(name, "systemctl is-active docker containerd; hostname; ps -p 1 -o comm=").stdout.split()
        assert out == ["active", "active", name, "systemd"], out
    # every node has its own host key
    keys = {lab.ssh(n, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] for n in lab.hosts}
    assert len(keys) == len(lab.hosts)
    status = nodecfg("lab", "status")
    assert status.returncode == 0
    for name, address in lab.hosts.items():
        assert any(line.split()[:3] == [name, address, "running"] for line in status.stdout.splitlines())


def test_lab_network_is_internal() -> None:
    """The nodes talk to each other and to this machine, never to the outside world."""
    import subprocess

    start_lab(1)
    out = subprocess.run(["docker", "network", "inspect", "nodecfg-lab", "--format", "{{.Internal}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "true"
