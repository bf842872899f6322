"""ssh.py's pure parts: jump hosts from ~/.ssh/config, the become wrapper."""

from __future__ import annotations

import subprocess

import pytest

from nodecfg import ssh
from nodecfg.errors import HostError
from nodecfg.inventory import SshSettings
from nodecfg.ssh import become_ok, become_prompt, parse_gateway, wrap_become


def test_proxyjump_from_ssh_config_is_checked_like_the_inventorys() -> None:
    assert parse_gateway("ops@bastion:2222", SshSettings()) == ("ops", "bastion", 2222)
    with pytest.raises(HostError, match="ProxyJump"):
        parse_gateway("o$(id)@bastion", SshSettings())


def test_become_with_password_prints_its_ok_line_only_after_sudo() -> None:
    prompt = become_prompt()
    assert prompt != become_prompt()  # one per command
    wrapped = wrap_become("echo 'a b'; id -u", True, prompt)
    assert wrapped.startswith("sudo -S -p ")
    # what sudo runs, run here by sh instead: the ok line first, then the command's own output
    inner = wrapped.split(" -- sh -c ", 1)[1]
    out = subprocess.run(f"sh -c {inner}", shell=True, capture_output=True, text=True, check=True).stdout  # noqa: S602
    assert out.splitlines()[0] == become_ok(prompt)
    assert out.splitlines()[1] == "a b"
    assert wrap_become("true", True) == "sudo -n -H -- sh -c true"
    assert wrap_become("true", False) == "true"


# ---------------------------------------------------------------------------------------------
# issue 14: registry-up imports paramiko without invoke (and Fabric); invoke is handed over when needed

def _python(code: str) -> str:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_paramiko_is_imported_without_invoke_until_something_needs_it() -> None:
    out = _python(
        "import sys\n"
        "from nodecfg import ssh\n"
        "ssh.preload()\n"
        "print('paramiko' in sys.modules, 'invoke' in sys.modules, 'fabric' in sys.modules, 'asyncio' in sys.modules)\n"
        "import paramiko.config\n"
        "print(paramiko.config.invoke is None)\n"
        "ssh._give_paramiko_invoke()\n"  # what Fabric's import and a `Match exec` line do
        "print(paramiko.config.invoke is sys.modules['invoke'])\n")
    assert out.split() == ["True", "False", "False", "False", "True", "True"]


def test_match_exec_in_ssh_config_still_runs_its_command() -> None:
    """`Match exec` is what paramiko imports invoke for: an ssh_config with one gets it back."""
    out = _python(
        "from nodecfg import ssh\n"
        "from nodecfg.inventory import Host, SshSettings\n"
        "ssh.preload()\n"
        "host = Host(name='m', address='m1', ssh=SshSettings())\n"
        "h, target = ssh.apply_ssh_config(host, 'Match exec \"true\"\\n  HostName 127.0.0.9\\n  User alice\\n')\n"
        "print(target, h.ssh.user)\n")
    assert out.split() == ["127.0.0.9", "alice"]


def test_a_session_is_what_nodecfg_uses_of_a_fabric_connection() -> None:
    """`connect(host, fabric=False)` gives a Session; run() and close() take it as they take Fabric's."""
    closed: list[bool] = []
    client = type("Client", (), {"close": lambda self: closed.append(True), "get_transport": lambda self: None})()
    session = ssh.Session("m1", "root", 22, client)
    with pytest.raises(HostError, match="m1: SSH connection is closed"):
        ssh.run(session, "true")
    ssh.close(session)
    assert closed == [True]
