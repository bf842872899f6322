"""Inventory validation from a fixture table: each broken inventory gets one line naming the
problem (file, line, key), and a UsageError (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from nodecfg.errors import InventoryError, UsageError
from nodecfg.inventory import Inventory, RegistrySettings, Secret, TlsSettings, load_inventory, parse_inventory

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


# ---------------------------------------------------------------------------------------------
# issue 12: every value is held to its real grammar (values reach configs and commands on hosts)

DIGEST = "sha256:" + "a" * 64


def with_value(key: str, value: object) -> str:
    """GOOD as data with one value set at a dotted key path (`registry.auth.username`)."""
    data = yaml.safe_load(GOOD)
    data["registry"]["auth"] = {"username": "puller", "password_env": "PW"}
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


# (key path, value, what the loaded inventory holds there or None for "as given")
GOOD_VALUES = [
    ("registry.mirrors", ["docker.io", "my.registry:8443", "[::1]:5000", "10.0.0.1:5000", "localhost",
                          "[fd00::1]"], None),
    ("registry.address", "reg-1.example.com", None),
    ("registry.address", "fd00::5", None),
    ("master.address", "::1", None),
    ("images", ["busybox:1.36", "localhost:5000/team/app:2", "[::1]:5000/a/b:1", "a__b/c.d-e:V_1.0"], None),
    ("registry.image", "registry:2", None),
    ("registry.image", f"registry@{DIGEST}", None),
    ("registry.image", f"my.reg:5000/lib/registry:2.8@{DIGEST}", None),
    ("registry.auth.username", "o'brien$x", None),
    ("registry.auth.username", "a \"b\" `c` $(d) \\e ;|&<>", None),
    ("registry.auth.username", "ünïcödé", None),
    ("registry.auth.username", "x" * 255, None),
    ("registry.auth.password_env", "_PW_1", None),
    ("registry.data_dir", "/srv/registry", None),
    ("registry.data_dir", "/srv/a b/$(x) 'q'", None),
    ("registry.data_dir", "/srv//reg/", "/srv/reg"),
    ("nodes.0", {"name": "node-1.a_b", "address": "127.0.0.11"}, None),
    ("ssh.user", "svc$", None),
    ("ssh.user", "a.b@corp", None),
    ("ssh.gateway", "jump@10.0.0.1:2222", None),
    ("ssh.gateway", "[fd00::1]:22", None),
]


def _get(inv: Inventory, key: str) -> object:
    section, _, rest = key.partition(".")
    if section == "registry":
        obj: object = inv.registry
        for part in rest.split("."):
            obj = getattr(obj, part)
        return list(obj) if isinstance(obj, tuple) else obj
    if section == "images":
        return list(inv.images)
    if section == "master":
        return getattr(inv.master, rest)
    if section == "nodes":
        node = inv.nodes[0]
        return {"name": node.name, "address": node.address}
    return getattr(inv.nodes[0].ssh, rest)


@pytest.mark.parametrize(("key", "value", "loaded"), GOOD_VALUES,
                         ids=[f"{k}={v!r}"[:60] for k, v, _ in GOOD_VALUES])
def test_grammar_accepts(tmp_path: Path, key: str, value: object, loaded: object) -> None:
    inv = parse_inventory(with_value(key, value), str(tmp_path / "inv.yaml"), check_files=False)
    assert _get(inv, key) == (value if loaded is None else loaded)


# (key path, value, the key path the error names, words in the message)
BAD_VALUES = [
    ("registry.mirrors", ["docker.io:x$(id)"], "registry.mirrors[0]", "registry host"),
    ("registry.mirrors", ["docker.io/library"], "registry.mirrors[0]", "registry host"),
    ("registry.mirrors", ["docker.io:"], "registry.mirrors[0]", "registry host"),
    ("registry.mirrors", ["docker.io:0"], "registry.mirrors[0]", "registry host"),
    ("registry.mirrors", ["docker.io:65536"], "registry.mirrors[0]", "registry host"),
    ("registry.mirrors", ["::1"], "registry.mirrors[0]", "registry host"),
    ("registry.mirrors", ["[fe80::1%eth0]"], "registry.mirrors[0]", "registry host"),
    ("registry.mirrors", ["-bad.io"], "registry.mirrors[0]", "registry host"),
    ("registry.mirrors", ["a_b.io"], "registry.mirrors[0]", "registry host"),
    ("registry.mirrors", ["döcker.io"], "registry.mirrors[0]", "registry host"),
    ("registry.mirrors", ["docker.io\nquay.io"], "registry.mirrors[0]", "registry host"),
    ("registry.address", "fe80::1%eth0", "registry.address", "not an IP address or host name"),
    ("registry.address", "10.0.0.1;id", "registry.address", "not an IP address or host name"),
    ("master.address", "fe80::1%$(id)", "master.address", "not an IP address or host name"),
    ("master.address", "a$(id)", "master.address", "not an IP address or host name"),
    ("images", ["busybox:1.36;id"], "images[0]", "invalid tag"),
    ("images", ["docker.io:x$(id)/a:1"], "images[0]", "invalid registry host"),
    ("images", ["Busybox:1"], "images[0]", "invalid repository name component"),
    ("images", ["busybox:ü"], "images[0]", "not a valid image reference"),
    ("images", ["busy\nbox:1"], "images[0]", "not a valid image reference"),
    ("images", [f"busybox@{DIGEST}"], "images[0]", "pin images by tag"),
    ("images", ["a/" * 128 + "b:1"], "images[0]", "longer than 255"),
    ("images", ["registry.k8s.io/pause:3.9", "quay.io/pause:3.9"], "images", "both be pushed as pause:3.9"),
    ("registry.image", "registry:2;id", "registry.image", "invalid tag"),
    ("registry.image", "$(id)", "registry.image", "invalid repository name component"),
    ("registry.image", "registry:2 x", "registry.image", "not a valid image reference"),
    ("registry.image", "registry@sha256:abc", "registry.image", "invalid digest"),
    ("registry.auth.username", "u\ntouch /tmp/pwned", "registry.auth.username", "line breaks"),
    ("registry.auth.username", "u\rx", "registry.auth.username", "control characters"),
    ("registry.auth.username", "tab\there", "registry.auth.username", "control characters"),
    ("registry.auth.username", "nul\0x", "registry.auth.username", "control characters"),
    ("registry.auth.username", "a\u2028b", "registry.auth.username", "control characters"),
    ("registry.auth.username", "a:b", "registry.auth.username", "must not contain ':'"),
    ("registry.auth.username", "x" * 256, "registry.auth.username", "longer than 255"),
    ("registry.auth.password_env", "A-B", "registry.auth.password_env", "not an environment variable"),
    ("registry.auth.password_env", "1A", "registry.auth.password_env", "not an environment variable"),
    ("registry.auth.password_env", "A\nB", "registry.auth.password_env", "not an environment variable"),
    ("registry.data_dir", "relative/dir", "registry.data_dir", "absolute path"),
    ("registry.data_dir", "/", "registry.data_dir", "other than /"),
    ("registry.data_dir", "/srv/a:b", "registry.data_dir", "must not contain ':'"),
    ("registry.data_dir", "/srv/../etc", "registry.data_dir", "'.' or '..'"),
    ("registry.data_dir", "/srv/./x", "registry.data_dir", "'.' or '..'"),
    ("registry.data_dir", "/srv/a\nb", "registry.data_dir", "control characters"),
    ("registry.data_dir", "/srv/a\0b", "registry.data_dir", "control characters"),
    ("nodes.0", {"name": "a b", "address": "127.0.0.11"}, "nodes[0].name", "names may hold"),
    ("nodes.0", {"name": "a$(id)", "address": "127.0.0.11"}, "nodes[0].name", "names may hold"),
    ("nodes.0", {"name": "-a", "address": "127.0.0.11"}, "nodes[0].name", "names may hold"),
    ("ssh.user", "root\nid", "ssh.user", "not a login name"),
    ("ssh.user", "a b", "ssh.user", "not a login name"),
    ("ssh.user", "-oProxyCommand=x", "ssh.user", "not a login name"),
    ("ssh.gateway", "a$(id)@h", "ssh.gateway", "jump host"),
    ("ssh.gateway", "u@h;id", "ssh.gateway", "jump host"),
    ("ssh.gateway", "u@fe80::1%x", "ssh.gateway", "jump host"),
    ("ssh.key", "/tmp/a\nb", "ssh.key", "control characters"),
    ("ssh.known_hosts", "/tmp/a\0b", "ssh.known_hosts", "control characters"),
    ("registry.tls", "yes", "registry.tls", "expected a mapping"),
    ("registry.tls", {"cert": "a.crt", "key": "a.key"}, "registry.tls.ca", "cert, key and ca go together"),
    ("registry.tls", {"ca_dir": "/x", "cert": "a"}, "registry.tls", "not both"),
    ("registry.tls", {"ca_dir": "/x\ny"}, "registry.tls.ca_dir", "control characters"),
    ("registry.tls", {"certificate": "a"}, "registry.tls.certificate", "unknown key"),
    ("registry.tls", {"cert_days": 0}, "registry.tls.cert_days", "between 1 and 3650"),
    ("registry.tls", {"cert_days": 3651}, "registry.tls.cert_days", "between 1 and 3650"),
    ("registry.tls", {"cert_days": "90"}, "registry.tls.cert_days", "whole number"),
    ("registry.tls", {"cert_days": True}, "registry.tls.cert_days", "whole number"),
    ("registry.tls", {"cert": "/c", "key": "/k", "ca": "/a", "cert_days": 90}, "registry.tls.cert_days",
     "a brought certificate's lifetime is its issuer's"),
]


@pytest.mark.parametrize(("key", "value", "where", "words"), BAD_VALUES,
                         ids=[f"{k}={v!r}"[:60] for k, v, _, _ in BAD_VALUES])
def test_grammar_refuses_with_one_line(tmp_path: Path, key: str, value: object, where: str,
                                      words: str) -> None:
    path = tmp_path / "inv.yaml"
    with pytest.raises(InventoryError) as info:
        parse_inventory(with_value(key, value), str(path), check_files=False)
    message = str(info.value)
    assert message.isprintable(), message  # one line: no newline, no other line break
    assert message.startswith(f"{path}:{info.value.line}: {where}: "), message
    assert words in message, message


@pytest.mark.parametrize(("text", "words"), [
    ("master: {address: 2024-13-45}\nnodes: [127.0.0.11]\n", "bad value: month must be in 1..12"),
    ("master: {address: 127.0.0.10}\nnodes: [127.0.0.11]\nimages: ['a\0']\n", "unacceptable character #x0000"),
    ('master: {address: 127.0.0.10}\nnodes: [127.0.0.11]\n"x\\ny": 1\n', "x\\ny: unknown key"),
    ("master: {address: 127.0.0.10}\nnodes: [127.0.0.11]\nimages: [!!int x]\n", "bad value"),
])
def test_yaml_level_errors_are_one_line(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse_inventory(text, str(tmp_path / "inv.yaml"))
    assert str(info.value).isprintable() and words in str(info.value), str(info.value)
    assert info.value.line is not None


def test_registry_settings_hold_docker_container_names() -> None:
    assert RegistrySettings(address="h", container="my.registry_1-x").container == "my.registry_1-x"
    for bad in ("r", "-r", "r;id", "r b", ""):
        with pytest.raises(ValueError, match="container name"):
            RegistrySettings(address="h", container=bad)


def test_hostile_username_cli_exit_2_one_line_before_any_host(tmp_path: Path) -> None:
    """The CLI refuses the inventory of issue 12 (2): exit 2, one line naming file, line and key."""
    path = tmp_path / "inventory.yaml"
    path.write_text(with_value("registry.auth.username", "u\ntouch /tmp/pwned"))
    proc = subprocess.run([sys.executable, "-m", "nodecfg", "registry-up", "-i", str(path)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PW": "secret"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"{path}:" in proc.stderr and "registry.auth.username" in proc.stderr


BUNDLE_BASE = "master: {address: 10.0.0.1}\nnodes: [{address: 10.0.0.2}]\n"


@pytest.mark.parametrize(("bundle", "error"), [
    ("bundle: {sources: {docker.io: 'http://127.0.0.1:5055', quay.io: 'https://mirror.corp/quay'}}", None),
    ("bundle: {sources: [x]}", "expected a mapping of upstream host to URL"),
    ("bundle: {sources: {'x y': 'http://127.0.0.1:5055'}}", "is not a registry host"),
    ("bundle: {sources: {docker.io: 'ftp://x'}}", "invalid URL"),
    ("bundle: {sources: {docker.io: 'http://a:5000', index.docker.io: 'http://b:5000'}}", "listed twice"),
    ("bundle: {source: {}}", "unknown key"),
])
def test_bundle_sources(bundle: str, error: str | None) -> None:
    from nodecfg.errors import InventoryError
    from nodecfg.inventory import parse_inventory

    text = BUNDLE_BASE + bundle + "\n"
    if error is None:
        inv = parse_inventory(text, "inv.yaml", check_files=False)
        assert inv.bundle_sources == (("docker.io", "http://127.0.0.1:5055"), ("quay.io", "https://mirror.corp/quay"))
        return
    with pytest.raises(InventoryError) as info:
        parse_inventory(text, "inv.yaml", check_files=False)
    assert error in str(info.value) and "\n" not in str(info.value)
    assert "inv.yaml:3" in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [
    (True, TlsSettings()),
    ({"ca_dir": "/srv/ca"}, TlsSettings(ca_dir=Path("/srv/ca"))),
    ({"ca_dir": "ca"}, "relative"),
    ({"cert": "/c", "key": "/k", "ca": "/a"}, TlsSettings(cert=Path("/c"), key=Path("/k"), ca=Path("/a"))),
    ({"cert_days": 90}, TlsSettings(cert_days=90)),
    ({"ca_dir": "/srv/ca", "cert_days": 3650}, TlsSettings(ca_dir=Path("/srv/ca"), cert_days=3650)),
])
def test_registry_tls(tmp_path: Path, value: object, expected: object) -> None:
    inv = parse_inventory(with_value("registry.tls", value), str(tmp_path / "inv.yaml"), check_files=False)
    assert inv.registry.scheme == "https"
    off = parse_inventory(with_value("registry.tls", False), str(tmp_path / "inv.yaml"), check_files=False)
    assert off.registry.tls is None and off.registry.scheme == "http"
    if expected == "relative":
        assert inv.registry.tls == TlsSettings(ca_dir=tmp_path / "ca")
    else:
        assert inv.registry.tls == expected


# ---------------------------------------------------------------------------------------------
# issue 22: registry replicas, and one S3 store behind them

S3_OK = {"endpoint": "http://10.0.0.30:8333", "bucket": "registry", "access_key_env": "S3_KEY",
         "secret_key_file": "s3.secret"}


def _replicated(tmp_path: Path, registry: dict[str, object]) -> str:
    data = yaml.safe_load(GOOD)
    data["registry"] = {**data["registry"], **registry}
    return yaml.safe_dump(data, sort_keys=False)


def test_replicas_and_their_endpoints(tmp_path: Path) -> None:
    nodes = yaml.safe_load(GOOD)["nodes"]
    first = nodes[0]["address"] if isinstance(nodes[0], dict) else nodes[0]
    inv = parse_inventory(_replicated(tmp_path, {"replicas": ["10.0.0.12", {"name": "cp3", "address": "10.0.0.13",
                                                                          "port": 2222}, first]}),
                          str(tmp_path / "i.yaml"), check_files=False)
    assert [(r.name, r.address) for r in inv.registry.replicas][:2] == [("10.0.0.12", "10.0.0.12"), ("cp3", "10.0.0.13")]
    assert inv.registry.replicas[1].ssh.port == 2222 and inv.registry.replicas[0].ssh.user == inv.master.ssh.user
    assert inv.registry_hosts[0] == inv.master and len(inv.registry_hosts) == 4  # a node may be a replica too
    port = inv.registry.port
    assert inv.replica_endpoints == (f"{inv.master.address}:{port}", f"10.0.0.12:{port}", f"10.0.0.13:{port}",
                                     f"{first}:{port}")
    alone = parse_inventory(GOOD, str(tmp_path / "i.yaml"), check_files=False)
    assert alone.replica_endpoints == (alone.registry.endpoint,) and alone.registry.storage is None


def test_s3_storage_keys_by_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s3.secret").write_text("s3cr3t-key\n")
    monkeypatch.setenv("S3_KEY", "AKIA-test")
    inv = parse_inventory(_replicated(tmp_path, {"storage": {"s3": S3_OK}}), str(tmp_path / "i.yaml"),
                          check_files=False)
    s3 = inv.registry.storage
    assert s3 is not None and s3.endpoint == "http://10.0.0.30:8333" and s3.bucket == "registry"
    assert s3.region == "us-east-1" and s3.secret_key_file == tmp_path / "s3.secret"
    assert s3.access_key().reveal() == "AKIA-test" and s3.secret_key().reveal() == "s3cr3t-key"
    assert "s3cr3t" not in repr(inv) and "AKIA" not in repr(inv)
    monkeypatch.delenv("S3_KEY")
    with pytest.raises(UsageError, match=r"registry\.storage\.s3\.access_key_env: environment variable S3_KEY is not set"):
        s3.access_key()


@pytest.mark.parametrize(("registry", "where", "words"), [
    ({"replicas": ["10.0.0.1"]}, "registry.replicas[0]", "is the master"),
    ({"replicas": [{"name": "m", "address": "10.0.0.99"}]}, "registry.replicas[0]", "is the master"),
    ({"replicas": ["10.0.0.12", "10.0.0.12"]}, "registry.replicas[1]", "listed twice (also registry.replicas[0])"),
    ({"replicas": [{"name": "a", "address": "10.0.0.12"}, {"name": "a", "address": "10.0.0.13"}]},
     "registry.replicas[1]", "listed twice"),
    ({"replicas": "kube_control_plane"}, "registry.replicas", "only in an Ansible inventory"),
    ({"replicas": ["10.0.0.12;id"]}, "registry.replicas[0].address", "not an IP address or host name"),
    ({"replicas": [{"address": "10.0.0.12", "colour": "red"}]}, "registry.replicas[0].colour", "unknown key"),
    ({"storage": {"s3": {**S3_OK, "bucket": None}}}, "registry.storage.s3.bucket", "expected a string"),
    ({"storage": {"s3": {k: v for k, v in S3_OK.items() if k != "bucket"}}}, "registry.storage.s3.bucket",
     "required key missing"),
    ({"storage": {"s3": {**S3_OK, "bucket": "Bad_Bucket"}}}, "registry.storage.s3.bucket", "not an S3 bucket"),
    ({"storage": {"s3": {**S3_OK, "endpoint": "10.0.0.30:8333"}}}, "registry.storage.s3.endpoint",
     "expected http(s)://host[:port]"),
    ({"storage": {"s3": {**S3_OK, "secret_key": "inline!"}}}, "registry.storage.s3.secret_key",
     "never written in the inventory: name it with secret_key_env"),
    ({"storage": {"s3": {**S3_OK, "access_key": "AKIA"}}}, "registry.storage.s3.access_key",
     "never written in the inventory"),
    ({"storage": {"s3": {**S3_OK, "access_key_file": "k"}}}, "registry.storage.s3",
     "exactly one of access_key_env or access_key_file"),
    ({"storage": {"s3": {**S3_OK, "regoin": "x"}}}, "registry.storage.s3.regoin", "did you mean 'region'"),
    ({"storage": {"filesystem": {}}}, "registry.storage.filesystem", "unknown key"),
    ({"storage": {"s3": S3_OK}, "data_dir": "/srv/reg"}, "registry.data_dir", "lives in registry.storage.s3"),
])
def test_replica_and_storage_mistakes_are_one_line(tmp_path: Path, registry: dict[str, object], where: str,
                                                   words: str) -> None:
    path = tmp_path / "inv.yaml"
    data = yaml.safe_load(GOOD)
    data["master"] = {"name": "m", "address": "10.0.0.1"}
    data["registry"] = {**data["registry"], **registry}
    with pytest.raises(InventoryError) as info:
        parse_inventory(yaml.safe_dump(data, sort_keys=False), str(path), check_files=False)
    message = str(info.value)
    assert message.isprintable(), message
    assert message.startswith(f"{path}:{info.value.line}: {where}: "), message
    assert words in message, message
