"""The CLI's edges: every user error is one line on stderr, exit 2, no traceback, no host contacted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nodecfg.cli import main

COMMANDS = ("registry-up", "registry-down", "configure-nodes", "smoke-test", "lab")


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd", [*COMMANDS[:-1], "lab up", "lab down", "lab status"])
def test_each_command_has_help(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*cmd.split(), "--help"])
    assert info.value.code == 0
    assert "usage: nodecfg" in capsys.readouterr().out


BAD = [
    (["configure-nodes", "--forks", "0"], "--forks"),
    (["configure-nodes", "--forks", "many"], "--forks"),
    (["smoke-test", "--timeout", "-1"], "--timeout"),
    (["configure-nodes", "--frok", "2"], "unrecognized arguments"),
    (["no-such-command"], "invalid choice"),
    (["lab"], "choose an action"),
    (["configure-nodes", "-i", "/nonexistent/inv.yaml"], "/nonexistent/inv.yaml: inventory file not found"),
]


@pytest.mark.parametrize(("argv", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_usage_errors_are_one_line_exit_2(argv: list[str], words: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert "Traceback" not in err


def test_broken_inventory_via_real_process(tmp_path: Path) -> None:
    inv = tmp_path / "inventory.yaml"
    inv.write_text("master:\n  address: 127.0.0.10\nnodes:\n  - address: 127.0.0.11\n    usr: root\n")
    proc = subprocess.run([sys.executable, "-m", "nodecfg", "configure-nodes", "-i", str(inv)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"nodecfg: error: {inv}:5: nodes[0].usr: unknown key "
                                   "(did you mean 'user'?)")
    assert proc.stdout == ""


def test_unknown_limit_name_is_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "inventory.yaml"
    inv.write_text("master: {address: 127.0.0.10}\nnodes: [{name: n1, address: 127.0.0.11}]\n")
    assert main(["smoke-test", "-i", str(inv), "--limit", "n2"]) == 2
    assert "no node named 'n2'" in capsys.readouterr().err
