"""The CLI's edges: every user error is one line on stderr, exit 2, no traceback, no host contacted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodecfg.cli import main
from nodecfg.errors import UsageError

COMMANDS = ("registry-up", "registry-down", "configure-nodes", "smoke-test", "kubespray-vars")


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd", COMMANDS)
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
    (["lab"], "`nodecfg-lab`"),
    (["lab", "status"], "separate dev tool, `nodecfg-lab`"),
    (["configure-nodes", "-i", "/nonexistent/inv.yaml"], "/nonexistent/inv.yaml: inventory file not found"),
]


@pytest.mark.parametrize(("argv", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_usage_errors_are_one_line_exit_2(argv: list[str], words: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert "Traceback" not in err


def test_lab_is_not_a_command_and_is_not_imported(capsys: pytest.CaptureFixture[str]) -> None:
    """The lab (lab/, `nodecfg-lab`) left the product: `nodecfg lab ...` is a one-line usage error
    that names the dev tool, and nodecfg imports nothing of it on the way."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert " lab " not in capsys.readouterr().out
    code = ("import sys; from nodecfg.cli import main; rc = main(['lab', 'up', '--flavors', 'jessie']); "
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] == 'nodecfg_lab' or m == 'nodecfg.lab'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["2", "[]"], proc.stdout
    assert proc.stderr.count("\n") == 1 and "nodecfg-lab" in proc.stderr, proc.stderr


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


def test_encrypted_key_without_a_terminal_is_a_usage_error(tmp_path: Path) -> None:
    key = tmp_path / "id_enc"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-pass", "-f", str(key)], check=True)
    inv = tmp_path / "inv.yaml"
    inv.write_text(f"ssh: {{key: {key}}}\nmaster: {{address: 127.0.0.2}}\nnodes: [127.0.0.3]\n")
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    proc = subprocess.run([sys.executable, "-m", "nodecfg", "configure-nodes", "-i", str(inv)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, check=False)
    assert proc.returncode == 2
    assert f"SSH key {key} is encrypted: add it to ssh-agent" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_encrypted_key_passphrase_is_asked_once_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nodecfg import ssh

    key = tmp_path / "id_enc"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-pass", "-f", str(key)], check=True)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "s3cret-pass"

    ssh.unlock_keys([key, key, key], ask)
    assert asked == [f"Passphrase for {key}: "]
    assert ssh._PASSPHRASES[key].reveal() == "s3cret-pass"
    wrong = tmp_path / "id_enc2"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "other", "-f", str(wrong)], check=True)
    with pytest.raises(UsageError, match="wrong passphrase"):
        ssh.unlock_keys([wrong], ask)


SSH_CONFIG = """\
Host 10.9.*
    User ops
    Port 2200
    ProxyJump jump@10.9.0.1
    ConnectTimeout 3
Host *
    User fallback
"""


@pytest.mark.parametrize(("inventory_ssh", "expected"), [
    ("", {"user": "ops", "port": 2200, "gateway": "jump@10.9.0.1", "connect_timeout": 3.0}),
    ("ssh: {user: root, port: 22}\n", {"user": "root", "port": 22, "gateway": "jump@10.9.0.1"}),
    ("ssh: {gateway: other@10.9.0.2}\n", {"user": "ops", "gateway": "other@10.9.0.2"}),
])
def test_ssh_config_fills_what_the_inventory_leaves_out(inventory_ssh: str, expected: dict) -> None:
    from nodecfg.inventory import parse_inventory
    from nodecfg.ssh import apply_ssh_config

    inv = parse_inventory(inventory_ssh + "master: {address: 10.9.0.10}\nnodes: [10.9.0.11]\n", "i.yaml",
                          check_files=False)
    host, target = apply_ssh_config(inv.nodes[0], SSH_CONFIG)
    assert target == "10.9.0.11"
    for field, value in expected.items():
        assert getattr(host.ssh, field) == value


def test_smoke_test_timeout_is_each_nodes_deadline_not_its_connect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """smoke-test --timeout is one deadline per node (nodecfg/deadline.py); the SSH connect keeps
    the inventory's connect_timeout (a dead node is not waited for the whole budget). The help says
    the default that applies."""
    from nodecfg import report, smoke

    inv = tmp_path / "inventory.yaml"
    inv.write_text("master:\n  address: 127.0.0.10\nnodes:\n  - address: 127.0.0.11\n")
    seen: dict[str, object] = {}

    def fake_smoke_test(inventory: object, hosts: tuple[object, ...], **kw: object) -> object:
        seen.update(kw, connect=[h.ssh.connect_timeout for h in hosts])  # type: ignore[attr-defined]

        class Result:
            exit_code = 0

        return Result()

    monkeypatch.setattr(smoke, "smoke_test", fake_smoke_test)
    monkeypatch.setattr(report, "smoke_recap", lambda *a, **k: None)
    assert main(["smoke-test", "-i", str(inv), "--timeout", "20"]) == 0
    assert seen["timeout"] == 20 and seen["connect"] == [10.0]
    assert main(["smoke-test", "-i", str(inv)]) == 0
    assert seen["timeout"] == smoke.DEFAULT_TIMEOUT
    with pytest.raises(SystemExit):
        main(["smoke-test", "--help"])
    assert f"(default: {smoke.DEFAULT_TIMEOUT:g};" in " ".join(capsys.readouterr().out.split())


def test_configure_nodes_undo_reaches_the_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nodecfg import configure, report

    inv = tmp_path / "inventory.yaml"
    inv.write_text("master:\n  address: 127.0.0.10\nnodes:\n  - address: 127.0.0.11\n")
    seen: list[object] = []

    class Fleet:
        exit_code = 0

    monkeypatch.setattr(configure, "configure_nodes", lambda _inv, _hosts, options, **_kw: seen.append(options) or Fleet())
    monkeypatch.setattr(report, "configure_recap", lambda *a, **k: None)
    assert main(["configure-nodes", "-i", str(inv), "--undo", "--check", "--diff"]) == 0
    assert main(["configure-nodes", "-i", str(inv)]) == 0
    assert [(o.undo, o.check, o.diff) for o in seen] == [(True, True, True), (False, False, False)]  # type: ignore[attr-defined]
