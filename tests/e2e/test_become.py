"""Issue 12, defect 1: the become password reaches sudo's prompt and nothing else.

Before the fix, `--ask-become-pass` sent the password as the first line of stdin; where sudo asked
for nothing (NOPASSWD, cached credentials) that line reached `sh -s` and ran as root. Now nodecfg
answers sudo's own prompt (a random one per command) only when it appears.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab, cli, leftovers, nodecfg, run_json, smoke_checks, start_lab

HOSTILE = "pw; touch /tmp/pwned-by-become"
OPS_PASSWORD = "s3cret-ops pass"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lab, Path, Path]:
    lab = start_lab(1)
    assert nodecfg("registry-up", "-i", str(lab.inventory)).returncode == 0
    keys = "install -d -o {u} -m 700 /home/{u}/.ssh && install -o {u} -m 600 /root/.ssh/authorized_keys /home/{u}/.ssh/"
    lab.ssh("node1", "useradd -m -s /bin/bash deploy && useradd -m -s /bin/bash ops && "
                     "echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy && "
                     "echo 'ops ALL=(ALL) ALL' > /etc/sudoers.d/ops && "
                     f"echo 'ops:{OPS_PASSWORD}' | chpasswd && "
                     + keys.format(u="deploy") + " && " + keys.format(u="ops"))
    invs = []
    for user in ("deploy", "ops"):
        data = lab.inventory_data()
        data["nodes"][0].update({"user": user, "become": True})
        invs.append(lab.write_inventory(tmp_path_factory.mktemp(user) / "inventory.yaml", data))
    return lab, invs[0], invs[1]


def with_password(inv: Path, password: str, *args: str) -> subprocess.CompletedProcess[str]:
    """configure-nodes --ask-become-pass, the password typed in (getpass reads stdin without a tty)."""
    return subprocess.run([*cli(), "configure-nodes", "-i", str(inv), "--ask-become-pass", *args],
                          input=password + "\n", capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ}, start_new_session=True)


def test_nopasswd_sudo_never_sees_the_password_as_a_command(lab: tuple[Lab, Path, Path]) -> None:
    fleet, deploy, _ = lab
    proc = with_password(deploy, HOSTILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fleet.ssh("node1", "test -e /tmp/pwned-by-become", check=False).returncode == 1, \
        "the become password ran as a root command"
    assert "insecure-registries" in fleet.ssh("node1", "cat /etc/docker/daemon.json").stdout
    assert HOSTILE not in proc.stdout + proc.stderr


def test_password_sudo_gets_it_at_its_prompt(lab: tuple[Lab, Path, Path]) -> None:
    _, _, ops = lab
    proc = with_password(ops, OPS_PASSWORD, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert OPS_PASSWORD not in proc.stdout + proc.stderr


def test_wrong_password_is_one_line_and_never_shown(lab: tuple[Lab, Path, Path]) -> None:
    _, _, ops = lab
    proc = with_password(ops, "not-the-password", "--check")
    assert proc.returncode == 1
    assert "sudo refused the become password" in proc.stdout, proc.stdout + proc.stderr
    assert "not-the-password" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_smoke_through_sudo_keeps_its_deadline(lab: tuple[Lab, Path, Path]) -> None:
    """Issue 21: through sudo, the probe and the CRI check's python3 bridge run under `timeout -k`
    on the node (the login user cannot open containerd's socket: the bridge is the way), pass,
    and leave nothing running."""
    fleet, deploy, _ = lab
    assert nodecfg("configure-nodes", "-i", str(deploy)).returncode == 0
    rc, data, err = run_json("smoke-test", "-i", str(deploy), "--timeout", "60")
    assert rc == 0, (err, data)
    # containerd's socket is root's 0660: sshd's stream-local forwarding, as deploy, cannot open it
    assert fleet.ssh("node1", "stat -c '%U %a' /run/containerd/containerd.sock").stdout.split() == ["root", "660"]
    assert smoke_checks(data["hosts"][0])["cri"]["status"] == "ok"
    assert leftovers(fleet, "node1") == []
