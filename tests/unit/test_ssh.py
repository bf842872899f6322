"""ssh.py's pure parts: jump hosts from ~/.ssh/config, the become wrapper."""

from __future__ import annotations

import subprocess

import pytest

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
