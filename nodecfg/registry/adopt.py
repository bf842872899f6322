"""What registry-up may do to what it finds on the master: pure decisions, no SSH.

nodecfg's first users already run the manual recipe's registry
(`docker run -d -p 5000:5000 --restart=always --name registry -v /mnt/registry:/var/lib/registry
registry:2`). Such a container is *foreign*: nodecfg did not make it, so nodecfg never removes it,
never points it at another data directory and never strips or adds its login on its own.

- own: labelled `io.nodecfg.managed=1` at creation (earlier versions left only
  `nodecfg.registry.spec=<digest>`, which counts too). Brought to the spec as before; a data
  directory change needs `registry.data_dir` set in the inventory.
- foreign, and safe to adopt: same port, its data directory kept (the inventory leaves
  `registry.data_dir` unset, or names the same one), a login only if the inventory's credentials
  work. It is left as it is (started if stopped), and one line says so.
- foreign otherwise: refused, with the reason and the one setting that resolves it (or `--replace`,
  which recreates it as nodecfg's own, its data directory kept unless the inventory names another).
- the port held by something that is not a registry: refused, naming the container or the process.

`plan_container()` is the whole decision table; tests/unit/test_adopt.py holds it as fixtures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

MANAGED_LABEL = "io.nodecfg.managed"
LEGACY_LABEL = "nodecfg.registry.spec"  # what nodecfg before labels-for-ownership set
DATA = "/var/lib/registry"

Action = Literal["keep", "start", "create", "recreate", "restart", "adopt", "refuse"]


@dataclass(frozen=True)
class Existing:
    """One container as `docker container inspect` shows it, reduced to what the decision needs."""

    name: str
    id: str
    image: str  # the name it was run with (Config.Image)
    image_id: str
    running: bool
    own: bool
    ports: tuple[str, ...]  # host ports bound to the container's 5000/tcp (all ports if none)
    data_source: str  # host path of the /var/lib/registry mount ("" none)
    data_spec: str  # what `-v X:/var/lib/registry` takes to reuse it: the bind path or volume name
    auth: bool  # REGISTRY_AUTH=htpasswd
    auth_mounted: bool  # nodecfg's htpasswd directory at /auth
    restart_always: bool
    tls: bool = False  # serves HTTPS (REGISTRY_HTTP_TLS_CERTIFICATE)
    tls_mounted: bool = False  # nodecfg's TLS directory at /certs
    storage: str = ""  # "" its filesystem; else `storage_name()` of what it serves from (an S3 bucket)
    deletes: bool = False  # REGISTRY_STORAGE_DELETE_ENABLED=true: manifests can be deleted (registry-prune)

    @property
    def looks_like_registry(self) -> bool:
        return bool(self.data_source) or "5000/tcp" in self.ports or "registry" in self.image


def existing(inspect: dict[str, Any], auth_dir: str, tls_dir: str = "") -> Existing:
    """Reduce one `docker container inspect` object."""
    cfg = inspect.get("Config") or {}
    host = inspect.get("HostConfig") or {}
    labels = cfg.get("Labels") or {}
    env = cfg.get("Env") or []
    bindings = host.get("PortBindings") or {}
    ports = tuple(sorted({str(b.get("HostPort")) for b in bindings.get("5000/tcp") or [] if b.get("HostPort")}))
    if not ports:  # a registry published from another container port still holds a host port
        ports = tuple(sorted({str(b.get("HostPort")) for bs in bindings.values() for b in bs or []
                              if b.get("HostPort")}))
    source = spec = ""
    auth_mounted = tls_mounted = False
    for m in inspect.get("Mounts") or []:
        if tls_dir and m.get("Destination") == "/certs" and m.get("Source") == tls_dir:
            tls_mounted = True
        if m.get("Destination") == DATA:
            source = str(m.get("Source") or "")
            spec = str(m.get("Name") or source) if m.get("Type") == "volume" else source
        if m.get("Destination") == "/auth" and m.get("Source") == auth_dir:
            auth_mounted = True
    if not source:  # older inspect output (and the unit fixtures) carry only Binds
        for b in host.get("Binds") or []:
            parts = b.split(":")
            if parts[1:2] == [DATA]:
                source = spec = parts[0]
    if not auth_mounted:
        auth_mounted = any(b.split(":")[:2] == [auth_dir, "/auth"] for b in host.get("Binds") or [])
    return Existing(
        name=str(inspect.get("Name") or "").lstrip("/"),
        id=str(inspect.get("Id") or ""),
        image=str(cfg.get("Image") or ""),
        image_id=str(inspect.get("Image") or ""),
        running=bool((inspect.get("State") or {}).get("Running")),
        own=labels.get(MANAGED_LABEL) == "1" or LEGACY_LABEL in labels,
        ports=ports,
        data_source=source,
        data_spec=spec,
        auth="REGISTRY_AUTH=htpasswd" in env,
        auth_mounted=auth_mounted,
        restart_always=(host.get("RestartPolicy") or {}).get("Name") == "always",
        tls=any(str(e).startswith("REGISTRY_HTTP_TLS_CERTIFICATE=") for e in env),
        storage=_storage_of(env),
        deletes=any(str(e).lower() == "registry_storage_delete_enabled=true" for e in env),
        tls_mounted=tls_mounted or (bool(tls_dir) and any(b.split(":")[:2] == [tls_dir, "/certs"]
                                                          for b in host.get("Binds") or [])),
    )


def storage_name(driver: str, endpoint: str, bucket: str) -> str:
    """What a registry serves from, in words that compare: "s3 http://10.0.0.30:8333/registry"."""
    return f"{driver} {endpoint.rstrip('/')}/{bucket}"


def _storage_of(env: list[Any]) -> str:
    """A container's storage from its environment ("" the filesystem driver, the default)."""
    values = dict(str(e).partition("=")[::2] for e in env)
    if values.get("REGISTRY_STORAGE", "filesystem") in ("", "filesystem"):
        return ""
    driver = values["REGISTRY_STORAGE"]
    return storage_name(driver, values.get(f"REGISTRY_STORAGE_{driver.upper()}_REGIONENDPOINT", ""),
                        values.get(f"REGISTRY_STORAGE_{driver.upper()}_BUCKET", ""))


@dataclass(frozen=True)
class Want:
    """The inventory's registry, and which of its keys the inventory set (the rest are defaults)."""

    name: str
    port: int
    data_dir: str
    auth: bool
    image_id: str  # the registry image nodecfg would run ("" unknown)
    image: str = "registry:2"
    explicit: frozenset[str] = frozenset()  # of "port", "data_dir", "auth"
    replace: bool = False  # registry-up --replace
    tls: bool = False  # registry.tls: serve HTTPS with nodecfg's certificate
    storage: str = ""  # registry.storage as `storage_name()` ("": each replica's own data_dir)


@dataclass(frozen=True)
class Found:
    """What is on the master: the container under the name, running containers publishing the
    port, a process listening on it, the registry's answers, repositories per data directory."""

    named: Existing | None = None
    holders: tuple[Existing, ...] = ()
    process: str = ""  # e.g. 'nginx (pid 812)' when no container holds the port
    http_status: int = 0  # GET /v2/ without credentials (0: no HTTP answer)
    auth_status: int = 0  # GET /v2/ with the inventory's credentials (0: not asked)
    repositories: dict[str, int] = field(default_factory=dict)  # data dir -> count (absent: -1)


@dataclass(frozen=True)
class ContainerPlan:
    action: Action
    reasons: tuple[str, ...] = ()
    name: str = ""  # the container acted on (an adopted one may have another name)
    data_dir: str = ""  # the data directory (bind path or volume) the registry keeps or gets
    adopted: Existing | None = None
    note: str = ""  # the one line said about an adoption or a kept setting
    refusal: str = ""  # action == "refuse": why, and the one setting that resolves it

    @property
    def changes_container(self) -> bool:
        return self.action in ("start", "create", "recreate", "restart")

    @property
    def needs_image(self) -> bool:
        return self.action in ("create", "recreate")


def repos_text(n: int) -> str:
    return "no repositories" if n <= 0 else f"{n} repositor{'y' if n == 1 else 'ies'}"


def _holder_text(found: Found, exclude: str = "") -> str:
    """What holds the port, in words ("" nothing): a container by name, else a process."""
    for h in found.holders:
        if h.name != exclude:
            return f"container {h.name!r} ({h.image or h.image_id[:19]})"
    return f"process {found.process}" if found.process else ""


def _port_refusal(want: Want, holder: str) -> ContainerPlan:
    return ContainerPlan("refuse", refusal=(
        f"port {want.port} on the master is held by {holder}; set registry.port to a free port "
        "(or stop what holds it)"))


def _spec_reasons(want: Want, c: Existing, data_dir: str) -> list[str]:
    reasons = []
    if want.image_id and c.image_id != want.image_id:
        reasons.append("registry image changed")
    if c.ports != (str(want.port),):
        reasons.append(f"port {','.join(c.ports) or 'none'} -> {want.port}")
    if not want.storage and c.data_spec != data_dir:  # with S3, registry:2's anonymous volume is no matter
        reasons.append(f"data directory {c.data_spec or '(none)'} -> {data_dir or '(none: ' + want.storage + ')'}")
    if c.storage != want.storage:
        reasons.append(f"storage {c.storage or 'its data directory'} -> {want.storage or data_dir}")
    if not c.restart_always:
        reasons.append("restart policy is not always")
    if c.auth != want.auth:
        reasons.append("auth enabled" if want.auth else "auth disabled")
    if want.auth and not c.auth_mounted:
        reasons.append("htpasswd not mounted")
    if c.tls != want.tls or (want.tls and not c.tls_mounted):
        reasons.append("TLS enabled" if want.tls else "TLS disabled")
    return reasons


def _count(found: Found, path: str) -> int:
    return found.repositories.get(path, -1)


def plan_container(want: Want, found: Found) -> ContainerPlan:
    """The decision table: keep / start / create / recreate / restart / adopt / refuse."""
    c = found.named
    if c is None:
        return _no_container(want, found)
    if c.own:
        return _own(want, found, c)
    if want.replace:
        return _replace(want, found, c)
    if not c.looks_like_registry:
        return ContainerPlan("refuse", refusal=(
            f"a container named {c.name!r} that nodecfg did not make ({c.image}) is not a registry; "
            "remove or rename it, or pass --replace to have nodecfg remove it"))
    return _adopt(want, found, c)


def _no_container(want: Want, found: Found) -> ContainerPlan:
    """No container under the name: a registry another container serves on the port is adopted;
    anything else on the port is named in a refusal; a free port gets a new container."""
    holder = next(iter(found.holders), None)
    if holder is not None and (holder.own or holder.looks_like_registry) and found.http_status in (200, 401):
        return _adopt(want, found, holder)
    blocker = _holder_text(found)
    if blocker:
        return _port_refusal(want, blocker)
    return ContainerPlan("create", ("no registry container",), want.name, "" if want.storage else want.data_dir)


def _own(want: Want, found: Found, c: Existing) -> ContainerPlan:
    note = ""
    data_dir = want.data_dir
    if want.storage:
        data_dir = ""  # the data lives in the bucket: no data directory at all
    elif "data_dir" not in want.explicit and c.data_spec and c.data_spec != want.data_dir:
        data_dir = c.data_spec  # an unset registry.data_dir never moves the data
        note = (f"kept its data directory {c.data_spec} ({repos_text(_count(found, c.data_source))}); "
                "set registry.data_dir to move the registry elsewhere")
    reasons = _spec_reasons(want, c, data_dir)
    if reasons:
        if any(r.startswith("port ") for r in reasons):
            blocker = _holder_text(found, exclude=c.name)
            if blocker:
                return _port_refusal(want, blocker)
        return ContainerPlan("recreate", tuple(reasons), c.name, data_dir, note=note)
    if not c.running:
        return ContainerPlan("start", ("container stopped",), c.name, data_dir, note=note)
    if found.http_status not in (200, 401):
        return ContainerPlan("restart", (f"registry not answering (HTTP {found.http_status or 'none'})",),
                             c.name, data_dir, note=note)
    return ContainerPlan("keep", (), c.name, data_dir, note=note)


def _adopt(want: Want, found: Found, c: Existing) -> ContainerPlan:
    """A foreign registry: adopted as it is where that is safe, else refused with the setting."""
    where = c.data_spec or "(inside the container: no volume)"
    kept = repos_text(_count(found, c.data_source)) if c.data_source else "data not on a volume"
    refusal = _adopt_refusal(want, found, c, where, kept)
    if refusal:
        return ContainerPlan("refuse", refusal=f"the registry container {c.name!r} (not made by nodecfg) {refusal}")
    login = "with its own login" if c.auth else "no login"
    note = (f"adopted the registry container {c.name!r} (not made by nodecfg) as it is: data in {where} "
            f"({kept}), port {want.port}, {login}")
    if not c.running:
        return ContainerPlan("start", ("adopted container stopped",), c.name, c.data_spec, c, note)
    return ContainerPlan("adopt", (), c.name, c.data_spec, c, note)


def _adopt_refusal(want: Want, found: Found, c: Existing, where: str, kept: str) -> str:
    """Why a foreign registry cannot be adopted as it is, with the setting that resolves it ("" it can)."""
    have = ",".join(c.ports) or "no port"
    keep_port = c.ports[0] if len(c.ports) == 1 else ""
    rules = [
        (c.ports != (str(want.port),) and ("port" in want.explicit or not keep_port),
         f"serves on {have}, registry.port says {want.port}; "
         + (f"set registry.port: {keep_port} to keep it, or " if keep_port else "")
         + f"pass --replace to recreate it on {want.port} (its data in {where} is kept)"),
        (c.ports != (str(want.port),),
         f"serves on port {have}; set registry.port: {have} to keep it (nodes are pointed at the "
         f"inventory's port), or pass --replace to recreate it on {want.port}"),
        (c.tls and not want.tls,
         "serves HTTPS (REGISTRY_HTTP_TLS_CERTIFICATE) and nodecfg points nodes at plain HTTP; set "
         f"registry.tls: {{cert, key, ca}} to its files, or pass --replace to recreate it without TLS "
         f"(its data in {where} is kept)"),
        (c.tls and want.tls,
         "serves HTTPS with a certificate nodecfg did not make; pass --replace to recreate it with "
         f"registry.tls's certificate (its data in {where} is kept)"),
        (want.tls and not c.tls,
         "serves plain HTTP and registry.tls asks for HTTPS; pass --replace to recreate it with TLS "
         f"(its data in {where} is kept), or remove registry.tls"),
        (c.storage != want.storage,
         f"serves from {c.storage or where}, registry.storage says {want.storage or 'each replica keeps its own'}; "
         "pass --replace to recreate it as the inventory says (its data stays where it is)"),
        ("data_dir" in want.explicit and c.data_spec != want.data_dir,
         f"keeps {kept} in {where}, registry.data_dir says {want.data_dir}; set registry.data_dir: "
         f"{where} to keep its {kept}, or pass --replace to recreate it on {want.data_dir}"),
        (want.auth and not c.auth,
         "has no login and registry.auth asks for one; pass --replace to recreate it with nodecfg's "
         f"htpasswd (its data in {where} is kept), or remove registry.auth"),
        (c.auth and not want.auth,
         "asks for a login; set registry.auth (username and password_env) to one of its users, "
         "or pass --replace"),
        (c.auth and found.auth_status not in (200, 0),
         f"refuses registry.auth's credentials (HTTP {found.auth_status}); set registry.auth to one of "
         "its users, or pass --replace to recreate it with nodecfg's htpasswd"),
    ]
    return next((why for hit, why in rules if hit), "")


def _replace(want: Want, found: Found, c: Existing) -> ContainerPlan:
    """--replace: the foreign container is recreated as nodecfg's; its data stays unless the
    inventory names another data directory."""
    data_dir = want.data_dir if "data_dir" in want.explicit or not c.data_spec else c.data_spec
    if want.storage:
        data_dir = ""
    blocker = _holder_text(found, exclude=c.name)
    if blocker and c.ports != (str(want.port),):
        return _port_refusal(want, blocker)
    reasons = [f"--replace: {c.name!r} was not made by nodecfg", *_spec_reasons(want, c, data_dir)]
    note = f"replaced the registry container {c.name!r} (not made by nodecfg); data in {data_dir or want.storage}"
    return ContainerPlan("recreate", tuple(dict.fromkeys(reasons)), c.name, data_dir, note=note)


_SS_USER = re.compile(r'\(\("([^"]+)",pid=(\d+)')


def ss_process(lines: list[str]) -> str:
    """'name (pid N)' from `ss -Hltnp` lines ("" none); docker-proxy means a container (named elsewhere)."""
    for line in lines:
        m = _SS_USER.search(line)
        if m:
            return f"{m.group(1)} (pid {m.group(2)})"
        if line.strip():
            return "an unnamed process"
    return ""
