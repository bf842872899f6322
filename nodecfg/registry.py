"""The master side: the registry container, its htpasswd, and pushing the inventory's images.

Shape (facts -> plan -> apply):
1. one command on the master gathers `MasterFacts` (engine, registry image, container, who holds
   the port, repositories per data directory, htpasswd and TLS files, what /v2/ answers), while the
   registry's tags are asked over the SSH connection;
2. pure functions decide: `adopt.plan_container()` (keep / start / create / recreate / adopt a
   registry nodecfg did not make / refuse, with reasons), `htpasswd_matches()`, which images lack;
3. apply: ship the registry image if the master lacks it (docker save | ssh docker load — never a
   pull on the master), write its TLS files (`nodecfg/tls.py` makes them), (re)start the container,
   wait for /v2/, then upload what the registry lacks straight to its HTTP API (`nodecfg/bundle/`:
   `engine.py` from this machine's engine, `push.py` from a bundle; `remote.py` the SSH channels).

The scripts run on the master are files, like the nodes' (nodecfg/scripts/master*.sh, run as
`sh -c PROGRAM nodecfg ARG...`): fixed text, every inventory- or master-derived value one of their
arguments, so no value is ever read as shell, whatever it holds. Secrets (curl's credentials, the
htpasswd file, the TLS certificate, key and CA) only travel base64-encoded on the script's stdin
(never argv), are written only to root-only files (the certificate and CA 0644), and are never
printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from dataclasses import replace as replace_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from nodecfg import adopt, scripts, ssh
from nodecfg.errors import ConflictError, HostError, UsageError
from nodecfg.images import ImageRef, parse_ref, plan_targets
from nodecfg.inventory import Host, Inventory, RegistrySettings, Secret
from nodecfg.scripts import NodeScript

if TYPE_CHECKING:
    import docker

    from nodecfg.bundle.push import RegistryAPI
    from nodecfg.bundle.remote import Connect

AUTH_DIR = "/etc/nodecfg/registry"
TLS_DIR = "/etc/nodecfg/registry-tls"  # tls.crt, tls.key (0600) and ca.crt of a TLS registry
SPEC_LABEL = "nodecfg.registry.spec"
MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.oci.image.manifest.v1+json")
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# ---------------------------------------------------------------------------------------------
# pure: htpasswd


def htpasswd_line(username: str, password: Secret) -> str:
    """One bcrypt htpasswd line, as `htpasswd -nbB` makes (no apache2-utils needed)."""
    import bcrypt

    if ":" in username or not username.isprintable():
        raise ValueError("an htpasswd username holds no ':' and no control characters")
    hashed = bcrypt.hashpw(password.reveal().encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"{username}:{hashed}\n"


def htpasswd_matches(content: str | None, username: str, password: Secret) -> bool:
    """Does an existing htpasswd file hold exactly this user with this password?"""
    import bcrypt

    if not content:
        return False
    lines = [ln for ln in content.splitlines() if ln.strip()]
    if len(lines) != 1 or ":" not in lines[0]:
        return False
    user, hashed = lines[0].split(":", 1)
    if user != username:
        return False
    try:
        return bcrypt.checkpw(password.reveal().encode(), hashed.encode())
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# pure: the container spec


@dataclass(frozen=True)
class ContainerSpec:
    """What the registry container must look like."""

    image_id: str
    port: int
    data_dir: str
    auth: bool
    name: str = "registry"
    tls: bool = False

    @property
    def digest(self) -> str:
        blob = json.dumps([self.image_id, self.port, self.data_dir, self.auth, self.name,
                           *(["tls"] if self.tls else [])])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run_args(self, image: str) -> list[str]:
        """`docker run`'s arguments (after `run`), each one word: values, never shell text."""
        args = ["-d", "--name", self.name, "--restart=always",
                "-p", f"{int(self.port)}:5000", "-v", f"{self.data_dir}:/var/lib/registry",
                "--label", f"{SPEC_LABEL}={self.digest}", "--label", f"{adopt.MANAGED_LABEL}=1"]
        if self.auth:
            args += ["-v", f"{AUTH_DIR}:/auth:ro", "-e", "REGISTRY_AUTH=htpasswd",
                     "-e", "REGISTRY_AUTH_HTPASSWD_REALM=nodecfg registry",
                     "-e", "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd"]
        if self.tls:
            args += ["-v", f"{TLS_DIR}:/certs:ro", "-e", "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/tls.crt",
                     "-e", "REGISTRY_HTTP_TLS_KEY=/certs/tls.key"]
        args.append(image)
        return args

    def run_command(self, image: str) -> str:
        """The same as one shell command (for people: the scripts pass `run_args` as arguments)."""
        return " ".join(shlex.quote(a) for a in ["docker", "run", *self.run_args(image)])


# ---------------------------------------------------------------------------------------------
# pure: scripts run on the master (nodecfg/scripts/master*.sh: fixed text, values as arguments,
# secrets base64 on stdin)


_CURL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\v": "\\v"}


def curl_config_line(user: str, password: Secret) -> str:
    """`user = "name:password"` for a curl config file, in curl's own quoting: one line whatever the
    values hold (a newline would start another curl option)."""
    value = f"{user}:{password.reveal()}"
    if "\0" in value:
        raise ValueError("curl credentials cannot hold a NUL character")
    return 'user = "' + "".join(_CURL_ESCAPES.get(ch, ch) for ch in value) + '"\n'


def _secrets(auth: tuple[str, Secret] | None, *more: bytes) -> bytes:
    """A master script's stdin (master.sh): one base64 line per secret — curl's config first (an
    empty line: no credentials), then `more` in the order the script reads them."""
    curl = curl_config_line(*auth).encode() if auth is not None else b""
    return b"".join(base64.b64encode(data) + b"\n" for data in (curl, *more))


def _access_args(settings: RegistrySettings) -> list[str]:
    """`-R URL -P PORT [-C CAFILE]`: the registry's base URL as seen from the master, and what reaching
    it takes (master.sh's `$reg` and `rcurl`). Plain HTTP: http://127.0.0.1:<port>. TLS: the
    registry's own name (https://<endpoint>), connected to 127.0.0.1 and verified with the CA
    nodecfg put beside the certificate — the master checks the same certificate the nodes will."""
    port = int(settings.port)
    if settings.tls is None:
        return ["-R", f"http://127.0.0.1:{port}", "-P", str(port)]
    return ["-R", f"https://{settings.endpoint}", "-P", str(port), "-C", f"{TLS_DIR}/ca.crt"]


def _place_args(name: str, data_dir: str) -> list[str]:
    """The container's name, its data directory, and where its htpasswd and TLS files are."""
    return ["-n", name, "-d", data_dir, "-A", AUTH_DIR, "-T", TLS_DIR]


def _manifest_args(targets: list[ImageRef]) -> list[str]:
    """`-a TYPE`... `-m TARGET PATH`...: the manifests to report (`manifest TARGET BODY`)."""
    if not targets:
        return []
    args = [w for t in MANIFEST_TYPES for w in ("-a", t)]
    for t in targets:
        args += ["-m", t.target, f"/v2/{t.path}/manifests/{t.tag}"]
    return args


def _master_script(main: str, args: list[str], stdin: bytes) -> NodeScript:
    return scripts.script(main, [scripts.read("master.sh")], args, stdin)


@dataclass(frozen=True)
class TlsFiles:
    """What a TLS registry serves with, as the master must hold it in TLS_DIR."""

    cert: bytes
    key: bytes
    ca: bytes

    def contents(self) -> tuple[bytes, bytes, bytes]:
        return self.cert, self.key, self.ca  # in TLS_NAMES order

    @property
    def sums(self) -> str:
        return " ".join(hashlib.sha256(b).hexdigest() for b in self.contents())


TLS_NAMES = ("tls.crt", "tls.key", "ca.crt")  # as master_facts.sh and master_apply.sh name them


def facts_script(settings: RegistrySettings, auth: tuple[str, Secret] | None) -> NodeScript:
    """What registry-up decides on, as tagged lines (scripts/master_facts.sh): docker's API answers
    (or its CLI's) and the registry's, asked side by side."""
    args = [*_access_args(settings), *_place_args(settings.container, settings.data_dir),
            "-i", settings.image]
    return _master_script("master_facts.sh", args, _secrets(auth))


def apply_script(spec: ContainerSpec, action: str, settings: RegistrySettings,
                 htpasswd: str | None, targets: list[ImageRef], auth: tuple[str, Secret] | None,
                 tls_files: TlsFiles | None = None) -> NodeScript:
    """(Re)start the container as `action` says, wait for /v2/, then report the manifests
    (scripts/master_apply.sh). Nothing is left behind when docker refuses: a container `docker run`
    created but could not start is removed (by the id in its --cidfile), the container a recreate
    replaces is renamed aside and put back, and a data directory or htpasswd this run made is
    removed again (a previous htpasswd restored). docker's whole message goes to stderr. The
    htpasswd and the TLS files travel on stdin, base64."""
    args = [*_access_args(settings), *_place_args(spec.name, spec.data_dir), "-x", action]
    more: list[bytes] = []
    if htpasswd is not None:
        args.append("-w")
        more.append(htpasswd.encode())
    if tls_files is not None:  # a renewed or first certificate
        args.append("-t")
        more += tls_files.contents()
    args += [*_manifest_args(targets), "--", *spec.run_args(settings.image)]
    return _master_script("master_apply.sh", args, _secrets(auth, *more))


@dataclass(frozen=True)
class MasterFacts:
    docker_version: str = ""
    registry_image_id: str = ""
    container: dict[str, Any] | None = None
    htpasswd: str | None = None
    http_status: int = 0
    manifests: dict[str, str] = field(default_factory=dict)  # target -> config digest ("" none)
    container_id: str = ""
    platform: str = ""  # the master engine's os/arch, e.g. linux/amd64
    holders: tuple[dict[str, Any], ...] = ()  # running containers publishing the registry's port
    listen: str = ""  # `ss -Hltnp` lines for the port
    auth_status: int = 0  # GET /v2/ with the inventory's credentials (0: not asked)
    repositories: dict[str, int] = field(default_factory=dict)  # data directory -> repositories (-1: absent)
    tls_sums: str = ""  # sha256 of TLS_DIR's tls.crt, tls.key, ca.crt ("" none)

    def route(self, port: int) -> tuple[str, int] | None:
        """The registry container's own address and port on the master's default bridge, where
        host port `port` leads (None: not known, not running, or another kind of network): a
        port forward there skips docker's userland proxy, which 127.0.0.1:<port> goes through."""
        c = self.container or {}
        if not (c.get("State") or {}).get("Running"):
            return None
        bindings = (c.get("HostConfig") or {}).get("PortBindings") or {}
        inner = [k for k, bs in bindings.items() for b in bs or [] if str(b.get("HostPort")) == str(port)]
        address = (((c.get("NetworkSettings") or {}).get("Networks") or {}).get("bridge") or {}).get("IPAddress")
        if len(inner) != 1 or not inner[0].endswith("/tcp") or not inner[0][:-4].isdigit() or not address:
            return None
        return str(address), int(inner[0][:-4])

    def found(self) -> adopt.Found:
        """What adopt.plan_container() decides on."""
        named = adopt.existing(self.container, AUTH_DIR, TLS_DIR) if self.container else None
        holders = tuple(adopt.existing(h, AUTH_DIR, TLS_DIR) for h in self.holders)
        if named is not None:
            holders = tuple(h for h in holders if h.id != named.id)
        return adopt.Found(named, holders, adopt.ss_process([self.listen]), self.http_status,
                           self.auth_status, dict(self.repositories))


def _docker_object(text: str) -> dict[str, Any] | None:
    """One object docker answered: the API's JSON object, or the first of `docker inspect`'s list;
    None for nothing, an error (`{"message": ...}`) or what is not JSON."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, list):
        data = data[0] if data else None
    return data if isinstance(data, dict) and "message" not in data else None


def parse_facts(output: str) -> MasterFacts:
    """Turn the tab-separated lines of facts_script / apply_script into MasterFacts."""
    from nodecfg import tagged  # the one codec of node scripts' lines

    values: dict[str, Any] = {"manifests": {}, "holders": [], "repositories": {}}
    for record in tagged.decode(output):
        key, rest = record.tag, record.rest
        if key == "version":  # docker's /version (the CLI's .Server): Version, Os, Arch
            version = _docker_object(rest) or {}
            values["docker_version"] = str(version.get("Version") or "")
            if version.get("Os") and version.get("Arch"):
                values["platform"] = f"{version['Os']}/{version['Arch']}"
        elif key == "regimage":
            values["registry_image_id"] = str((_docker_object(rest) or {}).get("Id") or "")
        elif key == "container":
            values["container"] = _docker_object(rest)
            values["container_id"] = str((values["container"] or {}).get("Id") or "")
        elif key == "holder" and (holder := _docker_object(rest)) is not None:
            values["holders"].append(holder)
        elif key == "listen":
            values["listen"] = rest.strip()
        elif key == "authhttp":
            values["auth_status"] = int(rest) if rest.strip().isdigit() else 0
        elif key == "repos":
            path, _, count = rest.rpartition("\t")
            values["repositories"][path] = int(count) if count.strip().lstrip("-").isdigit() else -1
        elif key == "htpasswd" and rest.strip():
            values["htpasswd"] = base64.b64decode(rest.strip()).decode("utf-8", "replace")
        elif key == "tlsfiles":
            values["tls_sums"] = " ".join(rest.split())
        elif key == "http":
            values["http_status"] = int(rest) if rest.strip().isdigit() else 0
        elif key == "manifest":
            target, _, body = rest.partition("\t")
            values["manifests"][target] = _config_digest(body)
    values["holders"] = tuple(values["holders"])
    return MasterFacts(**values)


def _config_digest(body: str) -> str:
    try:
        doc = json.loads(body) if body.strip() else {}
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    config = doc.get("config") or {}
    return str(config.get("digest", "")) if isinstance(config, dict) else ""


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class ImageOutcome:
    source: str
    target: str
    size: int
    action: str  # pushed | skipped | failed
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class RegistryUpResult:
    master: str
    endpoint: str
    container_action: str
    container_reasons: tuple[str, ...]
    container_id: str
    shipped_registry_image: bool
    images: tuple[ImageOutcome, ...]
    catalog: dict[str, list[str]]
    auth: bool
    transfer: dict[str, Any] | None = None  # registry-up --bundle: what went over the wire
    note: str = ""  # an adopted registry, or a setting kept from the container found

    @property
    def exit_code(self) -> int:
        return 1 if any(i.action == "failed" for i in self.images) else 0


@dataclass(frozen=True)
class RegistryDownResult:
    master: str
    removed: bool
    purged: bool
    data_dir: str


# ---------------------------------------------------------------------------------------------
# apply


def _docker() -> docker.DockerClient:
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # noqa: BLE001 -- the SDK raises several unrelated types for "no engine"
        raise UsageError(f"no Docker engine answers on this machine ({exc}); images are pushed "
                         "from this machine's engine, so start dockerd first") from None
    return client


def _local_registry_image(client: docker.DockerClient, image: str) -> Any:
    """The registry image in this machine's engine, to ship to the master; a UsageError if absent."""
    import docker  # the SDK is imported when used (the module only needs it for typing)

    try:
        return client.images.get(image)
    except docker.errors.DockerException:
        raise UsageError(f"{image} is neither on the master nor on this machine; "
                         "load it here first (nodecfg never pulls on the master)") from None


def _run(c: Any, script: NodeScript, become: bool) -> ssh.RunResult:
    """One master script, one SSH round trip: `sh -c PROGRAM nodecfg ARG...`, its secrets on stdin."""
    return ssh.run(c, script.command(), stdin=script.stdin, become=become)


class _MasterSession:
    """The master's SSH connection, opened in the background as soon as the inventory has been
    checked, and what registry-up asks first, side by side: the facts script, and the registry's
    tags and catalog (`early`, asked with `ask`) over the same connection. Meanwhile this machine
    reads its bundle or its engine. On an unchanged re-run that is the whole run, so the connection
    starts before the rest of registry-up's modules are even imported."""

    def __init__(self, inv: Inventory | None, settings: RegistrySettings, creds: tuple[str, Secret] | None,
                 direct: bool, tls_files: TlsFiles | None, ask: Callable[[RegistryAPI], list[str]]) -> None:
        self.host = inv.master if inv else None
        self.where = str(self.host) if self.host else "localhost"
        self.become = self.host.ssh.become if self.host else False
        if inv is not None:
            ssh.preload()  # paramiko's import here, not in the thread: the connect is the critical path
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="master")
        self._conn = pool.submit(_master_connection, inv)

        def ask_early() -> Future[_Early | None]:
            return _ask_early(_registry_connect(self.c, settings, direct, tls_files), creds, ask)

        self._early = pool.submit(ask_early)  # waits for the connection on the second worker
        self._facts = pool.submit(lambda: _run(self.c, facts_script(settings, creds), self.become))
        pool.shutdown(wait=False)

    @property
    def c(self) -> Any:
        """The connection (HostError if it could not be made)."""
        return self._conn.result()[0]

    def settled(self) -> None:
        """Wait until the connection is made, or has failed (which `c` reports)."""
        wait([self._conn])

    @property
    def early(self) -> Future[_Early | None]:
        """The registry's tags and catalog, asked as soon as the connection was up."""
        return self._early.result()

    def sh(self, script: NodeScript) -> ssh.RunResult:
        """Run a script on the master (through sudo when its `become` says so)."""
        return _run(self.c, script, self.become)

    def facts(self, progress: Progress) -> MasterFacts:
        """The facts script's answer; a master without docker or curl fails here, in one line."""
        progress(f"{self.where}: gathering facts")
        res = self._facts.result()
        facts = parse_facts(res.stdout)
        if not facts.docker_version:
            raise HostError(f"{self.where}: docker does not answer on the master ({res.brief()})")
        if "nocurl\t" in res.stdout:
            # the registry's HTTP API is checked from the master itself (nodes need no curl)
            raise HostError(f"{self.where}: the master has no curl, which registry-up uses to talk to the "
                            "registry on the master; install it there (apt-get install curl)")
        return facts

    def close(self) -> None:
        """Close the connection once it is made (an error making it was reported by `c`)."""
        try:
            c = self.c
        except Exception:  # noqa: BLE001 -- no connection, nothing to close
            return
        ssh.close(c)


def _master_connection(inv: Inventory | None) -> tuple[Any, Host | None]:
    if inv is None:
        return ssh.LocalConnection(), None
    return ssh.connect(inv.master, fabric=False), inv.master  # one host: no Fabric to import


def _credentials(settings: RegistrySettings) -> tuple[str, Secret] | None:
    if settings.auth is None:
        return None
    password = settings.auth.password()
    if any(ch in password.reveal() for ch in "\n\r\0"):
        raise UsageError("registry.auth: the password must be a single line without NUL characters")
    return settings.auth.username, password


def registry_up(inv: Inventory | None, *, progress: Progress = _quiet,
                bundle: Path | None = None, check: bool = False, replace: bool = False,
                direct: bool = False) -> RegistryUpResult | RegistryCheck:
    """Start the registry on the master (or locally) and push the inventory's images: from this
    machine's Docker engine, or with `bundle`, from a bundle file (no engine needed here); through
    the master's SSH connection, or with `direct`, to the registry's address and port.

    A registry nodecfg did not make is adopted where that is safe and refused otherwise
    (`adopt.plan_container`); `replace` recreates it as nodecfg's own. `check` reports what would
    be done to the container, its data directory and the images, and changes nothing."""
    settings = inv.registry if inv else RegistrySettings(address="127.0.0.1")
    if bundle is not None:
        return _registry_up_bundle(inv, settings, bundle, progress, direct, check=check, replace=replace)
    image_refs = list(inv.images) if inv else []
    targets = plan_targets(image_refs)  # usage errors before anything is contacted
    sources: dict[str, str] = {}
    for src in image_refs:
        sources.setdefault(parse_ref(src).target, src)
    creds = _credentials(settings)
    tls_files = _tls_files(inv, settings, progress, write=not check)

    def ask_tags(api: RegistryAPI) -> list[str]:
        from nodecfg.bundle import engine

        return engine.tagged_configs(api, targets)

    # the master first (the critical path of an unchanged run), then this machine's side meanwhile
    master = _MasterSession(inv, settings, creds, direct, tls_files, ask_tags)
    try:
        master.settled()  # the handshake first: these imports would share the GIL with its Python work
        from nodecfg.bundle import dockersave, engine, push

        def engine_side() -> tuple[docker.DockerClient, list[engine.LocalImage]]:
            # the SDK is made (and imported) only when used: an unchanged run inspects over the socket
            from nodecfg.dockerengine import LazyClient

            client = cast("docker.DockerClient", LazyClient(_docker))
            return client, engine.local_images(client, targets, sources, progress)

        # this machine's engine is asked (and the docker SDK imported) while the master works on its facts
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        local_side = pool.submit(engine_side)
        pool.shutdown(wait=False)

        def presave() -> dockersave.Presave | None:
            """docker save of what the registry's tags lack, started while the facts are gathered."""
            client, local = local_side.result()
            answer = master.early.result()
            lacking = [img.image_id for img, config in zip(local, answer[0], strict=True)
                       if config != img.image_id] if answer is not None else []
            return dockersave.Presave(client, lacking) if lacking else None

        presaved: Future[dockersave.Presave | None] | None = None
        if not check:
            presave_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="presave")
            presaved = presave_pool.submit(presave)
            presave_pool.shutdown(wait=False)
        facts = master.facts(progress)
        where, c = master.where, master.c
        client, local = local_side.result()
        reg_image_id = facts.registry_image_id or _local_image_id(client, settings.image)
        plan = adopt.plan_container(_want(settings, creds, reg_image_id, replace), facts.found())
        ship = plan.needs_image and not facts.registry_image_id
        if check:
            answer = master.early.result()
            configs = answer[0] if answer is not None else [""] * len(local)  # what each tag points at now
            return _check_result(where, settings, facts, plan, ship, tuple(
                ImagePlan(i.source, i.ref.target, "in registry" if config == i.image_id else "push")
                for i, config in zip(local, configs, strict=True)))
        if plan.action == "refuse":
            raise ConflictError(f"{where}: {plan.refusal}")
        if ship:
            progress(f"{where}: shipping {settings.image} from this machine (save | ssh | load)")
            reg_image_id = _ship_registry_image(c, master.become, client, settings.image, where)
        action, reasons, container_id, facts = _ensure_container(
            master.sh, settings, facts, creds, reg_image_id, [], progress, where, plan=plan, tls_files=tls_files)
        tagged, catalog = _early_answer(master.early, action)
        connect = _registry_connect(c, settings, direct, tls_files, facts)  # the container's own address
        results, stats = engine.push_engine(client, local, connect, creds, progress=progress, width=_push_width(),
                                            tagged=tagged, presave=presaved.result() if presaved else None)
        if catalog is None or any(r.action != "skipped" for r in results):
            catalog = push.catalog(connect, creds)
    finally:
        master.close()
    outcomes = tuple(ImageOutcome(r.image.source, r.image.ref.target, r.image.size, r.action, r.seconds, r.error)
                     for r in results)
    return RegistryUpResult(where, settings.endpoint, action, tuple(reasons), container_id, ship,
                            outcomes, catalog, creds is not None, note=plan.note, transfer=asdict(stats))


def _tls_files(inv: Inventory | None, settings: RegistrySettings, progress: Progress,
               write: bool = True) -> TlsFiles | None:
    """The certificate, key and CA the registry serves with (registry.tls), made or reused here on
    the operator machine before the master is contacted (with `write` False — --check — anything
    made stays in memory); None for plain HTTP."""
    if settings.tls is None or inv is None:
        return None
    from nodecfg import tls

    m = tls.material(settings.tls, registry_address=settings.address, port=settings.port,
                     master_name=inv.master.name, master_address=inv.master.address, write=write)
    if m.issued and write:
        progress(f"issued the registry's TLS certificate ({m.issued}); CA: {m.ca_path}")
    return TlsFiles(m.cert_pem, m.key_pem, m.ca_pem)


def _want(settings: RegistrySettings, creds: tuple[str, Secret] | None, image_id: str,
          replace: bool) -> adopt.Want:
    explicit = settings.explicit & {"port", "data_dir", "auth"}
    return adopt.Want(settings.container, settings.port, settings.data_dir, creds is not None, image_id,
                      settings.image, frozenset(explicit), replace, tls=settings.tls is not None)


def _whole(res: ssh.RunResult) -> str:
    """docker's whole message on one line (its last line alone is often "See 'docker run --help'")."""
    text = res.stderr.strip() or res.stdout.strip()
    return " ".join(ln.strip() for ln in text.splitlines() if ln.strip()) or f"exit code {res.exit_code}"


def _ensure_container(sh: Callable[[NodeScript], ssh.RunResult], settings: RegistrySettings, facts: MasterFacts,
                      creds: tuple[str, Secret] | None, reg_image_id: str, targets: list[ImageRef],
                      progress: Progress, where: str, *, plan: adopt.ContainerPlan | None = None,
                      replace: bool = False, tls_files: TlsFiles | None = None,
                      ) -> tuple[str, list[str], str, MasterFacts]:
    """Bring the registry container to the plan: (action, reasons, id, facts). A foreign registry
    is left as it is (adopted) or refused (ConflictError) before anything changes."""
    if plan is None:
        plan = adopt.plan_container(_want(settings, creds, reg_image_id, replace), facts.found())
    if plan.action == "refuse":
        raise ConflictError(f"{where}: {plan.refusal}")
    if plan.note:
        progress(f"{where}: {plan.note}")
    action: str = plan.action
    reasons = list(plan.reasons)
    htpasswd_new = None
    if plan.adopted is None and creds is not None and not htpasswd_matches(facts.htpasswd, creds[0], creds[1]):
        htpasswd_new = htpasswd_line(*creds)  # nodecfg's own htpasswd; an adopted registry keeps its own
        if action == "keep":
            action, reasons = "restart", ["credentials changed"]
    tls_new = tls_files if tls_files is not None and tls_files.sums != facts.tls_sums else None
    if tls_new is not None and plan.adopted is None and action == "keep":
        action, reasons = "restart", ["TLS certificate changed"]  # registry:2 reads it at start
    container_id = plan.adopted.id if plan.adopted else str((facts.container or {}).get("Id", ""))
    if action in ("keep", "adopt"):
        return action, reasons, container_id, facts
    progress(f"{where}: registry container: {action} ({'; '.join(reasons)})")
    spec = ContainerSpec(reg_image_id, settings.port, plan.data_dir or settings.data_dir, creds is not None,
                         plan.name or settings.container, tls=settings.tls is not None)
    res = sh(apply_script(spec, action, settings, htpasswd_new, targets, creds, tls_new))
    if not res.ok:
        raise HostError(f"{where}: starting the registry failed: {_whole(res)}")
    after = parse_facts(res.stdout)
    facts = replace_fields(facts, http_status=after.http_status, container=after.container,
                           container_id=after.container_id, manifests=after.manifests)
    return action, reasons, after.container_id, facts


def _local_image_id(client: docker.DockerClient, image: str) -> str:
    """The registry image's id in this machine's engine ("" when it has none: only needed if the
    master lacks it and a container must be created)."""
    import docker

    try:
        return str(client.images.get(image).id)
    except docker.errors.DockerException:
        return ""


def _ship_registry_image(c: Any, become: bool, client: docker.DockerClient, image: str, where: str) -> str:
    """`docker save IMAGE | ssh master 'docker load'`, then tag by id on the master.

    Saved by the inventory's name (the tarball names exactly that reference, whatever other tags the
    image has here; the SDK's `save(named=True)` would name it by its *first* tag), and tagged by
    image id after the load, so the master has it under the inventory's name in any case."""
    reg = _local_registry_image(client, image)
    q = shlex.quote
    stream = client.api.get_image(image, chunk_size=1 << 20)
    load = ssh.run(c, f"docker load >/dev/null && docker tag {q(reg.id)} {q(image)} && "
                   f"docker image inspect --format '{{{{.Id}}}}' {q(image)}", stdin=stream, become=become)
    if not load.ok:
        raise HostError(f"{where}: docker load of {image} failed: {_whole(load)}")
    return load.stdout.strip().splitlines()[-1] if load.stdout.strip() else str(reg.id)


@dataclass(frozen=True)
class ImagePlan:
    source: str
    target: str
    action: str  # "push" | "in registry"


@dataclass(frozen=True)
class RegistryCheck:
    """registry-up --check: what would be done; nothing was changed."""

    master: str
    endpoint: str
    container_action: str
    container_reasons: tuple[str, ...]
    container: str  # name and short id of the container acted on ("" none)
    note: str
    refusal: str
    data_dir: str
    repositories: int  # in data_dir (-1: the directory does not exist yet)
    ship_registry_image: bool
    images: tuple[ImagePlan, ...]

    @property
    def exit_code(self) -> int:
        return 2 if self.refusal else 0


def _check_result(where: str, settings: RegistrySettings, facts: MasterFacts, plan: adopt.ContainerPlan,
                  ship: bool, images: tuple[ImagePlan, ...]) -> RegistryCheck:
    found = facts.found()
    acted = plan.adopted or found.named
    data_dir = plan.data_dir or settings.data_dir
    source = acted.data_source if acted is not None and acted.data_spec == data_dir else data_dir
    return RegistryCheck(where, settings.endpoint, plan.action, plan.reasons,
                         f"{acted.name} {acted.id[:12]}" if acted is not None else "", plan.note, plan.refusal,
                         data_dir, found.repositories.get(source, -1), ship, images)


def catalog_script(settings: RegistrySettings, creds: tuple[str, Secret] | None) -> NodeScript:
    """`catalog JSON` (scripts/master_catalog.sh)."""
    return _master_script("master_catalog.sh", _access_args(settings), _secrets(creds))


def tags_script(settings: RegistrySettings, repos: list[str], creds: tuple[str, Secret] | None) -> NodeScript:
    """Each repository's `tags JSON`; the names come from the master's catalog: arguments, data."""
    args = _access_args(settings)
    for repo in repos:
        args += ["-r", repo]
    return _master_script("master_catalog.sh", args, _secrets(creds))


def down_script(settings: RegistrySettings, purge: bool) -> NodeScript:
    """Remove nodecfg's own container (and with `purge` its data); a foreign one is left, and said
    (scripts/master_down.sh)."""
    args = [settings.container, adopt.MANAGED_LABEL, adopt.LEGACY_LABEL]
    if purge:
        args += [settings.data_dir, AUTH_DIR, TLS_DIR]
    return scripts.script("master_down.sh", [], args)


def _catalog(c: Any, become: bool, settings: RegistrySettings,
             creds: tuple[str, Secret] | None) -> dict[str, list[str]]:
    res = _run(c, catalog_script(settings, creds), become)
    repos: list[str] = []
    for line in res.stdout.splitlines():
        if line.startswith("catalog\t"):
            try:
                repos = list(json.loads(line.split("\t", 1)[1]).get("repositories") or [])
            except (ValueError, AttributeError):
                repos = []
    if not repos:
        return {}
    res = _run(c, tags_script(settings, repos, creds), become)
    out: dict[str, list[str]] = {r: [] for r in repos}
    for line in res.stdout.splitlines():
        if line.startswith("tags\t"):
            try:
                doc = json.loads(line.split("\t", 1)[1])
                out[doc["name"]] = sorted(doc.get("tags") or [])
            except (ValueError, KeyError, TypeError):
                continue
    return out


def registry_down(inv: Inventory | None, *, purge: bool = False) -> RegistryDownResult:
    settings = inv.registry if inv else RegistrySettings(address="127.0.0.1")
    c, host = _master_connection(inv)
    become = host.ssh.become if host else False
    where = str(host) if host else "localhost"
    try:
        res = _run(c, down_script(settings, purge), become)
    finally:
        ssh.close(c)
    if not res.ok:
        raise HostError(f"{where}: registry-down failed: {_whole(res)}")
    if "foreign" in res.stdout.split():
        raise ConflictError(f"{where}: the container {settings.container!r} was not made by nodecfg; "
                            f"registry-down leaves it and its data (remove it yourself: docker rm -f "
                            f"{settings.container})")
    return RegistryDownResult(where, "removed" in res.stdout, purge, settings.data_dir)


def catalog_on_master(inv: Inventory) -> dict[str, list[str]]:
    """The registry's catalog (repository -> tags), asked on the master."""
    creds = _credentials(inv.registry)
    c, host = _master_connection(inv)
    try:
        return _catalog(c, host.ssh.become if host else False, inv.registry, creds)
    finally:
        ssh.close(c)


# ---------------------------------------------------------------------------------------------
# registry-up --bundle: everything from a bundle file, over the registry's HTTP API through SSH


def _registry_up_bundle(inv: Inventory | None, settings: RegistrySettings, path: Path,
                        progress: Progress, direct: bool, *, check: bool = False,
                        replace: bool = False) -> RegistryUpResult | RegistryCheck:
    from nodecfg.bundle import dockerarchive, push
    from nodecfg.bundle.manifests import parse_platform
    from nodecfg.bundle.reader import Bundle

    creds = _credentials(settings)
    wanted = plan_targets(list(inv.images) if inv else [])  # usage errors before anything is contacted
    tls_files = _tls_files(inv, settings, progress, write=not check)
    with Bundle.open(path) as b:
        reg_upstream = parse_ref(settings.image).upstream
        reg_entry = next((e for e in b.entries if parse_ref(e.ref).upstream == reg_upstream), None)
        entries = [e for e in b.entries if e.pushed]
        have = {parse_ref(e.ref).upstream for e in entries}
        missing = [r.upstream for r in wanted if r.upstream not in have]
        if missing:
            raise UsageError(f"{path}: the inventory's image(s) {', '.join(missing)} are not in the bundle; "
                             "run `nodecfg bundle create` with this inventory again")
        plan_targets([e.ref for e in entries])  # two bundle images on one registry path: refused here
        images = push.images_to_push(b, entries)

        master = _MasterSession(inv, settings, creds, direct, tls_files, lambda api: push.tag_digests(api, images))
        try:
            facts = master.facts(progress)
            where, c, become, early = master.where, master.c, master.become, master.early
            reg_image_id = facts.registry_image_id
            plan = adopt.plan_container(_want(settings, creds, reg_image_id, replace), facts.found())
            shipped = plan.needs_image and not reg_image_id
            if check:
                answer = early.result()
                digests = answer[0] if answer is not None else [""] * len(images)
                return _check_result(where, settings, facts, plan, shipped, tuple(
                    ImagePlan(i.entry.ref, i.ref.target, "in registry" if d == i.top.digest else "push")
                    for i, d in zip(images, digests, strict=True)))
            if plan.action == "refuse":
                raise ConflictError(f"{where}: {plan.refusal}")
            if shipped:
                if reg_entry is None:
                    raise UsageError(f"{path}: the master has no {settings.image} and the bundle does not hold "
                                     "it; make the bundle with `nodecfg bundle create -i INVENTORY` (without "
                                     "--no-registry-image)")
                try:
                    platform = parse_platform(facts.platform)
                except ValueError:
                    raise HostError(f"{where}: cannot tell the master engine's platform "
                                    f"({facts.platform!r})") from None
                progress(f"{where}: loading {settings.image} ({platform}) from the bundle (docker load)")
                load = ssh.run(c, "docker load", become=become,
                               stdin=dockerarchive.load_stream(b, reg_entry, platform, settings.image))
                if not load.ok:
                    raise HostError(f"{where}: docker load of {settings.image} failed: {_whole(load)}")
                q = shlex.quote(settings.image)
                reg_image_id = ssh.run(c, f"docker image inspect --format '{{{{.Id}}}}' {q}",
                                       become=become).stdout.strip()
                if not reg_image_id:
                    raise HostError(f"{where}: {settings.image} is not there after docker load: {_whole(load)}")
            action, reasons, container_id, facts = _ensure_container(
                master.sh, settings, facts, creds, reg_image_id, [], progress, where, plan=plan,
                tls_files=tls_files)
            tags, catalog = _early_answer(early, action)
            connect = _registry_connect(c, settings, direct, tls_files, facts)  # the container's own address
            results, stats = push.push_bundle(b, images, connect, creds, progress=progress,
                                              width=_push_width(), tags=tags)
            if catalog is None or any(r.action != "skipped" for r in results):
                catalog = push.catalog(connect, creds)
        finally:
            master.close()
    outcomes = tuple(ImageOutcome(r.push.entry.ref, r.push.ref.target, r.push.size, r.action, r.seconds, r.error)
                     for r in results)
    return RegistryUpResult(where, settings.endpoint, action, tuple(reasons), container_id, shipped,
                            outcomes, catalog, creds is not None, note=plan.note, transfer=asdict(stats))


def _registry_connect(c: Any, settings: RegistrySettings, direct: bool,
                      tls_files: TlsFiles | None = None, facts: MasterFacts | None = None) -> Connect:
    """HTTP(S) connections to the registry: through the master's SSH connection to 127.0.0.1 (or,
    with `facts`, to the container's own address: MasterFacts.route), or with `direct` to its
    address. Over TLS the certificate is verified, for the registry's own name, against the CA
    the nodes trust."""
    from nodecfg.bundle import remote

    tls = (tls_files.ca, settings.address) if tls_files is not None else None
    if direct:
        return remote.direct(settings.address, settings.port, tls=tls)
    return remote.connector(c, settings.port, tls=tls, route=facts.route(settings.port) if facts else None)


_Early = tuple[list[str], dict[str, list[str]]]


def _ask_early(connect: Connect, creds: tuple[str, Secret] | None,
               ask: Callable[[RegistryAPI], list[str]]) -> Future[_Early | None]:
    """Ask the registry what its tags point at, and its catalog, while the master's facts are
    gathered (over the same SSH connection): on an unchanged re-run that is all there is to ask.
    None when the registry does not answer (not running yet, or refusing): asked again later."""
    from nodecfg.bundle.push import RegistryAPI, basic_auth, catalog_of

    def probe() -> _Early | None:
        api = RegistryAPI(connect, basic_auth(creds))
        try:
            return ask(api), catalog_of(api)
        except Exception:  # noqa: BLE001 -- a guess: any failure means "ask again after the facts"
            return None
        finally:
            api.close()

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="early")
    try:
        return pool.submit(probe)
    finally:
        pool.shutdown(wait=False)


def _early_answer(early: Future[_Early | None], action: str) -> tuple[list[str] | None, dict[str, list[str]] | None]:
    """The early answers, if the registry container was kept as it was (else they may be stale)."""
    answer = early.result() if action == "keep" else None
    return answer if answer is not None else (None, None)


def _push_width() -> int:
    """Blobs in flight; NODECFG_PUSH_WIDTH overrides the default (for measuring)."""
    import os

    from nodecfg.bundle.push import WIDTH

    raw = os.environ.get("NODECFG_PUSH_WIDTH", "")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 32 else WIDTH
