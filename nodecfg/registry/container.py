"""The registry container on the master: its spec, the scripts that read and change it, its facts.

The scripts are files, like the nodes' (nodecfg/scripts/master*.sh after master.sh, run as
`sh -c PROGRAM nodecfg ARG...`): fixed text, every inventory- or master-derived value one of their
arguments. Secrets (curl's credentials, the htpasswd file, the TLS certificate, key and CA) only
travel base64 on the script's stdin, are written only to root-only files (the certificate and CA
0644), and are never printed. Each script is one step: `-D SECONDS` is its budget, and every docker
call in it runs under `timeout` on the master itself, so nothing of nodecfg's is left running there
when a step is over (master.sh `bounded`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nodecfg import scripts, tagged
from nodecfg.credentials import Credentials
from nodecfg.errors import HostError, UsageError
from nodecfg.inventory import RegistrySettings, Secret
from nodecfg.registry import adopt
from nodecfg.scripts import NodeScript

if TYPE_CHECKING:
    from nodecfg.registry.tls import TlsFiles

AUTH_DIR = "/etc/nodecfg/registry"  # htpasswd and ENV_FILE (0600)
ENV_FILE = "registry.env"  # S3 storage: the keys and the http.secret, for docker run --env-file
TLS_DIR = "/etc/nodecfg/registry-tls"  # tls.crt, tls.key (0600) and ca.crt of a TLS registry
STATE_DIR = "/var/lib/nodecfg/registry"  # what nodecfg records on the master (root only): data-dirs, pushed
SPEC_LABEL = "nodecfg.registry.spec"
# manifests may be deleted over the API (registry-prune). Not part of the spec's digest nor a reason
# to recreate a container that lacks it (adopt.py): registry-prune enables it on nodecfg's own
# container when it first needs it (docs/registry.md, "registry-prune")
DELETE_ENABLED = "REGISTRY_STORAGE_DELETE_ENABLED=true"

ApplyAction = Literal["create", "recreate", "start", "restart"]




# ---------------------------------------------------------------------------------------------
# pure: the container spec


@dataclass(frozen=True)
class S3Spec:
    """The registry's S3 driver settings that are not secret (the keys and the http secret travel in
    ENV_FILE: `secret_env`)."""

    endpoint: str
    bucket: str
    region: str

    @property
    def name(self) -> str:
        return adopt.storage_name("s3", self.endpoint, self.bucket)

    def env(self) -> list[str]:
        secure = "true" if self.endpoint.startswith("https://") else "false"
        # redirect disabled: the registry itself streams blobs to the nodes (its S3 driver would
        # answer a blob GET with a 307 to the store, which nodes of an offline site may not reach)
        return ["REGISTRY_STORAGE=s3", f"REGISTRY_STORAGE_S3_REGIONENDPOINT={self.endpoint}",
                f"REGISTRY_STORAGE_S3_BUCKET={self.bucket}", f"REGISTRY_STORAGE_S3_REGION={self.region}",
                f"REGISTRY_STORAGE_S3_SECURE={secure}", "REGISTRY_STORAGE_S3_FORCEPATHSTYLE=true",
                "REGISTRY_STORAGE_REDIRECT_DISABLE=true"]


def secret_env(access_key: Secret, secret_key: Secret, http_secret: Secret) -> Secret:
    """ENV_FILE's content: the S3 keys and the registry's http.secret, as docker's --env-file reads
    it (one VAR=value a line: values are single lines, checked where they are read)."""
    values = {"REGISTRY_STORAGE_S3_ACCESSKEY": access_key, "REGISTRY_STORAGE_S3_SECRETKEY": secret_key,
              "REGISTRY_HTTP_SECRET": http_secret}
    for name, value in values.items():
        if any(ch in value.reveal() for ch in "\n\r\0"):
            raise UsageError(f"{name}: must be a single line without NUL characters")
    return Secret("".join(f"{name}={value.reveal()}\n" for name, value in values.items()))


def http_secret_of(env_file: Secret | None) -> Secret | None:
    """The http.secret a replica's ENV_FILE holds (None: none yet)."""
    for line in (env_file.reveal() if env_file else "").splitlines():
        name, _, value = line.partition("=")
        if name == "REGISTRY_HTTP_SECRET" and value:
            return Secret(value)
    return None


@dataclass(frozen=True)
class ContainerSpec:
    """What the registry container must look like."""

    image_id: str
    port: int
    data_dir: str  # "" with S3 storage: no data directory at all
    auth: bool
    name: str = "registry"
    tls: bool = False
    s3: S3Spec | None = None

    @property
    def digest(self) -> str:
        blob = json.dumps([self.image_id, self.port, self.data_dir, self.auth, self.name,
                           *(["tls"] if self.tls else []), *([self.s3.name] if self.s3 else [])])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run_args(self, image: str) -> list[str]:
        """`docker run`'s arguments (after `run`), each one word: values, never shell text (and never a
        secret: those are in ENV_FILE, read by docker itself)."""
        args = ["-d", "--name", self.name, "--restart=always", "-p", f"{int(self.port)}:5000",
                "--label", f"{SPEC_LABEL}={self.digest}", "--label", f"{adopt.MANAGED_LABEL}=1",
                "-e", DELETE_ENABLED]
        if self.s3 is None:
            args += ["-v", f"{self.data_dir}:/var/lib/registry"]
        else:
            args += [w for e in self.s3.env() for w in ("-e", e)] + ["--env-file", f"{AUTH_DIR}/{ENV_FILE}"]
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
# pure: the scripts (nodecfg/scripts/master*.sh; master.sh documents their arguments)


def _secrets(auth: Credentials | None, *more: bytes) -> bytes:
    """A master script's stdin: one base64 line per secret — curl's config first (an empty line: no
    credentials), then `more` in the order the script reads them."""
    curl = auth.curl_config() if auth is not None else b""
    return b"".join(base64.b64encode(data) + b"\n" for data in (curl, *more))


def _access_args(settings: RegistrySettings, budget: float) -> list[str]:
    """`-D SECONDS -R URL -P PORT [-C CAFILE]`: the step's budget, the registry's base URL as seen from
    the master, and what reaching it takes. Plain HTTP: http://127.0.0.1:<port>. TLS: the registry's
    own name (https://<endpoint>), connected to 127.0.0.1 and verified with the CA nodecfg put
    beside the certificate — the master checks the same certificate the nodes will."""
    port = int(settings.port)
    args = ["-D", str(max(1, int(budget))), "-P", str(port)]
    if settings.tls is None:
        return [*args, "-R", f"http://127.0.0.1:{port}"]
    return [*args, "-R", f"https://{settings.endpoint}", "-C", f"{TLS_DIR}/ca.crt"]


def _place_args(name: str, data_dir: str) -> list[str]:
    """The container's name, its data directory, and where its htpasswd, TLS files and state are."""
    return ["-n", name, "-d", data_dir, "-A", AUTH_DIR, "-T", TLS_DIR, "-S", STATE_DIR]


def _master_script(main: str, args: list[str], stdin: bytes = b"") -> NodeScript:
    return scripts.script(main, [scripts.read("master.sh")], args, stdin)


def facts_script(settings: RegistrySettings, auth: Credentials | None, budget: float) -> NodeScript:
    """What registry-up decides on, as tagged lines (scripts/master_facts.sh): docker's API answers
    (or its CLI's) and the registry's, asked side by side."""
    args = [*_access_args(settings, budget), *_place_args(settings.container, settings.data_dir),
            "-i", settings.image]
    return _master_script("master_facts.sh", args, _secrets(auth))


def apply_script(spec: ContainerSpec, action: ApplyAction, settings: RegistrySettings, budget: float, *,
                 htpasswd: str | None = None, auth: Credentials | None = None,
                 tls_files: TlsFiles | None = None, env_file: Secret | None = None) -> NodeScript:
    """(Re)start the container as `action` says and wait for /v2/ (scripts/master_apply.sh), leaving
    nothing behind when docker refuses (the script says how). The htpasswd and the TLS files travel
    on stdin, base64."""
    args = [*_access_args(settings, budget), *_place_args(spec.name, spec.data_dir), "-x", action]
    more: list[bytes] = []
    if htpasswd is not None:
        args.append("-w")
        more.append(htpasswd.encode())
    if tls_files is not None:  # a renewed or first certificate
        args.append("-t")
        more += tls_files.contents()
    if env_file is not None:  # S3 storage: its keys and the http.secret, for --env-file
        args.append("-e")
        more.append(env_file.reveal().encode())
    return _master_script("master_apply.sh", [*args, "--", *spec.run_args(settings.image)],
                          _secrets(auth, *more))


def down_script(settings: RegistrySettings, budget: float, *, purge: bool) -> NodeScript:
    """Remove nodecfg's own container, and with `purge` the data directory it used (scripts/master_down.sh
    says which directory that is, and which it refuses)."""
    args = [*_access_args(settings, budget), *_place_args(settings.container, settings.data_dir),
            "-l", adopt.MANAGED_LABEL, "-l", adopt.LEGACY_LABEL]
    if purge:
        args.append("-p")
    if settings.storage is not None:
        args.append("-s")
    return _master_script("master_down.sh", args)


def load_command(image: str, image_id: str, budget: float) -> str:
    """`docker load` of the archive on stdin, then the image tagged by id under the inventory's name
    (whatever the archive named it), then its id printed: one command, under `timeout`."""
    q = shlex.quote
    tag = f" && timeout -k 2 5 docker tag {q(image_id)} {q(image)}" if image_id else ""
    return (f"timeout -k 2 {max(1, int(budget))} docker load >/dev/null{tag} && "
            f"timeout -k 2 5 docker image inspect --format '{{{{.Id}}}}' {q(image)}")


# ---------------------------------------------------------------------------------------------
# facts


@dataclass(frozen=True)
class MasterFacts:
    docker_version: str = ""
    registry_image_id: str = ""
    container: dict[str, Any] | None = None
    htpasswd: str | None = None
    http_status: int = 0
    container_id: str = ""
    platform: str = ""  # the master engine's os/arch, e.g. linux/amd64
    holders: tuple[dict[str, Any], ...] = ()  # running containers publishing the registry's port
    listen: str = ""  # `ss -Hltnp` lines for the port
    auth_status: int = 0  # GET /v2/ with the inventory's credentials (0: not asked)
    repositories: dict[str, int] = field(default_factory=dict)  # data directory -> repositories (-1: absent)
    space: dict[str, int] = field(default_factory=dict)  # data directory -> bytes free under it (or its parent)
    pushed: dict[tuple[str, str], str] = field(default_factory=dict)  # STATE_DIR/pushed: the tags nodecfg pushed
    tls_sums: str = ""  # sha256 of TLS_DIR's tls.crt, tls.key, ca.crt ("" none)
    env_file: Secret | None = None  # AUTH_DIR/ENV_FILE: the S3 keys and http.secret (None: none)
    docker_hung: bool = False  # docker's API or CLI did not answer within its bound
    curl: bool = True  # the master has curl

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


_SECRET_ENV = ("SECRET", "ACCESSKEY", "PASSWORD", "TOKEN")


def _docker_object(text: str) -> dict[str, Any] | None:
    """One object docker answered: the API's JSON object, or the first of `docker inspect`'s list;
    None for nothing, an error (`{"message": ...}`) or what is not JSON. A container's environment
    values that are secrets (an S3 key, the http.secret: `docker run --env-file` puts them there)
    are replaced by *** before anything here holds them."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, list):
        data = data[0] if data else None
    if not isinstance(data, dict) or "message" in data:
        return None
    config = data.get("Config")
    if isinstance(config, dict) and isinstance(config.get("Env"), list):
        config["Env"] = [_masked(str(e)) for e in config["Env"]]
    return data


def _masked(entry: str) -> str:
    name, eq, _ = entry.partition("=")
    return f"{name}=***" if eq and any(word in name.upper() for word in _SECRET_ENV) else entry


def _status(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


def parse_facts(output: str, where: str) -> MasterFacts:
    """The tagged lines of facts_script / apply_script as MasterFacts; an answer that does not
    decode is a HostError naming the master and the line, never a traceback."""
    values: dict[str, Any] = {"holders": [], "repositories": {}, "space": {}}
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
            values["auth_status"] = _status(rest)
        elif key == "repos":
            path, _, count = rest.rpartition("\t")
            values["repositories"][path] = int(count) if count.strip().lstrip("-").isdigit() else -1
        elif key == "space" and record.field(1).isdigit():
            values["space"][record.field(0)] = int(record.field(1))
        elif key == "htpasswd" and rest.strip():
            try:
                values["htpasswd"] = base64.b64decode(rest.strip(), validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                raise HostError(f"{where}: the master's answer is garbled (its htpasswd line does not "
                                "decode as base64); run registry-up again") from None
        elif key == "envfile" and rest.strip():
            try:
                values["env_file"] = Secret(base64.b64decode(rest.strip(), validate=True).decode("utf-8", "replace"))
            except (binascii.Error, ValueError):
                raise HostError(f"{where}: the master's answer is garbled (its {ENV_FILE} line does not "
                                "decode as base64); run registry-up again") from None
        elif key == "tlsfiles":
            values["tls_sums"] = " ".join(rest.split())
        elif key == "http":
            values["http_status"] = _status(rest)
        elif key == "dockerhung":
            values["docker_hung"] = True
        elif key == "nocurl":
            values["curl"] = False
    values["pushed"] = parse_pushed(output)
    values["holders"] = tuple(values["holders"])
    return MasterFacts(**values)


def docker_answered(facts: MasterFacts, where: str, brief: str, budget: float) -> None:
    """A HostError naming the master and what did not answer, unless docker did."""
    if facts.docker_version:
        return
    if facts.docker_hung:
        raise HostError(f"{where}: dockerd on the master did not answer within {budget:g}s (is it hung? "
                        "`systemctl status docker` there)")
    raise HostError(f"{where}: docker does not answer on the master ({brief})")


def copy_script(settings: RegistrySettings, budget: float, source_url: str, blobs: Sequence[tuple[str, str]],
                auth: Credentials | None) -> NodeScript:
    """Copy `blobs` ((repository, digest) each) from the registry at `source_url` into this host's,
    inside the site (scripts/master_copy.sh)."""
    args = [*_access_args(settings, budget), "-F", source_url]
    for repo, digest in blobs:
        args += ["-b", repo, digest]
    return _master_script("master_copy.sh", args, _secrets(auth))


PruneAction = Literal["gc", "stop", "start", "uploads"]


def prune_script(settings: RegistrySettings, budget: float, name: str, action: PruneAction, *, s3: bool,
                 auth: Credentials | None, uploads: Sequence[tuple[str, str]] = ()) -> NodeScript:
    """registry-prune's step on a registry host (scripts/master_prune.sh): the garbage collector
    run with the registry stopped, or the registry stopped / started around another's collection;
    for registry-up after a full disk, `uploads` ((repository, upload id) each) removed there."""
    args = [*_access_args(settings, budget), "-n", name, "-x", action, *(["-s"] if s3 else [])]
    for repo, upload in uploads:
        args += ["-u", repo, upload]
    return _master_script("master_prune.sh", args, _secrets(auth))


Pushed = dict[tuple[str, str], str]  # (repository, tag) -> the manifest digest nodecfg tagged
# the record's "tag" of a revision nodecfg pushed that a later push of the same tag replaced: `@<digest>`
SUPERSEDED = "@"


def record_script(budget: float, entries: Pushed, state_dir: str = STATE_DIR) -> NodeScript:
    """Record the tags nodecfg pushed (a digest "" forgets the tag) in STATE_DIR/pushed on the
    registry's host (scripts/master_record.sh says the format and who reads it)."""
    args = ["-D", str(max(1, int(budget))), "-S", state_dir]
    for (repo, tag), digest in sorted(entries.items()):
        args += ["-r", repo, tag, digest or "-"]
    return _master_script("master_record.sh", args, _secrets(None))


def parse_pushed(output: str) -> Pushed:
    """The `pushed REPOSITORY TAG DIGEST` lines of a script that reads the record."""
    return {(r.field(0), r.field(1)): r.field(2) for r in tagged.decode(output)
            if r.tag == "pushed" and r.field(0) and r.field(1) and r.field(2).startswith("sha256:")}


def parse_copied(output: str) -> dict[str, int | str]:
    """master_copy.sh's lines: digest -> the size copied, or why it was not."""
    out: dict[str, int | str] = {}
    for record in tagged.decode(output):
        if record.tag == "copied" and record.field(1).isdigit():
            out[record.field(0)] = int(record.field(1))
        elif record.tag == "failed":
            out[record.field(0)] = tagged.b64text(record.field(1)) or "not copied"
    return out
