"""CRI-O and podman: the containers-registries.conf(5) drop-in and /etc/containers/auth.json.

Both read the same files through containers/image: /etc/containers/registries.conf, then every
`*.conf` in /etc/containers/registries.conf.d in name order (v2 format only), a `[[registry]]`
with the same `prefix` replacing an earlier one, the longest matching prefix winning a pull.
nodecfg writes one drop-in, `99-nodecfg.conf`, and never the distro's main file:

- per mirrored upstream, `prefix = location = <upstream>` and a `[[registry.mirror]]` at the
  registry. A mirror's location replaces the matched prefix, so `docker.io/library/busybox:1.36`
  is asked of `<endpoint>/library/busybox:1.36` (containers/image itself normalizes official Hub
  images to docker.io/library/..., see the manual's "docker.io references"), and
  `registry.k8s.io/pause:3.9` of `<endpoint>/pause:3.9`: where `nodecfg images push` put them;
- a `[[registry]]` for the registry itself, insecure while it is plain HTTP.

The name sorts after every numbered drop-in in common use (Fedora's 000-shortnames, kubespray's
10-<prefix>.conf), so ours replaces their entry for a mirrored upstream; that entry's own mirrors
are kept, after ours. A drop-in that sorts later (Debian's `shortnames.conf` does, but holds only
aliases) and redeclares a prefix, or a longer prefix under a mirrored upstream anywhere (e.g.
`docker.io/library`), wins over ours for those images: reported in the plan's note.

CRI-O re-reads registries.conf on SIGHUP (`systemctl reload crio`); podman reads it per command.
Credentials in auth.json are read per pull, so auth.json alone costs no reload.
"""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nodecfg.errors import NodecfgError
from nodecfg.render import render
from nodecfg.runtimes.common import FileChange, RuntimePlan, ServiceFacts, json_object

RUNTIME = "containers"
MAIN_CONF = "/etc/containers/registries.conf"
DROP_IN_DIR = "/etc/containers/registries.conf.d"
DROP_IN_NAME = "99-nodecfg.conf"
DROP_IN = f"{DROP_IN_DIR}/{DROP_IN_NAME}"
AUTH_JSON = "/etc/containers/auth.json"
MANAGED_MARK = "# Managed by nodecfg"
V1_TABLES = ("search", "insecure", "block")
MIRROR_KEYS = ("location", "insecure", "pull-from-mirror")  # containers-registries.conf(5)


@dataclass(frozen=True)
class ContainersFacts:
    crio: ServiceFacts = field(default_factory=lambda: ServiceFacts("crio"))
    podman_installed: bool = False
    registries_conf: str | None = None  # /etc/containers/registries.conf; None: no file
    drop_ins: Mapping[str, str] = field(default_factory=dict)  # registries.conf.d/*.conf path -> text
    auth_json: str | None = None  # /etc/containers/auth.json; None: no file


class ConfError(NodecfgError):
    """A registries.conf file that podman and CRI-O would refuse, or that can't be merged."""


def _load(text: str, source: str) -> dict[str, Any]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfError(f"{source} is not valid TOML ({exc}); podman and CRI-O refuse it; "
                        "left untouched, nothing written") from None
    return doc


def v1_tables(doc: Mapping[str, Any]) -> list[str]:
    """The version-1 tables of a parsed registries.conf (`[registries.search]`, ...)."""
    registries = doc.get("registries")
    if not isinstance(registries, dict):
        return []
    return [f"[registries.{t}]" for t in V1_TABLES if t in registries]


def _entries(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    regs = doc.get("registry")
    return [r for r in regs if isinstance(r, dict)] if isinstance(regs, list) else []


def _prefix(entry: Mapping[str, Any]) -> str:
    return str(entry.get("prefix") or entry.get("location") or "")


def _under(prefix: str, upstream: str) -> bool:
    """`prefix` is longer than `upstream` and matches a subset of its images."""
    return len(prefix) > len(upstream) and prefix.startswith(upstream) and prefix[len(upstream)] in "/:@"


@dataclass(frozen=True)
class _Kept:
    source: str
    fields: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class _Upstream:
    prefix: str
    kept: tuple[_Kept, ...] = ()


def _read_sources(facts: ContainersFacts) -> tuple[list[tuple[str, dict[str, Any]]],
                                                  list[tuple[str, dict[str, Any]]]]:
    """(files loaded before ours, files loaded after ours), each as (path, parsed document).
    Raises ConfError for a file that podman and CRI-O would refuse: nothing we write helps."""
    before: list[tuple[str, dict[str, Any]]] = []
    after: list[tuple[str, dict[str, Any]]] = []
    if facts.registries_conf is not None:
        doc = _load(facts.registries_conf, MAIN_CONF)
        v1 = v1_tables(doc)
        if v1:
            raise ConfError(f"{MAIN_CONF} is in the deprecated version-1 format ({', '.join(v1)}): "
                            "nodecfg does not mix v1 and v2; convert it to version 2 (containers-"
                            "registries.conf(5)), then re-run; nothing written")
        before.append((MAIN_CONF, doc))
    for path in sorted(facts.drop_ins, key=lambda p: p.rsplit("/", 1)[-1]):
        name = path.rsplit("/", 1)[-1]
        if path == DROP_IN or not name.endswith(".conf"):
            continue
        doc = _load(facts.drop_ins[path], path)
        if v1_tables(doc):
            raise ConfError(f"{path} is in the version-1 format, which drop-ins may not use: podman "
                            "and CRI-O refuse to load any registries config while it is there; "
                            "nothing written")
        (before if name < DROP_IN_NAME else after).append((path, doc))
    return before, after


def _upstreams(mirrors: tuple[str, ...], endpoint: str,
               before: list[tuple[str, dict[str, Any]]]) -> tuple[list[_Upstream], list[str]]:
    """Our entries, each with the mirrors of the entry it replaces (the last earlier one with
    the same prefix) kept after ours."""
    out: list[_Upstream] = []
    notes: list[str] = []
    for upstream in dict.fromkeys(mirrors):
        if upstream == endpoint:
            continue
        replaced = next(((path, e) for path, doc in reversed(before) for e in reversed(_entries(doc))
                         if _prefix(e) == upstream), None)
        kept: list[_Kept] = []
        if replaced is not None:
            path, entry = replaced
            for mirror in entry.get("mirror") or []:
                if not isinstance(mirror, dict) or not isinstance(mirror.get("location"), str):
                    continue
                if mirror["location"].rstrip("/") == endpoint:
                    continue
                kept.append(_Kept(path, tuple((k, mirror[k]) for k in MIRROR_KEYS if k in mirror)))
            location = entry.get("location", upstream)
            if location != upstream or entry.get("blocked"):
                what = "blocked" if entry.get("blocked") else f"location {location}"
                notes.append(f"{upstream}: replaces the [[registry]] of {path} ({what})")
        out.append(_Upstream(upstream, tuple(kept)))
    return out, notes


def _overrides(prefixes: list[str], sources: list[tuple[str, dict[str, Any]]], later: bool) -> list[str]:
    """Entries elsewhere that beat ours: the same prefix in a later drop-in, or a longer prefix
    under one of ours in any file (the longest match wins, whatever the order)."""
    found: list[str] = []
    for path, doc in sources:
        for entry in _entries(doc):
            p = _prefix(entry)
            if later and p in prefixes:
                found.append(f"{path} loads after {DROP_IN_NAME} and redeclares [[registry]] {p}: "
                             f"its entry wins, {p} pulls do not use the registry")
            elif any(_under(p, up) for up in prefixes):
                found.append(f"{path} declares [[registry]] {p}, a longer prefix than ours: "
                             f"images under {p} do not use the registry")
    return found


def render_drop_in(endpoint: str, upstreams: list[_Upstream], insecure: bool = True) -> str:
    text = render("registries.conf.j2", endpoint=endpoint, upstreams=upstreams, insecure=insecure)
    check_drop_in(text, endpoint, [u.prefix for u in upstreams], insecure)
    return text


def check_drop_in(text: str, endpoint: str, prefixes: list[str], insecure: bool = True) -> None:
    """Raise ConfError unless `text` is a v2 drop-in mirroring each prefix at `endpoint`."""
    doc = _load(text, DROP_IN)
    entries = {_prefix(e): e for e in _entries(doc)}
    problems = [p for p in prefixes if p not in entries or not entries[p].get("mirror")
                or entries[p]["mirror"][0] != {"location": endpoint, "insecure": insecure}]
    if v1_tables(doc) or problems or entries.get(endpoint, {}).get("insecure", False) != insecure:
        raise ConfError(f"{DROP_IN}: the rendered drop-in is not what was meant "
                        f"({', '.join(problems) or endpoint})")


def merge_auth_json(existing: str | None, endpoint: str, username: str, password: str,
                    source: str = AUTH_JSON) -> str | None:
    """auth.json with the registry's credentials (containers-auth.json(5)); None when already there.
    Every other entry is kept. containers/image looks credentials up by the host it contacts, the
    mirror's, so the endpoint's entry serves pulls by upstream name too."""
    doc = json_object(existing, source, ConfError)
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict) or not isinstance(auths.get(endpoint, {}), dict):
        raise ConfError(f"{source}: auths is not an object of objects; left untouched")
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    if auths.get(endpoint, {}).get("auth") == token:
        return None
    auths[endpoint] = {**auths.get(endpoint, {}), "auth": token}
    return json.dumps(doc, indent=2) + "\n"


def plan_containers(facts: ContainersFacts, endpoint: str, mirrors: tuple[str, ...],
                    credentials: tuple[str, str] | None, *, insecure: bool = True) -> RuntimePlan:
    """Decide what CRI-O and podman on one node need: the drop-in, auth.json, reload or nothing."""
    crio = facts.crio
    if not crio.installed and not facts.podman_installed:
        return RuntimePlan(RUNTIME, "absent", "neither CRI-O nor podman installed; skipped")
    if crio.installed and crio.masked and not facts.podman_installed:
        return RuntimePlan(RUNTIME, "masked", "crio masked; skipped (left masked)")
    try:
        before, after = _read_sources(facts)
        upstreams, notes = _upstreams(mirrors, endpoint, before)
        prefixes = [u.prefix for u in upstreams]
        notes += _overrides(prefixes, before, later=False) + _overrides(prefixes, after, later=True)
        text = render_drop_in(endpoint, upstreams, insecure)
        auth = merge_auth_json(facts.auth_json, endpoint, *credentials) if credentials else None
    except ConfError as exc:
        return RuntimePlan(RUNTIME, "failed", str(exc))
    existing = facts.drop_ins.get(DROP_IN)
    files: list[FileChange] = []
    if existing != text:
        if existing is not None and not existing.lstrip().startswith(MANAGED_MARK):
            notes.append(f"{DROP_IN} had no nodecfg mark; replaced (the old one is kept as a backup)")
        files.append(FileChange(DROP_IN, text, 0o644, existing, "registry mirrors drop-in",
                                validate="toml"))
    if auth is not None:
        files.append(FileChange(AUTH_JSON, auth, 0o600, facts.auth_json, "registry credentials",
                                secret=True, validate="json"))
        notes.append(f"{AUTH_JSON} is read by podman only with REGISTRY_AUTH_FILE or --authfile, "
                     "by CRI-O only with global_auth_file")
    action: Literal["none", "reload"] = "none"
    if crio.installed and crio.masked:
        notes.append("crio masked; left masked, not reloaded")
    elif crio.installed and files and files[0].path == DROP_IN:
        if crio.active:
            action = "reload"  # SIGHUP: CRI-O re-reads registries.conf and its drop-ins
        else:
            notes.append("crio not running: config written, not started")
    return RuntimePlan(RUNTIME, "configure", "; ".join(notes), tuple(files), action)
