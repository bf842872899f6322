"""docker: pure merges of daemon.json and root's ~/.docker/config.json, and the docker plan.

`insecure-registries` and `registry-mirrors` are applied by dockerd on SIGHUP (`systemctl reload
docker`), so a changed daemon.json costs a reload, never a restart. A key that is also passed as a
dockerd flag (a kubespray-style drop-in, DOCKER_OPTS) makes dockerd refuse the file, so such a key is
left out of daemon.json when the flag already covers the registry, and refused otherwise.

With replicas (`Want.replicas`, this node's order): every replica is a registry mirror, in that
order (dockerd tries them in turn, then Docker Hub — for docker.io only), and trusted like the
registry (an insecure registry over HTTP, certs.d/<replica>/ca.crt over TLS), with credentials for
each. A pull by registry path has one endpoint, registry.address: no failover there (a site points
a DNS name or VIP at the replicas). What nodecfg added to daemon.json and config.json is recorded
in /var/lib/nodecfg/docker.json (nodecfg/runtimes/record.py), so a replica removed from the
inventory leaves every node on the next run, and a hand-made entry never does.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from nodecfg import scripts
from nodecfg.errors import NodecfgError
from nodecfg.render import render
from nodecfg.runtimes import record
from nodecfg.runtimes.base import (
    Action,
    Check,
    FileChange,
    FileFact,
    RuntimePlan,
    ServiceFacts,
    SmokePlan,
    Want,
    fields,
    first,
    pull_problem,
    rc_msg,
    timeout_problem,
)
from nodecfg.runtimes.common import json_object

if TYPE_CHECKING:
    from nodecfg.credentials import Credentials
    from nodecfg.deadline import BoundedNode

DAEMON_JSON = "/etc/docker/daemon.json"
ROOT_DOCKER_CONFIG = "/root/.docker/config.json"
CERTS_D = "/etc/docker/certs.d"
RECORD = record.record_path("docker")
FLAG_KEYS = {"--insecure-registry": "insecure-registries", "--registry-mirror": "registry-mirrors"}


class MergeError(NodecfgError):
    """An existing file can't be merged into (invalid JSON, a key of the wrong type)."""


@dataclass(frozen=True)
class DockerFacts:
    service: ServiceFacts
    daemon_json: str | None = None  # None: no file
    daemon_json_path: str = DAEMON_JSON
    client_config: str | None = None  # root's ~/.docker/config.json
    cmdline: tuple[str, ...] = ()  # the dockerd command line in effect (or the unit's ExecStart)
    drop_ins: tuple[str, ...] = ()
    ca_files: Mapping[str, str] = field(default_factory=dict)  # certs.d/*/ca.crt read
    record: str | None = None  # /var/lib/nodecfg/docker.json: what nodecfg added (record.py)


def flag_values(cmdline: tuple[str, ...]) -> dict[str, list[str]]:
    """daemon.json keys set by dockerd flags, e.g. {"insecure-registries": ["m:5000"]}."""
    out: dict[str, list[str]] = {}
    args = list(cmdline)
    for i, arg in enumerate(args):
        for flag, key in FLAG_KEYS.items():
            if arg == flag and i + 1 < len(args):
                out.setdefault(key, []).append(args[i + 1])
            elif arg.startswith(flag + "="):
                out.setdefault(key, []).append(arg.split("=", 1)[1])
    return out


def config_file_flag(cmdline: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg == "--config-file" and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith("--config-file="):
            return arg.split("=", 1)[1]
    return None


def desired_settings(endpoint: str, mirror_docker_io: bool, tls: bool = False,
                     replicas: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """What nodecfg wants in daemon.json, from templates/daemon.json.j2: the registry and every
    replica insecure (plain HTTP), and the replicas (else the registry) as mirrors in this node's
    order."""
    rendered = render("daemon.json.j2", insecure=[] if tls else list(dict.fromkeys((endpoint, *replicas))),
                      mirrors=list(replicas or (endpoint,)) if mirror_docker_io else [],
                      scheme="https" if tls else "http")
    return dict(json.loads(rendered))


def unwanted_settings(endpoint: str, tls: bool, replicas: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Entries for the registry (and each replica) that contradict the wanted scheme: over TLS it
    must not be an insecure registry (docker would then skip verification) nor an http:// mirror;
    over HTTP an https:// mirror of it is stale. Entries for other registries are never touched."""
    names = list(dict.fromkeys((endpoint, *replicas)))
    if tls:
        return {"insecure-registries": [e for n in names for e in (n, f"http://{n}", f"https://{n}")],
                "registry-mirrors": [f"http://{n}" for n in names]}
    return {"registry-mirrors": [f"https://{n}" for n in names]}


def ca_path(endpoint: str) -> str:
    """Where dockerd looks for the CA of a registry (and of a mirror) at `endpoint`."""
    return f"{CERTS_D}/{endpoint}/ca.crt"


BY_HAND = "already configured (by hand)"


def registry_key(key: str, entry: str) -> str:
    """The registry an entry names, as dockerd reads it: host:port lowercased, trailing '/' dropped.

    dockerd strips `http://` / `https://` from an insecure-registries entry (with a warning), so
    "http://master:5000" there is "master:5000". A registry-mirrors entry keeps its scheme: an
    https:// mirror is not the http:// one. Names are compared as written: "master:5000" and
    "10.0.0.1:5000" are two registries to dockerd, which matches insecure registries by the name
    it pulls with."""
    text = entry.strip().rstrip("/")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text.lower()
    if key == "insecure-registries" and scheme.lower() in ("http", "https"):
        return rest.lower()
    return f"{scheme.lower()}://{rest.lower()}"


def _mirror_matches(entry: str, wanted: str, key: str = "registry-mirrors") -> bool:
    return registry_key(key, entry) == registry_key(key, wanted)


def _nodecfg_format(text: str | None, doc: dict[str, Any]) -> bool:
    """Is this file as nodecfg writes it (so not "by hand")?"""
    return text == json.dumps(doc, indent=2) + "\n"


def merge_daemon_json(existing: str | None, wanted: dict[str, list[str]],
                      flags: dict[str, list[str]], source: str = DAEMON_JSON,
                      unwanted: Mapping[str, list[str]] | None = None,
                      recorded: Mapping[str, tuple[str, ...]] | None = None,
                      ) -> tuple[str | None, list[str], dict[str, tuple[str, ...]]]:
    """Merge `wanted` list entries into an existing daemon.json text.

    Returns (new text or None when nothing changes, notes, the entries nodecfg added per key: its
    record, record.py). Every other key and every existing list entry is kept, in order, except the
    entries `recorded` as nodecfg's own that it no longer wants. Raises MergeError when the file
    can't be merged safely.
    """
    notes: list[str] = []
    doc = json_object(existing, source, MergeError)
    hand = existing is not None and not _nodecfg_format(existing, doc)
    by_hand: list[str] = []
    added: dict[str, tuple[str, ...]] = {}
    recorded = recorded or {}
    changed = False
    for key, entries in (unwanted or {}).items():
        held = [f for f in flags.get(key, []) if any(_mirror_matches(f, e, key) for e in entries)]
        if held:
            flag = "--insecure-registry" if key == "insecure-registries" else "--registry-mirror"
            raise MergeError(f"dockerd is started with {flag} {held[0]} (a unit drop-in or DOCKER_OPTS), "
                             "which contradicts the registry's TLS setting; remove that flag")
        current = doc.get(key)
        if not isinstance(current, list):
            continue
        kept = [c for c in current if not (isinstance(c, str) and any(_mirror_matches(c, e, key) for e in entries))]
        if kept != current:
            notes.append(f"removed {', '.join(c for c in current if c not in kept)} from {key}")
            # an emptied list stays as []: dockerd's reload only applies keys the file sets, so a
            # removed key would leave the old entries in force until a restart
            doc[key] = kept
            changed = True
    for key in dict.fromkeys((*wanted, *recorded)):
        entries = wanted.get(key, [])
        if key in flags and entries:
            covered = all(any(_mirror_matches(f, e, key) for f in flags[key]) for e in entries)
            if covered:
                notes.append(f"{key} already set by a dockerd flag; left out of daemon.json")
                continue
            flag = "--insecure-registry" if key == "insecure-registries" else "--registry-mirror"
            raise MergeError(
                f"dockerd is started with {flag}"
                f" {' '.join(flags[key])} (a unit drop-in or DOCKER_OPTS) and the same key in "
                f"daemon.json would stop dockerd; add {', '.join(entries)} to that flag instead")
        current = doc.get(key, [])
        if not isinstance(current, list):
            raise MergeError(f"{source}: {key} is not a list; left untouched")
        merged, added[key] = record.merge_list(current, entries, recorded.get(key, ()),
                                               functools.partial(_mirror_matches, key=key),
                                               ordered=key == "registry-mirrors")
        if merged != current:
            gone = [c for c in current if c not in merged]
            if gone:
                notes.append(f"removed {', '.join(map(str, gone))} from {key} (nodecfg added them; "
                             "no longer wanted)")
            doc[key] = merged
            changed = True
        elif hand and entries:
            by_hand.append(key)
    if by_hand:  # the recipe's own entries: the same setting, kept as written
        notes.append(BY_HAND if not changed else f"{', '.join(by_hand)} {BY_HAND}")
    if not changed:
        return None, notes, added
    return json.dumps(doc, indent=2) + "\n", notes, added


HUB_AUTH_KEY = "https://index.docker.io/v1/"


def merge_client_config(existing: str | None, endpoint: str, creds: Credentials | None,
                        source: str = ROOT_DOCKER_CONFIG, *, mirror_docker_io: bool = False,
                        replicas: tuple[str, ...] = (), recorded: tuple[str, ...] = (),
                        ) -> tuple[str | None, list[str], tuple[str, ...]]:
    """Add the registry's credentials to a docker client config.json, for the registry and each
    replica (text None: already there); auths nodecfg `recorded` as its own and no longer wants
    (a removed replica; every one when the registry has no login now) are removed. Returns (text,
    notes, the auths nodecfg added: its record).

    dockerd authenticates to a docker.io *mirror* with the credentials the client holds for Docker
    Hub (`https://index.docker.io/v1/`), so with docker.io mirrored they go there too — unless the
    file already holds other Docker Hub credentials, which are kept (with a note).
    """
    doc = json_object(existing, source, MergeError)
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise MergeError(f"{source}: auths is not an object; left untouched")
    before = dict(auths)
    notes: list[str] = []
    keys = list(dict.fromkeys((endpoint, *replicas))) if creds is not None else []
    token = creds.basic() if creds is not None else None
    if mirror_docker_io and creds is not None:
        hub = (auths.get(HUB_AUTH_KEY) or {}).get("auth")
        if hub in (None, token) or HUB_AUTH_KEY in recorded:
            keys.append(HUB_AUTH_KEY)
        else:
            notes.append("kept the existing Docker Hub credentials: docker.io pulls through the mirror "
                         "will present those, not the registry's")
    changed = False
    for key in record.stale_keys(recorded, keys):
        if auths.pop(key, None) is not None:
            changed = True
    for key in keys:
        if (auths.get(key) or {}).get("auth") != token:
            auths[key] = {**(auths.get(key) or {}), "auth": token}
            changed = True
    added = record.added_keys(before, keys, recorded)
    return (json.dumps(doc, indent=2) + "\n" if changed else None), notes, added


def plan_docker(facts: DockerFacts, endpoint: str, mirror_docker_io: bool,
                credentials: Credentials | None, ca_pem: str | None = None,
                replicas: tuple[str, ...] = ()) -> RuntimePlan:
    """Decide what docker on one node needs: files to write and reload or nothing. `replicas`:
    the registry's replicas in this node's order (() without replicas)."""
    svc = facts.service
    if not svc.installed:
        return RuntimePlan("docker", "absent", "not installed; skipped")
    if svc.masked:
        return RuntimePlan("docker", "masked", "masked; skipped (left masked)")
    path = config_file_flag(facts.cmdline) or DAEMON_JSON
    tls = ca_pem is not None
    try:
        mine = record.parse(facts.record, RECORD)
        text, notes, added = merge_daemon_json(facts.daemon_json,
                                               desired_settings(endpoint, mirror_docker_io, tls, replicas),
                                               flag_values(facts.cmdline), path,
                                               unwanted_settings(endpoint, tls, replicas), mine.keys(path))
    except (MergeError, record.RecordError) as exc:
        return RuntimePlan("docker", "failed", str(exc))
    files = []
    if text is not None:
        files.append(FileChange(path, text, 0o644, facts.daemon_json, "registry settings merged",
                                validate="dockerd" if facts.service.major >= DOCKERD_VALIDATE_MAJOR
                                else "json"))
    for name in dict.fromkeys((endpoint, *replicas)) if tls else ():
        if facts.ca_files.get(ca_path(name)) != ca_pem:
            # read on every pull: no reload for it
            files.append(FileChange(ca_path(name), str(ca_pem), 0o644, facts.ca_files.get(ca_path(name)),
                                    "the registry's CA"))
    recorded_auths = mine.entries(ROOT_DOCKER_CONFIG, "auths")
    auths: tuple[str, ...] = ()
    if credentials is not None or recorded_auths:
        try:
            client, client_notes, auths = merge_client_config(
                facts.client_config, endpoint, credentials, mirror_docker_io=mirror_docker_io,
                replicas=replicas, recorded=recorded_auths)
            notes = [*notes, *client_notes]
        except MergeError as exc:
            return RuntimePlan("docker", "failed", str(exc))
        if client is not None:
            files.append(FileChange(ROOT_DOCKER_CONFIG, client, 0o600, facts.client_config,
                                    "registry credentials", secret=True, validate="json"))
    # credentials in config.json are read per pull: only daemon.json needs a reload
    action: Action = "reload" if text is not None and svc.active else "none"
    note = "; ".join(notes) if notes else ""
    if text is not None and not svc.active:
        note = "; ".join([*notes, "not running: config written, not started"])
    return RuntimePlan("docker", "configure", note, tuple(files), action,
                       added={path: added, ROOT_DOCKER_CONFIG: {"auths": auths}})


DOCKERD_VALIDATE_MAJOR = 23  # `dockerd --validate` exists from docker 23


def check_effect(info_json: str, endpoint: str, mirror_docker_io: bool, tls: bool = False,
                 replicas: tuple[str, ...] = ()) -> str | None:
    """None if `docker info` shows the registry (and each replica) as wanted — insecure over HTTP,
    not insecure over TLS — and the mirrors with their scheme; else why not."""
    try:
        cfg = json.loads(info_json) if info_json.strip() else None
    except ValueError:
        cfg = None
    if isinstance(cfg, dict) and isinstance(cfg.get("RegistryConfig"), dict):
        cfg = cfg["RegistryConfig"]  # the whole /info document
    if not isinstance(cfg, dict):
        return "docker does not answer after the reload"
    configs = cfg.get("IndexConfigs")
    for name in dict.fromkeys((endpoint, *replicas)):
        index = configs.get(name) if isinstance(configs, dict) else None
        if not isinstance(index, dict):  # absent, or not docker's shape: not listed
            index = None
        if tls:
            if index and index.get("Secure") is False:
                return f"docker info still lists {name} as an insecure registry (config not applied)"
        elif not index or index.get("Secure") is not False:
            return f"docker info does not list {name} as an insecure registry (config not applied)"
    if mirror_docker_io:
        listed = cfg.get("Mirrors")
        mirrors = [m.rstrip("/") for m in listed if isinstance(m, str)] if isinstance(listed, list) else []
        for name in replicas or (endpoint,):
            mirror = f"{'https' if tls else 'http'}://{name}"
            if mirror not in mirrors:
                return f"docker info does not list {mirror} as a registry mirror"
    return None


# ---------------------------------------------------------------------------------------------
# configure-nodes --undo (nodecfg/undo.py)


def _same_entry(key: str, a: str, b: str) -> bool:
    return _mirror_matches(a, b, key)


def _lists(text: str | None) -> dict[str, list[str]]:
    """The registry lists of a daemon.json text ({} when none, or not JSON)."""
    try:
        doc = json.loads(text) if text and text.strip() else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        return {}
    return {k: [e for e in v if isinstance(e, str)] for k in FLAG_KEYS.values()
            if isinstance(v := doc.get(k), list)}


def plan_undo_docker(facts: DockerFacts, files: tuple[FileChange, ...], notes: tuple[str, ...]) -> RuntimePlan:
    """A reload when daemon.json changes on a running dockerd. dockerd's reload applies only the
    keys the file sets: a key nodecfg added and the undo takes out would stay in force. So the
    first apply writes the undone file with those keys as `[]` (the reload empties them), and the
    second apply (`then`) writes the file's own bytes, with no reload. `gone`: how `docker info`
    names each entry taken out (`"host:port"` insecure, `scheme://host:port/` mirror)."""
    svc = facts.service
    note = "; ".join(notes)
    daemon = next((f for f in files if f.path == facts.daemon_json_path), None)
    if daemon is None or not svc.active or svc.masked:
        return RuntimePlan("docker", "configure", note, files)
    before, after = _lists(daemon.old), _lists(None if daemon.remove else daemon.content)
    gone: list[str] = []
    for key, entries in before.items():
        for e in entries:
            if not any(_mirror_matches(a, e, key) for a in after.get(key, [])):
                bare = e.strip().rstrip("/")
                gone.append(f'"{bare.partition("://")[2] or bare}"' if key == "insecure-registries" else f"{bare}/")
    held = [k for k in before if k not in after]
    then: tuple[FileChange, ...] = ()
    if held:
        try:
            doc = {} if daemon.remove else json.loads(daemon.content or "{}")
        except ValueError:
            doc = {}
        step = FileChange(daemon.path, json.dumps({**(doc if isinstance(doc, dict) else {}), **{k: [] for k in held}},
                                                  indent=2) + "\n",
                          daemon.mode, daemon.old, f"{', '.join(held)} emptied for dockerd's reload",
                          secret=daemon.secret, validate="json")
        then = (replace(daemon, old=step.content),)
        files = tuple(step if f is daemon else f for f in files)
    return RuntimePlan("docker", "configure", note, files, "reload", then=then, gone=tuple(dict.fromkeys(gone)))


def undone(info: str, gone: tuple[str, ...]) -> str | None:
    if not info.strip():
        return "docker does not answer after the reload"
    for word in gone:
        if word in info:
            return f"docker info still lists {word.strip(chr(34))} (the reload did not take it out)"
    return None


# ---------------------------------------------------------------------------------------------
# the Runtime: facts, plan, verify, smoke diagnoses; its node-side functions in scripts/docker.sh

def _text(files: Mapping[str, FileFact], path: str) -> str | None:
    fact = files.get(path)
    return fact.text() if fact is not None else None


class Docker:
    """dockerd: daemon.json (and root's client config.json for credentials); a reload."""

    name: str = "docker"
    layer: int = 1  # dockerd talks to containerd
    fact_files: tuple[str, ...] = (DAEMON_JSON, ROOT_DOCKER_CONFIG, RECORD)
    fact_dirs: tuple[str, ...] = (f"{CERTS_D}/*/ca.crt",)
    formats: Mapping[str, str] = {"dockerd": "json"}
    checks: tuple[str, ...] = ("docker", "docker mirror")

    def shell(self) -> str:
        return scripts.read("docker.sh")

    def read_facts(self, service: ServiceFacts, values: Mapping[str, str],
                   files: Mapping[str, FileFact], dirs: Mapping[str, FileFact]) -> DockerFacts:
        del dirs
        try:  # a garbled one is as good as none: the unit's ExecStart says the same, or nearly
            raw = base64.b64decode(values.get("cmdline.docker", ""), validate=True).decode("utf-8", "replace")
        except ValueError:
            raw = ""
        cmdline = tuple(a for a in raw.split("\0") if a) or service.exec_start
        path = config_file_flag(cmdline) or DAEMON_JSON
        cas = {p: t for p, f in files.items() if p.startswith(f"{CERTS_D}/") and (t := f.text()) is not None}
        return DockerFacts(service=service, daemon_json=_text(files, path), daemon_json_path=path,
                           client_config=_text(files, ROOT_DOCKER_CONFIG), cmdline=cmdline,
                           drop_ins=service.drop_ins, ca_files=cas, record=_text(files, RECORD))

    def version_of(self, line: str) -> str:
        """'Docker version 20.10.24+dfsg1, build ...' -> 20.10.24+dfsg1."""
        words = line.split()
        return words[2].rstrip(",") if len(words) > 2 else ""

    def plan(self, facts: DockerFacts, want: Want) -> RuntimePlan:
        return plan_docker(facts, want.endpoint, "docker.io" in want.mirrors, want.credentials, want.ca_pem,
                           want.replicas)

    def dirs_to_list(self, plan: RuntimePlan) -> tuple[str, ...]:
        del plan
        return ()

    def trust_file(self, endpoint: str) -> str:
        return ca_path(endpoint)

    def check_effect(self, plan: RuntimePlan, values: Mapping[str, str], want: Want) -> str | None:
        del plan
        return check_effect(values.get("docker.info", ""), want.endpoint, "docker.io" in want.mirrors,
                            want.ca_pem is not None, want.replicas)

    def unmerge(self, path: str, text: str, rec: record.Record) -> str | None:
        keys = rec.keys(path)
        return record.unmerge_json(text, keys, _same_entry) if keys else None

    def undo_plan(self, facts: DockerFacts, files: tuple[FileChange, ...], notes: tuple[str, ...]) -> RuntimePlan:
        return plan_undo_docker(facts, files, notes)

    def undone(self, plan: RuntimePlan, values: Mapping[str, str]) -> str | None:
        return undone(values.get("docker.info", ""), plan.gone)

    def probe_more(self, node: BoundedNode, plan: SmokePlan, vals: Mapping[str, list[str]]) -> str:
        del node, plan, vals
        return ""

    def down_checks(self, state: str | None) -> tuple[Check, ...]:
        return (Check("docker mirror", "skip", state or "docker down"),)

    def diagnose(self, vals: Mapping[str, list[str]], plan: SmokePlan) -> tuple[Check, ...]:
        ep = plan.endpoint
        manifest = first(vals, "manifest")
        code = fields(vals, "reach", 3)[2]
        hung = timeout_problem(vals, "dockerd", "docker.info")
        if hung is not None:  # the probe asked nothing more of it
            return (Check("docker", "FAIL", hung), Check("docker mirror", "skip", "docker does not answer"))
        checks: list[Check] = []
        if "docker.pull" in vals:
            rc, msg = rc_msg(vals["docker.pull"])
            late = (timeout_problem(vals, "dockerd", "docker.pull") if rc == "124"
                    else timeout_problem(vals, "dockerd", "docker.rmi"))  # the cleanup, after both pulls
            if late is not None:
                checks.append(_by_path(Check("docker", "FAIL", late), plan))
            else:
                checks.append(_by_path(Check("docker", "ok" if rc == "0" else "FAIL",
                                             f"docker pull {ep}/{plan.image.target}" if rc == "0"
                                             else pull_problem(msg, "docker", ep, manifest)), plan))
        if "docker.mirror" in vals and plan.hub_image is not None:
            rc, msg = rc_msg(vals["docker.mirror"])
            name = plan.hub_image.upstream
            if rc == "124":
                checks.append(Check("docker mirror", "FAIL", timeout_problem(vals, "dockerd", "docker.mirror")
                                    or "docker pull through the mirror ran out of time"))
            elif rc == "nomirror":
                checks.append(Check("docker mirror", "FAIL", f"docker's registry-mirrors does not list "
                                    f"{plan.scheme}://{plan.pulls_from[0]}: docker.io images won't come "
                                    "from the registry; run configure-nodes"))
            elif rc != "0" and code == "401" and "registry-1.docker.io" in msg:
                # the mirror refused the pull and dockerd fell back to Docker Hub (offline here)
                checks.append(Check("docker mirror", "FAIL", "401 from the mirror: dockerd presents the "
                                    "Docker Hub credentials (https://index.docker.io/v1/ in /root/.docker/"
                                    f"config.json) to a docker.io mirror, and those are not {ep}'s ({msg})"))
            else:
                checks.append(Check("docker mirror", "ok" if rc == "0" else "FAIL",
                                    f"docker pull {name} via the mirror" if rc == "0"
                                    else pull_problem(msg, "docker", ep,
                                                      manifest if plan.hub_image == plan.image else "")))
        elif "docker.info" in vals:
            checks.append(Check("docker mirror", "skip", "docker.io not mirrored or no docker.io image"))
        return tuple(checks)


def _by_path(check: Check, plan: SmokePlan) -> Check:
    """docker's pull by registry path: with replicas it goes to registry.address alone (dockerd has
    no failover there), so its failure is a warning that names it, not a node that cannot pull."""
    if not plan.replicas or check.status != "FAIL":
        return check
    return Check(check.name, "WARN", f"{check.detail} (a pull by registry path goes to registry.address "
                 f"{plan.endpoint} alone: point a DNS name or VIP there at the replicas)")


RUNTIME = Docker()
