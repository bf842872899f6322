"""Inventory validation from a fixture table: each broken inventory gets one line naming the
problem (file, line, key), and a UsageError (exit 2)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nodecfg.errors import InventoryError, UsageError
from nodecfg.inventory import Secret, load_inventory, parse_inventory

GOOD = """\
ssh:
  user: root
  port: 22
  become: false
registry:
  port: 5000
  mirrors: [docker.io, registry.k8s.io]
images:
  - docker.io/library/busybox:1.36
master:
  address: 127.0.0.10
nodes:
  - address: 127.0.0.11
  - {name: worker2, address: 127.0.0.12, user: deploy, become: true, port: 2222}
"""

# (case id, inventory text, expected words in the message, expected line or None)
BROKEN = [
    ("empty", "", ["empty"], None),
    ("only-comments", "# nothing here\n", ["empty"], None),
    ("yaml-syntax", "master:\n  address: [1.2.3.4\nnodes: []\n", ["YAML syntax error"], 3),
    ("yaml-tab-indent", "master:\n\taddress: 1.2.3.4\n", ["YAML syntax error"], 2),
    ("top-not-mapping", "- a\n- b\n", ["expected a mapping"], 1),
    ("unknown-top-key", GOOD + "nodess: []\n", ["nodess", "unknown key", "did you mean 'nodes'"], 15),
    ("unknown-ssh-key", GOOD.replace("  become: false", "  becme: false"),
     ["ssh.becme", "did you mean 'become'"], 4),
    ("missing-master", "nodes:\n  - address: 127.0.0.11\n", ["master", "required key missing"], None),
    ("missing-nodes", "master: {address: 127.0.0.10}\n", ["nodes", "required key missing"], None),
    ("empty-nodes", "master: {address: 127.0.0.10}\nnodes: []\n", ["nodes", "non-empty list"], 2),
    ("node-without-address", GOOD.replace("  - address: 127.0.0.11", "  - name: w1"),
     ["nodes[0].address", "required key missing"], 13),
    ("bad-address", GOOD.replace("127.0.0.11", "not an address!"), ["nodes[0].address", "not an IP"], 13),
    ("port-string", GOOD.replace("  port: 5000", "  port: fivethousand"),
     ["registry.port", "whole number"], 6),
    ("port-range", GOOD.replace("port: 2222", "port: 70000"), ["nodes[1].port", "between 1 and 65535"], 14),
    ("become-not-bool", GOOD.replace("become: false", "become: yes please"),
     ["ssh.become", "true or false"], 4),
    ("duplicate-address", GOOD.replace("127.0.0.12", "127.0.0.11"),
     ["nodes[1].address", "duplicate address 127.0.0.11"], 14),
    ("duplicate-name", GOOD.replace("  - address: 127.0.0.11", "  - {name: worker2, address: 127.0.0.11}"),
     ["duplicate name worker2"], 14),
    ("duplicate-yaml-key", GOOD + "master: {address: 127.0.0.99}\n", ["master", "duplicate key"], 15),
    ("mirrors-not-list", GOOD.replace("[docker.io, registry.k8s.io]", "docker.io"),
     ["registry.mirrors", "expected a list"], 7),
    ("mirror-with-path", GOOD.replace("registry.k8s.io]", "registry.k8s.io/pause]"),
     ["registry.mirrors[1]", "registry host"], 7),
    ("auth-both-sources", GOOD.replace("  port: 5000", "  port: 5000\n  auth: {username: u, password_env: A, password_file: f}"),
     ["registry.auth", "exactly one of"], 7),
    ("auth-no-username", GOOD.replace("  port: 5000", "  port: 5000\n  auth: {password_env: A}"),
     ["registry.auth.username", "required key missing"], 7),
    ("auth-bad-env-name", GOOD.replace("  port: 5000", "  port: 5000\n  auth: {username: u, password_env: 'A-B'}"),
     ["registry.auth.password_env", "not an environment variable"], 7),
    ("images-not-list", GOOD.replace("images:\n  - docker.io/library/busybox:1.36", "images: busybox"),
     ["images", "expected a list"], 8),
    ("host-key-mode", GOOD.replace("  become: false", "  become: false\n  host_key_checking: accept_new"),
     ["ssh.host_key_checking", "did you mean 'accept-new'"], 5),
    ("data-dir-root", GOOD.replace("  port: 5000", "  port: 5000\n  data_dir: /"),
     ["registry.data_dir", "absolute directory other than /"], 7),
]


@pytest.mark.parametrize(("text", "words", "line"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_inventory_is_one_clear_line(tmp_path: Path, text: str, words: list[str],
                                            line: int | None) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for word in words:
        assert word in message, message
    if line is not None:
        assert info.value.line == line, message
        assert f"{path}:{line}:" in message
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="not found"):
        load_inventory(tmp_path / "nope.yaml")
    with pytest.raises(InventoryError, match="is a directory"):
        load_inventory(tmp_path)


def test_missing_key_file_names_its_path(tmp_path: Path) -> None:
    text = GOOD.replace("  become: false", f"  become: false\n  key: {tmp_path}/id_missing")
    with pytest.raises(InventoryError) as info:
        parse_inventory(text, str(tmp_path / "inv.yaml"))
    assert f"{tmp_path}/id_missing" in str(info.value) and "ssh.key" in str(info.value)


def test_good_inventory_defaults_and_overrides(tmp_path: Path) -> None:
    inv = parse_inventory(GOOD, str(tmp_path / "inv.yaml"))
    assert inv.master.address == "127.0.0.10" and inv.master.name == "127.0.0.10"
    assert inv.registry.address == "127.0.0.10"  # default: the master's address
    assert inv.registry.endpoint == "127.0.0.10:5000"
    assert inv.registry.mirrors == ("docker.io", "registry.k8s.io")
    first, second = inv.nodes
    assert first.ssh.user == "root" and first.ssh.port == 22 and not first.ssh.become
    assert second.name == "worker2" and second.ssh.user == "deploy" and second.ssh.become
    assert second.ssh.port == 2222
    assert str(second) == "worker2 (127.0.0.12)"


def test_registry_address_and_default_mirrors(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        registry: {address: 127.0.0.50, port: 5001}
        master: {address: 127.0.0.10}
        nodes: [127.0.0.11]
    """)
    inv = parse_inventory(text, str(tmp_path / "inv.yaml"))
    assert inv.registry.endpoint == "127.0.0.50:5001"
    assert inv.registry.mirrors == ("docker.io", "registry.k8s.io", "quay.io")
    assert inv.nodes[0].address == "127.0.0.11"


def test_limit_selects_by_name_or_address_and_names_unknown(tmp_path: Path) -> None:
    inv = parse_inventory(GOOD, str(tmp_path / "inv.yaml"))
    assert [h.name for h in inv.select(["worker2"])] == ["worker2"]
    assert [h.address for h in inv.select(["127.0.0.11"])] == ["127.0.0.11"]
    with pytest.raises(UsageError, match=r"no node named 'workr2'.*did you mean 'worker2'"):
        inv.select(["workr2"])


def test_password_from_env_and_file_never_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = GOOD.replace("  port: 5000", "  port: 5000\n  auth: {username: puller, password_env: NODECFG_T_PW}")
    inv = parse_inventory(text, str(tmp_path / "inv.yaml"))
    assert inv.registry.auth is not None
    monkeypatch.delenv("NODECFG_T_PW", raising=False)
    with pytest.raises(UsageError, match="NODECFG_T_PW is not set"):
        inv.registry.auth.password()
    monkeypatch.setenv("NODECFG_T_PW", "hunter2")
    secret = inv.registry.auth.password()
    assert secret.reveal() == "hunter2"
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert "hunter2" not in repr(inv)
    pw = tmp_path / "pw"
    pw.write_text("filepw\n")
    text = GOOD.replace("  port: 5000", f"  port: 5000\n  auth: {{username: puller, password_file: {pw}}}")
    assert parse_inventory(text, str(tmp_path / "i.yaml")).registry.auth.password() == Secret("filepw")


def test_example_inventory_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
    inv = parse_inventory(example.read_text(), str(example), check_files=False)
    assert inv.nodes and inv.master.address


@pytest.mark.parametrize(("spec", "expected"), [
    ("root@10.0.0.1", ("root", "10.0.0.1", None)),
    ("bastion:2222", ("", "bastion", 2222)),
    ("[::1]:2022", ("", "::1", 2022)),
    ("::1", ("", "::1", None)),
])
def test_split_gateway(spec: str, expected: tuple) -> None:
    from nodecfg.inventory import split_gateway

    assert split_gateway(spec) == expected


@pytest.mark.parametrize("spec", ["bad host", "h:99999", "@h", "a b@h", "h:x", "[::1]x"])
def test_split_gateway_refuses(spec: str) -> None:
    from nodecfg.inventory import split_gateway

    with pytest.raises(ValueError):
        split_gateway(spec)
