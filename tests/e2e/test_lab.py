"""Issue 2: the lab (`nodecfg-lab`, lab/) gives real nodes — sshd, systemd, docker and containerd —
and an inventory."""

from __future__ import annotations

import re

import nodecfg_lab as labmod

from nodecfg.inventory import load_inventory
from tests.e2e.conftest import nodecfg_lab, start_lab


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
    status = nodecfg_lab("status")
    assert status.returncode == 0
    for name, address in lab.hosts.items():
        assert any(line.split()[:3] == [name, address, "running"] for line in status.stdout.splitlines())
    assert nodecfg_lab("inventory").stdout.strip() == str(lab.inventory)


def test_lab_network_is_internal() -> None:
    """The nodes talk to each other and to this machine, never to the outside world."""
    import subprocess

    start_lab(1)
    out = subprocess.run(["docker", "network", "inspect", labmod.lab_name(), "--format", "{{.Internal}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "true"


def test_lab_flavors_give_each_node_its_runtimes_and_minimal_nodes_lack_fetchers() -> None:
    lab = start_lab(3, flavors=("bookworm", "trixie", "containerd2"), minimal=("node3",))
    assert labmod.lab_flavors() == {"master": "bookworm", "node1": "bookworm", "node2": "trixie",
                                    "node3": "containerd2"}
    want = {"master": ("1.6.", "20.10."), "node1": ("1.6.", "20.10."), "node2": ("1.7.", "26."),
            "node3": ("2.", "28.")}
    for name, (containerd, docker) in want.items():
        out = lab.ssh(name, "containerd --version; docker version --format '{{.Server.Version}}'; "
                      "systemctl is-active docker containerd").stdout.splitlines()
        # "containerd github.com/containerd/containerd[/v2] 2.1.9~ds1 2.1.9~ds1-1"
        # "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3",
        # "containerd github.com/containerd/containerd/v2 2.1.9+unknown "
        assert re.match(r"containerd github\.com/containerd/containerd(/v2)? ", out[0]), (name, out)
        assert out[0].split()[2].startswith(containerd), (name, out)
        assert out[1].startswith(docker), (name, out)
        assert out[2:] == ["active", "active"], (name, out)
    assert lab.ssh("node3", "podman --version").stdout.startswith("podman version 5.")
    assert lab.ssh("node2", "command -v podman", check=False).returncode == 1
    # node3 is minimal: no HTTP fetcher, but a shell and python
    fetchers = lab.ssh("node3", "command -v curl; command -v wget; dpkg -s curl", check=False)
    assert fetchers.stdout.strip() == "" and fetchers.returncode != 0
    lab.ssh("node3", "bash -c 'echo ok' && python3 -c 'import ssl, json'")
    lab.ssh("node2", "command -v curl")
    inventory = lab.inventory.read_text().splitlines()
    assert "  name: master   # flavor: bookworm" in inventory
    assert any(line.startswith("  - {name: node3,") and line.endswith("# flavor: containerd2, minimal")
               for line in inventory)
    status = nodecfg_lab("status").stdout.splitlines()
    assert any(line.split()[0] == "node3" and line.split()[3:] == ["containerd2", "minimal"]
               for line in status), status
    assert any(line.split()[0] == "node2" and line.split()[3:] == ["trixie"] for line in status), status
