"""The master side: the registry container, its htpasswd, and pushing the inventory's images.

Shape (facts -> plan -> apply):
1. one command on the master gathers `MasterFacts` (registry image, container, htpasswd, which
   images it has, what the registry holds under each target tag);
2. pure functions decide: `container_changes()` (keep / start / recreate, with reasons),
   `htpasswd_matches()`, `images_to_push()`;
3. apply: ship the registry image if the master lacks it (docker save | ssh docker load — never a
   pull on the master), (re)start the container, wait for /v2/, then load and push what's missing.

Values are data, never shell text: every inventory- or master-derived value in a script is either
`shlex.quote`d or base64-encoded (`_b64_heredoc`), so no value can end a here-document or a quoted
word, whatever it holds. Secrets (the password, and the htpasswd file with it) only travel base64-
encoded inside scripts sent on stdin (never argv), are written only to root-only files, and are
never printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodecfg import ssh
from nodecfg.errors import HostError, UsageError
from nodecfg.images import ImageRef, parse_ref, plan_targets
from nodecfg.inventory import Host, Inventory, RegistrySettings, Secret

if TYPE_CHECKING:
    import docker

    from nodecfg.bundle.push import RegistryAPI
    from nodecfg.bundle.remote import Connect

AUTH_DIR = "/etc/nodecfg/registry"
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

    @property
    def digest(self) -> str:
        blob = json.dumps([self.image_id, self.port, self.data_dir, self.auth, self.name])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run_command(self, image: str) -> str:
        q = shlex.quote
        args = ["docker", "run", "-d", "--name", q(self.name), "--restart=always",
                "-p", f"{int(self.port)}:5000", "-v", f"{q(self.data_dir)}:/var/lib/registry",
                "--label", f"{SPEC_LABEL}={self.digest}"]
        if self.auth:
            args += ["-v", f"{q(AUTH_DIR)}:/auth:ro", "-e", "REGISTRY_AUTH=htpasswd",
                     "-e", q("REGISTRY_AUTH_HTPASSWD_REALM=nodecfg registry"),
                     "-e", "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd"]
        args.append(q(image))
        return " ".join(args)


def container_changes(spec: ContainerSpec, inspect: dict[str, Any] | None) -> tuple[str, list[str]]:
    """Compare `docker inspect` output with the spec: ("keep" | "start" | "create" | "recreate", why)."""
    if not inspect:
        return "create", ["no registry container"]
    reasons = []
    if inspect.get("Image") != spec.image_id:
        reasons.append("registry image changed")
    host_cfg = inspect.get("HostConfig") or {}
    bindings = (host_cfg.get("PortBindings") or {}).get("5000/tcp") or []
    ports = {b.get("HostPort") for b in bindings}
    if ports != {str(spec.port)}:
        reasons.append(f"port {','.join(sorted(p for p in ports if p)) or 'none'} -> {spec.port}")
    binds = host_cfg.get("Binds") or []
    if not any(b.split(":")[:2] == [spec.data_dir, "/var/lib/registry"] for b in binds):
        reasons.append(f"data directory is not {spec.data_dir}")
    if (host_cfg.get("RestartPolicy") or {}).get("Name") != "always":
        reasons.append("restart policy is not always")
    env = (inspect.get("Config") or {}).get("Env") or []
    has_auth = "REGISTRY_AUTH=htpasswd" in env
    if has_auth != spec.auth:
        reasons.append("auth enabled" if spec.auth else "auth disabled")
    if spec.auth and not any(b.split(":")[:2] == [AUTH_DIR, "/auth"] for b in binds):
        reasons.append("htpasswd not mounted")
    if reasons:
        return "recreate", reasons
    if not (inspect.get("State") or {}).get("Running"):
        return "start", ["container stopped"]
    return "keep", []


# ---------------------------------------------------------------------------------------------
# pure: scripts run on the master (sent on stdin to `sh -s`)


def _b64_heredoc(data: bytes) -> str:
    """A here-document body that no value can end: base64 holds no newline and no shell text.
    Follows `base64 -d <<'NODECFG_EOF'`."""
    return f"{base64.b64encode(data).decode()}\nNODECFG_EOF"


_CURL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\v": "\\v"}


def curl_config_line(user: str, password: Secret) -> str:
    """`user = "name:password"` for a curl config file, in curl's own quoting: one line whatever the
    values hold (a newline would start another curl option)."""
    value = f"{user}:{password.reveal()}"
    if "\0" in value:
        raise ValueError("curl credentials cannot hold a NUL character")
    return 'user = "' + "".join(_CURL_ESCAPES.get(ch, ch) for ch in value) + '"\n'


def curl_auth_prelude(auth: tuple[str, Secret] | None) -> str:
    """Shell lines that put curl's credentials in a root-only temp file named $ncfg.

    curl then reads them with `-K "$ncfg"`: the password never reaches a process's argv.
    The script is sent on stdin, carries the file base64-encoded, and removes it on exit.
    """
    lines = ['ncfg=$(umask 077; mktemp)', "trap 'rm -f \"$ncfg\"' EXIT"]
    if auth is not None:
        config = curl_config_line(*auth).encode()
        lines.append(f"base64 -d > \"$ncfg\" <<'NODECFG_EOF'\n{_b64_heredoc(config)}")
    return "\n".join(lines)


def _manifest_probe(port: int, targets: list[ImageRef]) -> str:
    accept = " ".join(f"-H {shlex.quote('Accept: ' + t)}" for t in MANIFEST_TYPES)
    lines = []
    for t in targets:
        url = f"http://127.0.0.1:{int(port)}/v2/{t.path}/manifests/{t.tag}"
        lines.append(f"printf 'manifest\\t%s\\t%s\\n' {shlex.quote(t.target)} "
                     f"\"$(curl -s --max-time 10 -K \"$ncfg\" {accept} {shlex.quote(url)} "
                     "| tr -d '\\n')\"")
    return "\n".join(lines)


def facts_script(settings: RegistrySettings, targets: list[ImageRef], image_ids: list[str],
                 auth: tuple[str, Secret] | None) -> str:
    ids = " ".join(shlex.quote(i) for i in image_ids)
    port = int(settings.port)
    htpasswd = shlex.quote(f"{AUTH_DIR}/htpasswd")
    return f"""\
{curl_auth_prelude(auth)}
command -v curl >/dev/null || printf 'nocurl\\t\\n'
printf 'docker\\t%s\\n' "$(docker version --format '{{{{.Server.Version}}}}' 2>/dev/null)"
printf 'platform\\t%s\\n' "$(docker version --format '{{{{.Server.Os}}}}/{{{{.Server.Arch}}}}' 2>/dev/null)"
printf 'regimage\\t%s\\n' "$(docker image inspect --format '{{{{.Id}}}}' {shlex.quote(settings.image)} 2>/dev/null)"
printf 'container\\t%s\\n' "$(docker container inspect {shlex.quote(settings.container)} 2>/dev/null | tr -d '\\n')"
if [ -r {htpasswd} ]; then printf 'htpasswd\\t%s\\n' "$(base64 -w0 {htpasswd})"; fi
{f"docker image inspect --format 'present	{{{{.Id}}}}' {ids} 2>/dev/null" if ids else ""}
printf 'http\\t%s\\n' "$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 http://127.0.0.1:{port}/v2/)"
{_manifest_probe(port, targets)}
true
"""


def apply_script(spec: ContainerSpec, action: str, settings: RegistrySettings,
                 htpasswd: str | None, targets: list[ImageRef], auth: tuple[str, Secret] | None) -> str:
    """(Re)start the container as `action` says, wait for /v2/, then report the manifests."""
    q = shlex.quote
    port = int(settings.port)
    steps = [curl_auth_prelude(auth), "set -e", f"install -d -m 755 {q(spec.data_dir)}"]
    if htpasswd is not None:
        tmp, final = q(f"{AUTH_DIR}/htpasswd.tmp"), q(f"{AUTH_DIR}/htpasswd")
        steps += [f"install -d -m 700 {q(AUTH_DIR)}", "umask 077",
                  f"base64 -d > {tmp} <<'NODECFG_EOF'\n{_b64_heredoc(htpasswd.encode())}",
                  f"mv -f {tmp} {final}", "umask 022"]
    name = q(spec.name)
    if action == "recreate":
        steps.append(f"docker rm -f {name} >/dev/null")
    if action in ("create", "recreate"):
        steps.append(f"{spec.run_command(settings.image)} >/dev/null")
    elif action == "start":
        steps.append(f"docker start {name} >/dev/null")
    elif action == "restart":
        steps.append(f"docker restart {name} >/dev/null")
    steps += [
        "set +e",
        "i=0",
        f"while :; do code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 2 "
        f"http://127.0.0.1:{port}/v2/); case $code in 200|401) break;; esac; "
        "i=$((i+1)); [ $i -ge 150 ] && { echo \"registry did not answer on /v2/ (last: $code)\" >&2; "
        f"docker logs --tail 5 {name} >&2; exit 3; }}; sleep 0.2; done",
        "printf 'http\\t%s\\n' \"$code\"",
        f"printf 'id\\t%s\\n' \"$(docker container inspect --format '{{{{.Id}}}}' {name})\"",
        _manifest_probe(port, targets),
        "true",
    ]
    return "\n".join(steps) + "\n"


@dataclass(frozen=True)
class MasterFacts:
    docker_version: str = ""
    registry_image_id: str = ""
    container: dict[str, Any] | None = None
    htpasswd: str | None = None
    http_status: int = 0
    present: frozenset[str] = frozenset()
    manifests: dict[str, str] = field(default_factory=dict)  # target -> config digest ("" none)
    container_id: str = ""
    platform: str = ""  # the master engine's os/arch, e.g. linux/amd64


def parse_facts(output: str) -> MasterFacts:
    """Turn the tab-separated lines of facts_script / apply_script into MasterFacts."""
    values: dict[str, Any] = {"present": set(), "manifests": {}}
    for line in output.splitlines():
        key, _, rest = line.partition("\t")
        if key == "docker":
            values["docker_version"] = rest.strip()
        elif key == "platform":
            values["platform"] = rest.strip()
        elif key == "regimage":
            values["registry_image_id"] = rest.strip()
        elif key == "container" and rest.strip():
            try:
                data = json.loads(rest)
            except ValueError:
                data = []
            values["container"] = data[0] if data else None
        elif key == "htpasswd" and rest.strip():
            values["htpasswd"] = base64.b64decode(rest.strip()).decode("utf-8", "replace")
        elif key == "present":
            values["present"].add(rest.strip())
        elif key == "http":
            values["http_status"] = int(rest) if rest.strip().isdigit() else 0
        elif key == "id":
            values["container_id"] = rest.strip()
        elif key == "manifest":
            target, _, body = rest.partition("\t")
            values["manifests"][target] = _config_digest(body)
    values["present"] = frozenset(values["present"])
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


def _save_stream(client: docker.DockerClient, ref: str) -> Iterator[bytes]:
    yield from client.images.get(ref).save(chunk_size=1 << 20, named=True)


def _master_session(inv: Inventory | None) -> tuple[Any, Host | None, str, Callable[[str], ssh.RunResult]]:
    """The master's connection, its host (None: this machine), its name for messages, and how a
    script runs there (on stdin, through sudo when the master's `become` says so)."""
    c, host = _master_connection(inv)
    become = host.ssh.become if host else False

    def sh(script: str) -> ssh.RunResult:
        return ssh.run(c, "sh -s", stdin=script.encode(), become=become)

    return c, host, str(host) if host else "localhost", sh


def _master_facts(sh: Callable[[str], ssh.RunResult], where: str, script: str,
                  progress: Progress) -> MasterFacts:
    """Run the master's facts script; a master without docker or curl fails here, in one line."""
    progress(f"{where}: gathering facts")
    res = sh(script)
    facts = parse_facts(res.stdout)
    if not facts.docker_version:
        raise HostError(f"{where}: docker does not answer on the master ({res.brief()})")
    if "nocurl\t" in res.stdout:
        # the registry's HTTP API is checked from the master itself (nodes need no curl)
        raise HostError(f"{where}: the master has no curl, which registry-up uses to talk to the "
                        "registry on the master; install it there (apt-get install curl)")
    return facts


def _master_connection(inv: Inventory | None) -> tuple[Any, Host | None]:
    if inv is None:
        return ssh.LocalConnection(), None
    return ssh.connect(inv.master), inv.master


def _credentials(settings: RegistrySettings) -> tuple[str, Secret] | None:
    if settings.auth is None:
        return None
    password = settings.auth.password()
    if any(ch in password.reveal() for ch in "\n\r\0"):
        raise UsageError("registry.auth: the password must be a single line without NUL characters")
    return settings.auth.username, password


def registry_up(inv: Inventory | None, *, progress: Progress = _quiet,
                bundle: Path | None = None, direct: bool = False) -> RegistryUpResult:
    """Start the registry on the master (or locally) and push the inventory's images: from this
    machine's Docker engine, or with `bundle`, from a bundle file (no engine needed here); through
    the master's SSH connection, or with `direct`, to the registry's address and port."""
    settings = inv.registry if inv else RegistrySettings(address="127.0.0.1")
    if bundle is not None:
        return _registry_up_bundle(inv, settings, bundle, progress, direct)
    image_refs = list(inv.images) if inv else []
    targets = plan_targets(image_refs)  # usage errors before anything is contacted
    sources: dict[str, str] = {}
    for src in image_refs:
        sources.setdefault(parse_ref(src).target, src)
    creds = _credentials(settings)
    from nodecfg.bundle import dockersave, engine, push

    def engine_side() -> tuple[docker.DockerClient, list[engine.LocalImage]]:
        client = _docker()
        return client, engine.local_images(client, targets, sources, progress)

    # this machine's engine is asked (and the docker SDK imported) while the master works on its facts
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
    local_side = pool.submit(engine_side)
    pool.shutdown(wait=False)
    c, host, where, sh = _master_session(inv)
    become = host.ssh.become if host else False
    try:
        connect = _registry_connect(c, settings, direct)
        early = _ask_early(connect, creds, lambda api: engine.tagged_configs(api, targets))

        def presave() -> dockersave.Presave | None:
            """docker save of what the registry's tags lack, started while the facts are gathered."""
            client, local = local_side.result()
            answer = early.result()
            lacking = [img.image_id for img, config in zip(local, answer[0], strict=True)
                       if config != img.image_id] if answer is not None else []
            return dockersave.Presave(client, lacking) if lacking else None

        presave_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="presave")
        presaved = presave_pool.submit(presave)
        presave_pool.shutdown(wait=False)
        facts = _master_facts(sh, where, facts_script(settings, [], [], creds), progress)
        client, local = local_side.result()
        shipped = False
        reg_image_id = facts.registry_image_id
        if not reg_image_id:
            progress(f"{where}: shipping {settings.image} from this machine (save | ssh | load)")
            reg_local = _local_registry_image(client, settings.image)
            load = ssh.run(c, "docker load", stdin=_save_stream(client, settings.image), become=become)
            if not load.ok:
                raise HostError(f"{where}: docker load of {settings.image} failed: {load.brief()}")
            reg_image_id, shipped = reg_local.id, True

        action, reasons, container_id, facts = _ensure_container(
            sh, settings, facts, creds, reg_image_id, [], progress, where)
        tagged, catalog = _early_answer(early, action)
        results, stats = engine.push_engine(client, local, connect, creds, progress=progress, width=_push_width(),
                                            tagged=tagged, presave=presaved.result())
        if catalog is None or any(r.action != "skipped" for r in results):
            catalog = push.catalog(connect, creds)
    finally:
        ssh.close(c)
    outcomes = tuple(ImageOutcome(r.image.source, r.image.ref.target, r.image.size, r.action, r.seconds, r.error)
                     for r in results)
    return RegistryUpResult(where, settings.endpoint, action, tuple(reasons), container_id, shipped,
                            outcomes, catalog, creds is not None, transfer=asdict(stats))


def _ensure_container(sh: Callable[[str], ssh.RunResult], settings: RegistrySettings, facts: MasterFacts,
                      creds: tuple[str, Secret] | None, reg_image_id: str, targets: list[ImageRef],
                      progress: Progress, where: str) -> tuple[str, list[str], str, MasterFacts]:
    """(Re)start the registry container if it differs from the spec: (action, reasons, id, facts)."""
    htpasswd_new = None
    auth_changed = False
    if creds is not None and not htpasswd_matches(facts.htpasswd, creds[0], creds[1]):
        htpasswd_new, auth_changed = htpasswd_line(*creds), True
    spec = ContainerSpec(reg_image_id, settings.port, settings.data_dir, creds is not None,
                         settings.container)
    action, reasons = container_changes(spec, facts.container)
    if action == "keep" and auth_changed:
        action, reasons = "restart", ["credentials changed"]
    if action == "keep" and facts.http_status not in (200, 401):
        action, reasons = "restart", [f"registry not answering (HTTP {facts.http_status or 'none'})"]
    container_id = (facts.container or {}).get("Id", "")
    if action != "keep" or htpasswd_new is not None:
        progress(f"{where}: registry container: {action} ({'; '.join(reasons)})")
        res = sh(apply_script(spec, action, settings, htpasswd_new, targets, creds))
        if not res.ok:
            raise HostError(f"{where}: starting the registry failed: {res.brief()}")
        facts = parse_facts(res.stdout)
        container_id = facts.container_id
    return action, reasons, container_id, facts


def catalog_script(settings: RegistrySettings, creds: tuple[str, Secret] | None) -> str:
    return (
        f"{curl_auth_prelude(creds)}\n"
        f"cat=$(curl -s --max-time 10 -K \"$ncfg\" http://127.0.0.1:{int(settings.port)}/v2/_catalog)\n"
        "printf 'catalog\\t%s\\n' \"$(printf '%s' \"$cat\" | tr -d '\\n')\"\n"
    )


def tags_script(settings: RegistrySettings, repos: list[str], creds: tuple[str, Secret] | None) -> str:
    """Each repository's tags; the names come from the master's catalog, so they are quoted."""
    base = f"http://127.0.0.1:{int(settings.port)}/v2"
    return curl_auth_prelude(creds) + "\n" + "\n".join(
        f"printf 'tags\\t%s\\n' \"$(curl -s --max-time 10 -K \"$ncfg\" "
        f"{shlex.quote(f'{base}/{r}/tags/list')} | tr -d '\\n')\"" for r in repos) + "\n"


def down_script(settings: RegistrySettings, purge: bool) -> str:
    name = shlex.quote(settings.container)
    script = (f"if docker container inspect {name} >/dev/null 2>&1; then "
              f"docker rm -f {name} >/dev/null && echo removed; fi\n")
    if purge:
        script += f"rm -rf {shlex.quote(settings.data_dir)} {shlex.quote(AUTH_DIR)}\n"
    return script


def _catalog(c: Any, become: bool, settings: RegistrySettings,
             creds: tuple[str, Secret] | None) -> dict[str, list[str]]:
    res = ssh.run(c, "sh -s", stdin=catalog_script(settings, creds).encode(), become=become)
    repos: list[str] = []
    for line in res.stdout.splitlines():
        if line.startswith("catalog\t"):
            try:
                repos = list(json.loads(line.split("\t", 1)[1]).get("repositories") or [])
            except (ValueError, AttributeError):
                repos = []
    if not repos:
        return {}
    res = ssh.run(c, "sh -s", stdin=tags_script(settings, repos, creds).encode(), become=become)
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
        res = ssh.run(c, "sh -s", stdin=down_script(settings, purge).encode(), become=become)
    finally:
        ssh.close(c)
    if not res.ok:
        raise HostError(f"{where}: registry-down failed: {res.brief()}")
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
                        progress: Progress, direct: bool) -> RegistryUpResult:
    from nodecfg.bundle import dockerarchive, push
    from nodecfg.bundle.manifests import parse_platform
    from nodecfg.bundle.reader import Bundle

    creds = _credentials(settings)
    wanted = plan_targets(list(inv.images) if inv else [])  # usage errors before anything is contacted
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

        c, host, where, sh = _master_session(inv)
        become = host.ssh.become if host else False
        try:
            connect = _registry_connect(c, settings, direct)
            early = _ask_early(connect, creds, lambda api: push.tag_digests(api, images))
            facts = _master_facts(sh, where, facts_script(settings, [], [], creds), progress)
            shipped = False
            reg_image_id = facts.registry_image_id
            if not reg_image_id:
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
                    raise HostError(f"{where}: docker load of {settings.image} failed: {load.brief()}")
                q = shlex.quote(settings.image)
                reg_image_id = ssh.run(c, f"docker image inspect --format '{{{{.Id}}}}' {q}",
                                       become=become).stdout.strip()
                if not reg_image_id:
                    raise HostError(f"{where}: {settings.image} is not there after docker load: {load.brief()}")
                shipped = True
            action, reasons, container_id, facts = _ensure_container(
                sh, settings, facts, creds, reg_image_id, [], progress, where)
            tags, catalog = _early_answer(early, action)
            results, stats = push.push_bundle(b, images, connect, creds, progress=progress,
                                              width=_push_width(), tags=tags)
            if catalog is None or any(r.action != "skipped" for r in results):
                catalog = push.catalog(connect, creds)
        finally:
            ssh.close(c)
    outcomes = tuple(ImageOutcome(r.push.entry.ref, r.push.ref.target, r.push.size, r.action, r.seconds, r.error)
                     for r in results)
    return RegistryUpResult(where, settings.endpoint, action, tuple(reasons), container_id, shipped,
                            outcomes, catalog, creds is not None, transfer=asdict(stats))


def _registry_connect(c: Any, settings: RegistrySettings, direct: bool) -> Connect:
    from nodecfg.bundle import remote

    return remote.direct(settings.address, settings.port) if direct else remote.connector(c, settings.port)


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
