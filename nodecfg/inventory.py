"""Load and validate an inventory into frozen dataclasses.

Validation happens here, at the edge: everything after `load_inventory` trusts the objects it gets.
Every problem is an `InventoryError` whose message is one line naming the file, the line and the key
path (`nodes[1].address`), so the operator can jump straight to it.

Each value is checked against its real grammar, not just its type, because values end up in
configs and commands on the nodes (where they are quoted as well):

    address, registry.address   IPv4, IPv6 (no zone) or DNS host name
    registry.mirrors[]          registry host: DNS name | IPv4 | [IPv6], optional :port (1-65535)
    images[], registry.image    image references by the distribution grammar (images: by tag)
    registry.auth.username      1-255 printable characters, no ':'
    registry.auth.password_env  an environment variable name: [A-Za-z_][A-Za-z0-9_]*
    registry.data_dir           absolute, printable, no ':' (docker -v), no '.' or '..' parts, not /
    name                        [A-Za-z0-9][A-Za-z0-9_.-]*, 253 at most
    user, gateway's user        a login name: [A-Za-z0-9_][A-Za-z0-9_.@-]*, optional final '$'
    key, known_hosts, password_file, registry.tls.{ca_dir,cert,key,ca}
                                paths without control characters
    registry.tls                true/false, {ca_dir, cert_days}, or {cert, key, ca} (all three)
    registry.tls.cert_days      1-3650: the lifetime of the server certificate nodecfg makes
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from nodecfg.errors import InventoryError, UsageError
from nodecfg.images import is_dns_name, is_registry_host, parse_ref, plan_targets, reference_error

DEFAULT_INVENTORY = "inventory.yaml"
DEFAULT_MIRRORS = ("docker.io", "registry.k8s.io", "quay.io")
HOST_KEY_MODES = ("strict", "accept-new", "off")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,254}\$?")
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # docker's own rule
USERNAME_MAX = 255


def escape_unprintable(text: str) -> str:
    """`text` with its non-printable characters escaped, so a message stays on one line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def is_ip_or_host(text: str) -> bool:
    """An IPv4 address, an IPv6 address without zone, or a DNS host name."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return is_dns_name(text)
    return "%" not in text


class Secret:
    """A string that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class SshSettings:
    """How to reach a host. Inventory-level `ssh:` gives defaults; each host may override any key."""

    user: str = "root"
    port: int = 22
    key: Path | None = None
    become: bool = False
    connect_timeout: float = 10.0
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    host_key_checking: str = "accept-new"
    gateway: str | None = None  # "user@host:port" of a jump host
    explicit: frozenset[str] = frozenset()  # the keys the inventory set (they beat ~/.ssh/config)


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    ssh: SshSettings = field(default_factory=SshSettings)

    def __str__(self) -> str:
        return self.name if self.name == self.address else f"{self.name} ({self.address})"


def read_secret(key: str, env: str | None, file: Path | None) -> Secret:
    """A secret from where the inventory says it lives (`<key>_env` or `<key>_file`); a UsageError
    naming the key if it isn't there. A file's one trailing line break is not part of it."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise UsageError(f"{key}_env: environment variable {env} is not set")
        return Secret(value)
    assert file is not None
    try:
        value = file.read_text().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"{key}_file: cannot read {file}: {exc.strerror}") from None
    if not value:
        raise UsageError(f"{key}_file: {file} is empty")
    return Secret(value)


@dataclass(frozen=True)
class RegistryAuth:
    username: str
    password_env: str | None = None
    password_file: Path | None = None

    def password(self) -> Secret:
        """Read the password from where the inventory says it lives; a UsageError if it isn't there."""
        return read_secret("registry.auth.password", self.password_env, self.password_file)


@dataclass(frozen=True)
class S3Storage:
    """`registry.storage.s3`: every replica serves one bucket (MinIO, SeaweedFS, Ceph RGW, AWS). The
    keys are named by an environment variable or a file, never written in the inventory."""

    endpoint: str  # http(s)://host[:port]
    bucket: str
    region: str = "us-east-1"
    access_key_env: str | None = None
    access_key_file: Path | None = None
    secret_key_env: str | None = None
    secret_key_file: Path | None = None

    def access_key(self) -> Secret:
        return read_secret("registry.storage.s3.access_key", self.access_key_env, self.access_key_file)

    def secret_key(self) -> Secret:
        return read_secret("registry.storage.s3.secret_key", self.secret_key_env, self.secret_key_file)


@dataclass(frozen=True)
class TlsSettings:
    """`registry.tls`: generated (ca_dir) or brought (cert, key, ca); made and read by nodecfg/registry/tls.py."""

    ca_dir: Path | None = None  # generated: where the CA lives (None: the default)
    cert: Path | None = None  # brought: all three set
    key: Path | None = None
    ca: Path | None = None
    cert_days: int | None = None  # generated: the server certificate's lifetime (None: tls.SERVER_DAYS)

    @property
    def provided(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True)
class RegistrySettings:
    address: str
    port: int = 5000
    mirrors: tuple[str, ...] = DEFAULT_MIRRORS
    auth: RegistryAuth | None = None
    data_dir: str = "/var/lib/registry"
    image: str = "registry:2"
    container: str = "registry"
    tls: TlsSettings | None = None  # None: plain HTTP
    replicas: tuple[Host, ...] = ()  # the hosts besides the master that run a replica
    storage: S3Storage | None = None  # None: each replica keeps its own data in data_dir
    explicit: frozenset[str] = frozenset()  # the keys the inventory set (the rest are defaults)

    def __post_init__(self) -> None:
        # not an inventory key, but it lands in commands on the master: hold it to docker's rule
        if not CONTAINER_NAME.fullmatch(self.container):
            raise ValueError(f"not a docker container name: {self.container!r}")

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def endpoint(self) -> str:
        """host:port as nodes write it in configs (IPv6 in brackets): where pulls by registry path go."""
        return endpoint_of(self.address, self.port)


def endpoint_of(address: str, port: int) -> str:
    """host:port as nodes write it in configs (IPv6 in brackets)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True)
class Inventory:
    master: Host
    nodes: tuple[Host, ...]
    registry: RegistrySettings
    images: tuple[str, ...] = ()
    path: Path | None = None
    bundle_sources: tuple[tuple[str, str], ...] = ()  # (upstream host, URL) for `bundle create`

    @property
    def registry_hosts(self) -> tuple[Host, ...]:
        """Every host that runs a replica of the registry: the master first."""
        return (self.master, *self.registry.replicas)

    @property
    def replica_endpoints(self) -> tuple[str, ...]:
        """host:port of each replica, the master's first. Without replicas, the registry's endpoint
        alone (registry.address may name the master otherwise); with them, each host's own address
        (registry.address then names what pulls by registry path use: a DNS name or VIP in front)."""
        if not self.registry.replicas:
            return (self.registry.endpoint,)
        return tuple(endpoint_of(h.address, self.registry.port) for h in self.registry_hosts)

    def replicas_for(self, host: Host) -> tuple[str, ...]:
        """The replica endpoints in `host`'s own order, so the load spreads: node i (its index in
        `nodes`, whatever --limit selects) starts at replica i mod N, then the others in turn. ()
        without replicas: every runtime then names registry.endpoint alone, as it always has."""
        if not self.registry.replicas:
            return ()
        endpoints = self.replica_endpoints
        start = self.nodes.index(host) % len(endpoints) if host in self.nodes else 0
        return endpoints[start:] + endpoints[:start]

    def with_connect_timeout(self, seconds: float) -> Inventory:
        """The same inventory with every host's SSH connect timeout set (the --timeout flag)."""

        def patch(h: Host) -> Host:
            return replace(h, ssh=replace(h.ssh, connect_timeout=seconds))

        return replace(self, master=patch(self.master), nodes=tuple(patch(n) for n in self.nodes),
                       registry=replace(self.registry, replicas=tuple(patch(r) for r in self.registry.replicas)))

    def select(self, names: list[str] | None) -> tuple[Host, ...]:
        """The nodes named by --limit (by name or address), in inventory order."""
        if not names:
            return self.nodes
        known = {h.name: h for h in self.nodes} | {h.address: h for h in self.nodes}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(f"--limit: no node named {unknown[0]!r}{_did_you_mean(unknown[0], known)}")
        wanted = {known[n] for n in names}
        return tuple(h for h in self.nodes if h in wanted)


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


@dataclass
class _Doc:
    """The parsed YAML plus the line (1-based) where each key path starts."""

    data: Any
    lines: dict[str, int]
    path: str
    names: dict[str, str] = field(default_factory=dict)  # key path -> how the file spells it


def _compose(text: str, path: str) -> _Doc:
    """Parse the file: nodecfg's own YAML, or a kubespray/Ansible inventory (YAML or INI)."""
    from nodecfg import ansible_inventory as ans

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        if ans.looks_like_ini(text):
            return _from_ansible(ans.parse_ini_groups(text, path), path)
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise InventoryError(f"YAML syntax error: {escape_unprintable(problem)}", path=path, line=line) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise InventoryError(f"YAML error: unacceptable character {char} ({exc.reason})",
                             path=path, line=line) from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"YAML error: {escape_unprintable(str(exc))}", path=path) from None
    if node is None:
        raise InventoryError("the inventory is empty", path=path)
    lines: dict[str, int] = {}
    data = _to_python(node, "", lines, path)
    if not isinstance(data, dict) and ans.looks_like_ini(text):
        return _from_ansible(ans.parse_ini_groups(text, path), path)
    if ans.looks_like_ansible(data):
        return _from_ansible(ans.parse_yaml_groups(data, lines, path), path)
    return _Doc(data, lines, path)


def _from_ansible(parsed: Any, path: str) -> _Doc:
    from nodecfg import ansible_inventory as ans

    data, lines, names = ans.to_nodecfg(parsed, path)
    return _Doc(data, {k: v for k, v in lines.items() if v}, path, names)


def _to_python(node: yaml.Node, key: str, lines: dict[str, int], path: str) -> Any:
    lines[key] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            k = yaml.SafeLoader.construct_scalar(yaml.SafeLoader(""), knode) \
                if isinstance(knode, yaml.ScalarNode) else None
            if not isinstance(k, str):
                raise InventoryError("mapping keys must be plain strings", path=path,
                                     line=knode.start_mark.line + 1, key=escape_unprintable(key) or None)
            sub = f"{key}.{k}" if key else k
            if k in out:
                raise InventoryError("duplicate key", path=path, line=knode.start_mark.line + 1,
                                     key=escape_unprintable(sub))
            out[k] = _to_python(vnode, sub, lines, path)
            lines[sub] = knode.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, f"{key}[{i}]", lines, path) for i, v in enumerate(node.value)]
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "cannot be read"
        raise InventoryError(f"bad value: {escape_unprintable(problem)}", path=path,
                             line=node.start_mark.line + 1, key=escape_unprintable(key) or None) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        # e.g. an implicit date that is no date (2024-13-45): the constructor raises ValueError
        raise InventoryError(f"bad value: {escape_unprintable(str(exc))}", path=path,
                             line=node.start_mark.line + 1, key=escape_unprintable(key) or None) from None


# ---------------------------------------------------------------------------------------------
# schema checks


class _Checker:
    """Small typed accessors that raise InventoryError with file, line and key path."""

    def __init__(self, doc: _Doc) -> None:
        self.doc = doc

    def err(self, key: str, message: str) -> InventoryError:
        line = self.doc.lines.get(key)
        probe = key
        while line is None and probe:
            parent = re.sub(r"(\.[^.\[\]]+|\[\d+\])$", "", probe)
            if parent == probe:
                break
            probe, line = parent, self.doc.lines.get(parent)
        return InventoryError(escape_unprintable(message), path=self.doc.path, line=line,
                              key=escape_unprintable(self.doc.names.get(key, key)))

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.err(key, f"expected a mapping, got {_kind(value)}")
        for k in value:
            if k not in allowed:
                sub = f"{key}.{k}" if key else k
                raise self.err(sub, f"unknown key{_did_you_mean(k, allowed)}")
        return value

    def string(self, value: Any, key: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.err(key, f"expected a string, got {_kind(value)}")
        text = str(value).strip()
        if not text:
            raise self.err(key, "must not be empty")
        return text

    def integer(self, value: Any, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.err(key, f"expected a whole number, got {_kind(value)}")
        if not lo <= value <= hi:
            raise self.err(key, f"must be between {lo} and {hi}, got {value}")
        return value

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.err(key, f"expected a positive number of seconds, got {value!r}")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.err(key, f"expected true or false, got {value!r}")
        return value

    def address(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        if not is_ip_or_host(text):
            raise self.err(key, f"not an IP address or host name: {text!r}")
        return text

    def matching(self, value: Any, key: str, pattern: re.Pattern[str], what: str) -> str:
        text = self.string(value, key)
        if not pattern.fullmatch(text):
            raise self.err(key, f"{what}: {text!r}")
        return text

    def string_list(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.err(key, f"expected a list, got {_kind(value)}")
        return tuple(self.string(v, f"{key}[{i}]") for i, v in enumerate(value))


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}", bool: f"{value!r}",
            int: f"the number {value!r}", float: f"the number {value!r}"}.get(type(value), type(value).__name__)


def _did_you_mean(word: str, choices: Any) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


_SSH_KEYS = ("user", "port", "key", "become", "connect_timeout", "known_hosts", "host_key_checking",
             "gateway")
_HOST_KEYS = ("name", "address", *_SSH_KEYS)


def _ssh_overrides(c: _Checker, raw: dict[str, Any], key: str, base_dir: Path) -> dict[str, Any]:
    """Validate the SSH keys present in `raw` (an `ssh:` block or a host entry)."""
    out: dict[str, Any] = {}
    def k(name: str) -> str:
        return f"{key}.{name}" if key else name

    parsers: dict[str, Callable[[Any, str], Any]] = {
        "user": lambda v, kk: c.matching(v, kk, _USER, "not a login name"),
        "port": lambda v, kk: c.integer(v, kk, 1, 65535),
        "key": lambda v, kk: _path(c, v, kk, base_dir),
        "become": c.boolean,
        "connect_timeout": c.number,
        "known_hosts": lambda v, kk: _path(c, v, kk, base_dir),
        "host_key_checking": lambda v, kk: _choice(c, v, kk, HOST_KEY_MODES),
        "gateway": lambda v, kk: _gateway(c, v, kk),
    }
    for name, parse in parsers.items():
        if name in raw:
            out[name] = parse(raw[name], k(name))
    return out


def split_gateway(spec: str) -> tuple[str, str, int | None]:
    """A jump host as `ssh -J` takes it, `[user@]host[:port]` (host may be `[v6]`) ->
    (user or "", host, port or None). ValueError when it is not one."""
    user, at, rest = spec.rpartition("@")
    if at and not _USER.fullmatch(user):
        raise ValueError(spec)
    port_text = ""
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail and not tail.startswith(":"):
            raise ValueError(spec)
        port_text = tail[1:]
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host = rest
    if port_text and not (port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise ValueError(spec)
    if not is_ip_or_host(host) or (port_text and not port_text.isascii()):
        raise ValueError(spec)
    return user, host, int(port_text) if port_text else None


def _gateway(c: _Checker, value: Any, key: str) -> str:
    text = c.string(value, key)
    try:
        split_gateway(text)
    except ValueError:
        raise c.err(key, f"expected a jump host as [user@]host[:port], got {text!r}") from None
    return text


def _path(c: _Checker, value: Any, key: str, base_dir: Path) -> Path:
    """A path on this machine ($VARS and ~ expanded, relative to the inventory's folder)."""
    text = os.path.expandvars(c.string(value, key))
    if not text.isprintable():
        raise c.err(key, f"a path without control characters, got {text!r}")
    p = Path(text).expanduser()
    return p if p.is_absolute() else base_dir / p


def _remote_dir(c: _Checker, value: Any, key: str) -> str:
    """A directory on a host, as it goes into commands and `docker run -v DIR:...`."""
    text = c.string(value, key)
    if not text.startswith("/") or not text.isprintable() or len(text) > 4095:
        raise c.err(key, f"expected an absolute path without control characters, got {text!r}")
    if ":" in text:
        raise c.err(key, f"must not contain ':' (docker's volume separator): {text!r}")
    parts = [p for p in text.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise c.err(key, f"must not contain '.' or '..' parts: {text!r}")
    if not parts:
        raise c.err(key, f"must be an absolute directory other than /: {text!r}")
    return "/" + "/".join(parts)


def _choice(c: _Checker, value: Any, key: str, choices: tuple[str, ...]) -> str:
    text = c.string(value, key)
    if text not in choices:
        raise c.err(key, f"must be one of {', '.join(choices)}, got {text!r}{_did_you_mean(text, choices)}")
    return text


def _host(c: _Checker, raw: Any, key: str, defaults: SshSettings, base_dir: Path) -> Host:
    if isinstance(raw, str):  # a bare address
        raw = {"address": raw}
    entry = c.mapping(raw, key, _HOST_KEYS)
    if "address" not in entry:
        raise c.err(f"{key}.address", "required key missing")
    address = c.address(entry["address"], f"{key}.address")
    name = address
    if "name" in entry:
        name = c.matching(entry["name"], f"{key}.name", _NAME,
                          "names may hold letters, digits, '.', '_' and '-'")
    ov = _ssh_overrides(c, entry, key, base_dir)
    ssh = replace(defaults, **ov, explicit=defaults.explicit | frozenset(ov))
    return Host(name=name, address=address, ssh=ssh)


def _auth(c: _Checker, raw: Any, base_dir: Path) -> RegistryAuth:
    entry = c.mapping(raw, "registry.auth", ("username", "password_env", "password_file"))
    if "username" not in entry:
        raise c.err("registry.auth.username", "required key missing")
    username = c.string(entry["username"], "registry.auth.username")
    if ":" in username:
        raise c.err("registry.auth.username", "must not contain ':'")
    if not username.isprintable():
        raise c.err("registry.auth.username",
                    f"must not contain control characters or line breaks: {username!r}")
    if len(username) > USERNAME_MAX:
        raise c.err("registry.auth.username", f"longer than {USERNAME_MAX} characters")
    has_env, has_file = "password_env" in entry, "password_file" in entry
    if has_env == has_file:
        raise c.err("registry.auth", "give exactly one of password_env or password_file")
    if has_env:
        env = c.matching(entry["password_env"], "registry.auth.password_env", _ENV_NAME,
                         "not an environment variable name")
        return RegistryAuth(username=username, password_env=env)
    return RegistryAuth(username=username,
                        password_file=_path(c, entry["password_file"], "registry.auth.password_file", base_dir))


def _tls(c: _Checker, raw: Any, base_dir: Path) -> TlsSettings | None:
    """`tls: true` (a generated CA), `tls: {ca_dir: D, cert_days: N}`, or `tls: {cert: F, key: F, ca: F}`."""
    if isinstance(raw, bool):
        return TlsSettings() if raw else None
    entry = c.mapping(raw, "registry.tls", ("ca_dir", "cert_days", "cert", "key", "ca"))
    brought = [k for k in ("cert", "key", "ca") if k in entry]
    if "ca_dir" in entry and brought:
        raise c.err("registry.tls", "give either ca_dir (a generated CA) or cert, key and ca (your own), not both")
    if brought:
        if "cert_days" in entry:
            raise c.err("registry.tls.cert_days", "sets the lifetime of the certificate nodecfg makes; a brought "
                        "certificate's lifetime is its issuer's (leave out cert_days, or cert, key and ca)")
        if len(brought) != 3:
            lack = next(k for k in ("cert", "key", "ca") if k not in entry)
            raise c.err(f"registry.tls.{lack}", "required key missing (cert, key and ca go together)")
        cert, key, ca = (_path(c, entry[k], f"registry.tls.{k}", base_dir) for k in ("cert", "key", "ca"))
        return TlsSettings(cert=cert, key=key, ca=ca)
    days = c.integer(entry["cert_days"], "registry.tls.cert_days", 1, 3650) if "cert_days" in entry else None
    if "ca_dir" in entry:
        return TlsSettings(ca_dir=_path(c, entry["ca_dir"], "registry.tls.ca_dir", base_dir), cert_days=days)
    return TlsSettings(cert_days=days)


def _replicas(c: _Checker, raw: Any, master: Host, defaults: SshSettings, base_dir: Path) -> tuple[Host, ...]:
    """`registry.replicas`: hosts in the form `nodes` takes; the master is not one of them (it runs a
    replica already), none twice. A replica may be a node too."""
    if isinstance(raw, str):
        raise c.err("registry.replicas", "expected a list of hosts (a group's name is taken only in an "
                    "Ansible inventory's nodecfg: mapping)")
    if not isinstance(raw, list):
        raise c.err("registry.replicas", f"expected a list of hosts, got {_kind(raw)}")
    replicas = tuple(_host(c, r, f"registry.replicas[{i}]", defaults, base_dir) for i, r in enumerate(raw))
    seen: dict[str, int] = {}
    for i, r in enumerate(replicas):
        key = f"registry.replicas[{i}]"
        if r.address == master.address or r.name == master.name:
            raise c.err(key, f"{r} is the master, which runs the registry already: list only the other hosts")
        for word in dict.fromkeys((r.address, r.name)):
            if word in seen:
                raise c.err(key, f"{word} is listed twice (also registry.replicas[{seen[word]}])")
            seen[word] = i
    return replicas


_S3_KEYS = ("endpoint", "bucket", "region", "access_key_env", "access_key_file", "secret_key_env",
            "secret_key_file")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rule


def _storage(c: _Checker, raw: Any, base_dir: Path) -> S3Storage:
    """`registry.storage: {s3: {...}}`: the bucket every replica serves."""
    entry = c.mapping(raw, "registry.storage", ("s3",))
    if "s3" not in entry:
        raise c.err("registry.storage", "expected s3: {endpoint, bucket, ...} (leave storage out for each "
                    "replica's own data_dir)")
    key = "registry.storage.s3"
    raw_s3 = entry["s3"]
    if isinstance(raw_s3, dict):
        for inline in ("access_key", "secret_key", "accesskey", "secretkey"):
            if inline in raw_s3:
                base = inline.replace("key", "_key") if "_" not in inline else inline
                raise c.err(f"{key}.{inline}", f"a secret is never written in the inventory: name it with "
                            f"{base}_env (an environment variable) or {base}_file")
    s3 = c.mapping(raw_s3, key, _S3_KEYS)
    for required in ("endpoint", "bucket"):
        if required not in s3:
            raise c.err(f"{key}.{required}", "required key missing")
    endpoint = c.string(s3["endpoint"], f"{key}.endpoint")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.username:
        raise c.err(f"{key}.endpoint", f"expected http(s)://host[:port], got {endpoint!r}")
    kwargs: dict[str, Any] = {
        "endpoint": endpoint.rstrip("/"),
        "bucket": c.matching(s3["bucket"], f"{key}.bucket", _BUCKET,
                             "not an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')"),
    }
    if "region" in s3:
        kwargs["region"] = c.matching(s3["region"], f"{key}.region", _NAME, "not a region name")
    for secret in ("access_key", "secret_key"):
        has_env, has_file = f"{secret}_env" in s3, f"{secret}_file" in s3
        if has_env == has_file:
            raise c.err(f"{key}", f"give exactly one of {secret}_env or {secret}_file")
        if has_env:
            kwargs[f"{secret}_env"] = c.matching(s3[f"{secret}_env"], f"{key}.{secret}_env", _ENV_NAME,
                                                 "not an environment variable name")
        else:
            kwargs[f"{secret}_file"] = _path(c, s3[f"{secret}_file"], f"{key}.{secret}_file", base_dir)
    return S3Storage(**kwargs)


def _registry(c: _Checker, raw: Any, master: Host, defaults: SshSettings, base_dir: Path) -> RegistrySettings:
    entry = c.mapping(raw, "registry", ("port", "address", "mirrors", "auth", "data_dir", "image", "tls",
                                        "replicas", "storage"))
    kwargs: dict[str, Any] = {"address": master.address}
    if "port" in entry:
        kwargs["port"] = c.integer(entry["port"], "registry.port", 1, 65535)
    if "address" in entry:
        kwargs["address"] = c.address(entry["address"], "registry.address")
    if "mirrors" in entry:
        mirrors = c.string_list(entry["mirrors"], "registry.mirrors")
        for i, m in enumerate(mirrors):
            if not is_registry_host(m):
                raise c.err(f"registry.mirrors[{i}]",
                            f"expected a registry host like docker.io or host:port, got {m!r}")
        if len(set(mirrors)) != len(mirrors):
            dup = next(m for m in mirrors if mirrors.count(m) > 1)
            raise c.err("registry.mirrors", f"{dup!r} is listed twice")
        kwargs["mirrors"] = mirrors
    if "auth" in entry:
        kwargs["auth"] = _auth(c, entry["auth"], base_dir)
    if "data_dir" in entry:
        kwargs["data_dir"] = _remote_dir(c, entry["data_dir"], "registry.data_dir")
    if "tls" in entry:
        kwargs["tls"] = _tls(c, entry["tls"], base_dir)
    if "image" in entry:
        image = c.string(entry["image"], "registry.image")
        problem = reference_error(image)
        if problem:
            raise c.err("registry.image", f"{problem} in {image!r}")
        kwargs["image"] = image
    if "replicas" in entry:
        kwargs["replicas"] = _replicas(c, entry["replicas"], master, defaults, base_dir)
    if "storage" in entry:
        if "data_dir" in entry:
            raise c.err("registry.data_dir", "the registry's data lives in registry.storage.s3's bucket: "
                        "drop data_dir, or storage to keep each replica's data in data_dir")
        kwargs["storage"] = _storage(c, entry["storage"], base_dir)
    return RegistrySettings(**kwargs, explicit=frozenset(entry) & {"port", "data_dir", "auth", "image"})


def _images(c: _Checker, raw: Any) -> tuple[str, ...]:
    """Image references by tag (distribution grammar); two that would land on one target refused."""
    images = c.string_list(raw, "images")
    for i, ref in enumerate(images):
        try:
            parse_ref(ref)
        except UsageError as exc:
            raise c.err(f"images[{i}]", str(exc)) from None
    try:
        plan_targets(images)
    except UsageError as exc:
        raise c.err("images", str(exc)) from None
    return images


def parse_inventory(text: str, path: str = DEFAULT_INVENTORY, *, check_files: bool = True) -> Inventory:
    """Validate inventory text. Pure apart from `check_files` (does the SSH key exist?)."""
    doc = _compose(text, path)
    c = _Checker(doc)
    base_dir = Path(path).resolve().parent
    top = c.mapping(doc.data, "", ("ssh", "registry", "images", "master", "nodes", "bundle"))
    defaults = SshSettings()
    if "ssh" in top:
        c.mapping(top["ssh"], "ssh", _SSH_KEYS)
        ov = _ssh_overrides(c, top["ssh"], "ssh", base_dir)
        defaults = replace(defaults, **ov, explicit=frozenset(ov))
    if "master" not in top:
        raise InventoryError("required key missing", path=path, line=None, key="master")
    master = _host(c, top["master"], "master", defaults, base_dir)
    if "nodes" not in top:
        raise InventoryError("required key missing", path=path, line=None, key="nodes")
    raw_nodes = top["nodes"]
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise c.err("nodes", "expected a non-empty list of hosts")
    nodes = tuple(_host(c, raw, f"nodes[{i}]", defaults, base_dir) for i, raw in enumerate(raw_nodes))
    seen: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.address in seen:
            raise c.err(f"nodes[{i}].address",
                        f"duplicate address {node.address} (also nodes[{seen[node.address]}])")
        if node.name in seen_names:
            raise c.err(f"nodes[{i}]", f"duplicate name {node.name} (also nodes[{seen_names[node.name]}])")
        seen[node.address] = i
        seen_names[node.name] = i
    registry = _registry(c, top.get("registry", {}), master, defaults, base_dir)
    images = _images(c, top["images"]) if "images" in top else ()
    bundle_sources = _bundle_sources(c, top["bundle"]) if "bundle" in top else ()
    if check_files:
        for key, host in [("master", master), *((f"nodes[{i}]", n) for i, n in enumerate(nodes)),
                          *((f"registry.replicas[{i}]", r) for i, r in enumerate(registry.replicas))]:
            if host.ssh.key is not None and not host.ssh.key.is_file():
                where = f"{key}.key" if "key" in _raw_host(top, key) else "ssh.key"
                raise c.err(where, f"SSH key file not found: {host.ssh.key}")
    return Inventory(master=master, nodes=nodes, registry=registry, images=images,
                     path=Path(path), bundle_sources=bundle_sources)


def _bundle_sources(c: _Checker, raw: Any) -> tuple[tuple[str, str], ...]:
    """`bundle: {sources: {upstream-host: URL}}`: where `bundle create` fetches each upstream from."""
    from nodecfg.bundle.sources import canonical_host, source_problem

    bundle = c.mapping(raw, "bundle", ("sources",))
    sources = bundle.get("sources", {})
    if not isinstance(sources, dict):
        raise c.err("bundle.sources", f"expected a mapping of upstream host to URL, got {_kind(sources)}")
    out: dict[str, str] = {}
    for host, url in sources.items():
        problem = source_problem(host, url)
        if problem:
            raise c.err(f"bundle.sources.{host}", problem)
        name = canonical_host(host)
        if name in out:
            raise c.err(f"bundle.sources.{host}", f"{name} is listed twice (docker.io, index.docker.io "
                        "and registry-1.docker.io are one registry)")
        out[name] = url.strip()
    return tuple(out.items())


def _raw_host(top: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    if key.startswith("registry.replicas["):
        raw = top["registry"]["replicas"][int(key[len("registry.replicas["):-1])]
    else:
        raw = top["master"] if key == "master" else top["nodes"][int(key[6:-1])]
    return raw if isinstance(raw, dict) else {}


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Read and validate the inventory file at `path`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError("inventory file not found (use -i FILE)", path=str(p)) from None
    except IsADirectoryError:
        raise InventoryError("is a directory, not an inventory file", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"cannot read: {exc}", path=str(p)) from None
    if not text.strip():
        raise InventoryError("the inventory is empty", path=str(p))
    return parse_inventory(text, str(p))
