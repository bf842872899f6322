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

With replicas (`Want.replicas`, this node's order) each mirrored upstream gets one
`[[registry.mirror]]` per replica in that order (insecure each while plain HTTP), and the entry for
the registry itself mirrors it at every replica too, so pulls by registry path fail over as well.
containers/image tries the mirrors in order, the primary last, and the first source that serves
the manifest serves every blob. CA files and auth.json entries go to every replica's endpoint;
what nodecfg added to auth.json is recorded in /var/lib/nodecfg/containers.json
(nodecfg/runtimes/record.py), so a removed replica's credentials leave with it.

CRI-O re-reads registries.conf on SIGHUP (`systemctl reload crio`); podman reads it per command.
Credentials in auth.json are read per pull, so auth.json alone costs no reload.

The registered runtime (`RUNTIME`, named `containers`, its unit crio.service) is "installed" when
crio or podman is. Its verify reads `podman info --format json` (the registries podman resolves,
parsed here) after every write, and its smoke probe pulls with podman by upstream name through
the mirror, removing the image after unless the node already had it. Root podman does not read
/etc/containers/auth.json by default: a 401 names REGISTRY_AUTH_FILE / --authfile.
"""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from nodecfg import scripts
from nodecfg.errors import NodecfgError
from nodecfg.render import render
from nodecfg.runtimes import record
from nodecfg.runtimes.base import (
    Check,
    FileFact,
    SmokePlan,
    Want,
    first,
    parse_probe,
    pull_problem,
    rc_msg,
    timeout_problem,
)
from nodecfg.runtimes.common import FileChange, RuntimePlan, ServiceFacts, json_object

if TYPE_CHECKING:
    from nodecfg.credentials import Credentials
    from nodecfg.deadline import BoundedNode

NAME = "containers"
MAIN_CONF = "/etc/containers/registries.conf"
DROP_IN_DIR = "/etc/containers/registries.conf.d"
DROP_IN_NAME = "99-nodecfg.conf"
DROP_IN = f"{DROP_IN_DIR}/{DROP_IN_NAME}"
CERTS_D = "/etc/containers/certs.d"  # containers-certs.d(5): <host:port>/ca.crt
AUTH_JSON = "/etc/containers/auth.json"
RECORD = record.record_path(NAME)
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
    podman_version: str = ""
    ca_files: Mapping[str, str] = field(default_factory=dict)  # certs.d/*/ca.crt path -> text
    record: str | None = None  # /var/lib/nodecfg/containers.json: what nodecfg added (record.py)

    @property
    def service(self) -> ServiceFacts:
        """The runtime as a whole for the reports: crio's unit (its state, its rollback), installed
        when crio or podman is, with both versions."""
        versions = [f"crio {self.crio.version}" if self.crio.installed and self.crio.version else "",
                    f"podman {self.podman_version}" if self.podman_installed and self.podman_version
                    else ""]
        return replace(self.crio, name=NAME, installed=self.crio.installed or self.podman_installed,
                       version=", ".join(v for v in versions if v))


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
               before: list[tuple[str, dict[str, Any]]],
               replicas: tuple[str, ...] = ()) -> tuple[list[_Upstream], list[str]]:
    """Our entries, each with the mirrors of the entry it replaces (the last earlier one with
    the same prefix) kept after ours."""
    ours = {endpoint, *replicas}
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
                if mirror["location"].rstrip("/") in ours:
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


def render_drop_in(endpoint: str, upstreams: list[_Upstream], insecure: bool = True,
                   replicas: tuple[str, ...] = ()) -> str:
    text = render("registries.conf.j2", endpoint=endpoint, upstreams=upstreams, insecure=insecure,
                  replicas=list(replicas))
    check_drop_in(text, endpoint, [u.prefix for u in upstreams], insecure, replicas)
    return text


def check_drop_in(text: str, endpoint: str, prefixes: list[str], insecure: bool = True,
                  replicas: tuple[str, ...] = ()) -> None:
    """Raise ConfError unless `text` is a v2 drop-in mirroring each prefix at the replicas in this
    order (else at `endpoint`), and, with replicas, the registry itself at them too."""
    doc = _load(text, DROP_IN)
    entries = {_prefix(e): e for e in _entries(doc)}
    hosts = [{"location": h, "insecure": insecure} for h in replicas or (endpoint,)]
    problems = [p for p in (*prefixes, *([endpoint] if replicas else []))
                if p not in entries or (entries[p].get("mirror") or [])[:len(hosts)] != hosts]
    if v1_tables(doc) or problems or entries.get(endpoint, {}).get("insecure", False) != insecure:
        raise ConfError(f"{DROP_IN}: the rendered drop-in is not what was meant "
                        f"({', '.join(problems) or endpoint})")


def merge_auth_json(existing: str | None, endpoint: str, creds: Credentials | None,
                    source: str = AUTH_JSON, *, replicas: tuple[str, ...] = (),
                    recorded: tuple[str, ...] = ()) -> tuple[str | None, tuple[str, ...]]:
    """auth.json with the registry's credentials (containers-auth.json(5)), for the registry and
    each replica; text None when already there. Every other entry is kept, but the ones nodecfg
    `recorded` as its own and no longer wants (a removed replica; every one when the registry has
    no login now). containers/image looks credentials up by the host it contacts, the mirror's, so
    each endpoint's entry serves pulls by upstream name too. Returns (text, the entries nodecfg
    added: its record)."""
    doc = json_object(existing, source, ConfError)
    auths = doc.setdefault("auths", {})
    keys = list(dict.fromkeys((endpoint, *replicas))) if creds is not None else []
    if not isinstance(auths, dict) or not all(isinstance(auths.get(k, {}), dict) for k in keys):
        raise ConfError(f"{source}: auths is not an object of objects; left untouched")
    before = dict(auths)
    changed = False
    for key in record.stale_keys(recorded, keys):
        if auths.pop(key, None) is not None:
            changed = True
    token = creds.basic() if creds is not None else None
    for key in keys:
        if auths.get(key, {}).get("auth") != token:
            auths[key] = {**auths.get(key, {}), "auth": token}
            changed = True
    added = record.added_keys(before, keys, recorded)
    return (json.dumps(doc, indent=2) + "\n" if changed else None), added


def ca_path(endpoint: str) -> str:
    return f"{CERTS_D}/{endpoint}/ca.crt"


def plan_containers(facts: ContainersFacts, endpoint: str, mirrors: tuple[str, ...],
                    credentials: Credentials | None, ca_pem: str | None = None,
                    replicas: tuple[str, ...] = ()) -> RuntimePlan:
    """Decide what CRI-O and podman on one node need: the drop-in, auth.json, reload or nothing.
    `replicas`: the registry's replicas in this node's order (() without replicas)."""
    crio = facts.crio
    if not crio.installed and not facts.podman_installed:
        return RuntimePlan(NAME, "absent", "neither CRI-O nor podman installed; skipped")
    if crio.installed and crio.masked and not facts.podman_installed:
        return RuntimePlan(NAME, "masked", "crio masked; skipped (left masked)")
    try:
        mine = record.parse(facts.record, RECORD)
        before, after = _read_sources(facts)
        upstreams, notes = _upstreams(mirrors, endpoint, before, replicas)
        prefixes = [u.prefix for u in upstreams]
        notes += _overrides(prefixes, before, later=False) + _overrides(prefixes, after, later=True)
        text = render_drop_in(endpoint, upstreams, insecure=ca_pem is None, replicas=replicas)
        recorded = mine.entries(AUTH_JSON, "auths")
        auth, added = (merge_auth_json(facts.auth_json, endpoint, credentials, replicas=replicas,
                                       recorded=recorded)
                       if credentials or recorded else (None, ()))
    except (ConfError, record.RecordError) as exc:
        return RuntimePlan(NAME, "failed", str(exc))
    existing = facts.drop_ins.get(DROP_IN)
    files: list[FileChange] = []
    if existing != text:
        if existing is not None and not existing.lstrip().startswith(MANAGED_MARK):
            notes.append(f"{DROP_IN} had no nodecfg mark; replaced (the old one is kept as a backup)")
        files.append(FileChange(DROP_IN, text, 0o644, existing, "registry mirrors drop-in",
                                validate="toml"))
    for name in dict.fromkeys((endpoint, *replicas)) if ca_pem is not None else ():
        if facts.ca_files.get(ca_path(name)) != ca_pem:
            # read per pull by podman and CRI-O alike: no reload for it
            files.append(FileChange(ca_path(name), str(ca_pem), 0o644, facts.ca_files.get(ca_path(name)),
                                    "the registry's CA"))
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
    return RuntimePlan(NAME, "configure", "; ".join(notes), tuple(files), action,
                       added={AUTH_JSON: {"auths": added}})


# ---------------------------------------------------------------------------------------------
# the Runtime: facts, plan, verify, smoke diagnoses; its node-side functions in scripts/containers.sh

def podman_registries(info_b64: str) -> dict[str, Any] | None:
    """`registries` of `podman info --format json` (base64): prefix -> its entry (Prefix,
    Location, Insecure, Blocked, Mirrors: [{Location, Insecure}]). None when it is no JSON object."""
    try:
        info = json.loads(base64.b64decode(info_b64).decode("utf-8", "replace")) if info_b64 else None
    except ValueError:
        return None
    if not isinstance(info, dict):
        return None
    regs = info.get("registries") or {}
    return {k: v for k, v in regs.items() if isinstance(v, dict)} if isinstance(regs, dict) else {}


def mirror_problem(regs: Mapping[str, Any], upstream: str, endpoint: str,
                   replicas: tuple[str, ...] = ()) -> str | None:
    """None when podman resolves `upstream` with the replicas in this order (else the registry)
    as its first mirrors, else what it has."""
    entry = regs.get(upstream)
    listed = (entry or {}).get("Mirrors")
    mirrors = [m.get("Location") for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
    hosts = list(replicas or (endpoint,))
    if entry is not None and [str(m).rstrip("/") for m in mirrors[:len(hosts)]] == hosts:
        return None
    has = f"mirrors {', '.join(map(str, mirrors))}" if mirrors else "no mirror"
    return (f"podman info shows {has} for {upstream}, not {', '.join(hosts)}"
            + ("" if entry is not None else f" (no [[registry]] for {upstream})"))


def _mirrored(want_mirrors: tuple[str, ...], endpoint: str) -> list[str]:
    return [m for m in dict.fromkeys(want_mirrors) if m != endpoint]


def look_args(plan: SmokePlan) -> tuple[str, ...]:
    """First smoke step (`containers_look`): is podman there, what registries it resolves, has it
    the image already."""
    return ("containers_look", plan.ctr_ref)


def pull_args(plan: SmokePlan, had: bool) -> tuple[str, ...]:
    """Second smoke step (`containers_pull`): pull by the name the kubelet would use, within the
    node's deadline; then remove the image unless the node had it before (or may have had it).
    With replicas, podman also says which one served it."""
    return ("containers_pull", plan.ctr_ref, "yes" if had else "no", *(("via",) if plan.replicas else ()))


def podman_check(vals: Mapping[str, list[str]], plan: SmokePlan) -> Check | None:
    """The podman check from the smoke probe's values (pure); None when podman was not probed."""
    if "podman" not in vals:
        return None
    if first(vals, "podman") != "yes":
        return Check("podman", "skip", "not installed")
    ep = plan.endpoint
    regs = podman_registries(first(vals, "containers.info"))
    if regs is None:
        return Check("podman", "FAIL", timeout_problem(vals, "podman", "podman.info") or "podman info "
                     "--format json gave no readable JSON: podman does not work on this node")
    mirrored = plan.image.registry in plan.mirrors and plan.image.registry != ep
    if mirrored:
        problem = mirror_problem(regs, plan.image.registry, ep, plan.replicas)
        if problem is not None:
            return Check("podman", "FAIL", f"no mirror config for {plan.image.registry}: {problem}; "
                         f"{DROP_IN} is missing or was overridden; run configure-nodes")
    return _pull_check(vals, plan, mirrored)


def _pull_check(vals: Mapping[str, list[str]], plan: SmokePlan, mirrored: bool) -> Check:
    ep = plan.endpoint
    if "podman.pull" not in vals:
        return Check("podman", "FAIL", "podman pull did not run")
    rc, msg = rc_msg(vals["podman.pull"])
    if rc == "0":
        served = first(vals, "podman.via")
        if not plan.replicas:
            via = f" via the mirror {ep}" if mirrored else ""
        else:  # the source podman tried last served it: it says so at debug level
            via = f" via the mirror {served}" if served else f" via the replicas {', '.join(plan.replicas)}"
        return Check("podman", "ok", f"podman pull {plan.ctr_ref}{via}")
    if rc == "124":
        return Check("podman", "FAIL", timeout_problem(vals, "podman", "podman.pull")
                     or f"podman pull {plan.ctr_ref} ran out of time ({msg})")
    why = pull_problem(msg, "podman", ep, first(vals, "manifest"))
    if why.startswith("401"):
        why += (f"; root podman does not read {AUTH_JSON} by default: set REGISTRY_AUTH_FILE="
                f"{AUTH_JSON} or pass --authfile {AUTH_JSON} (CRI-O: global_auth_file)")
    return Check("podman", "FAIL", why)


def crio_check(vals: Mapping[str, list[str]], plan: SmokePlan) -> Check | None:
    """crio (active): the drop-in it reads mirrors the image's upstream at the registry."""
    if "containers.dropin" not in vals:
        return None
    raw = first(vals, "containers.dropin")
    try:
        text = base64.b64decode(raw).decode("utf-8") if raw else None
    except ValueError:
        text = None
    if not text:
        return Check("crio", "FAIL", f"{DROP_IN} is missing: CRI-O pulls go to the upstreams; "
                     "run configure-nodes")
    prefixes = [plan.image.registry] if plan.image.registry in plan.mirrors else []
    try:
        check_drop_in(text, plan.endpoint, [p for p in prefixes if p != plan.endpoint],
                      plan.scheme == "http", plan.replicas)
    except ConfError as exc:
        return Check("crio", "FAIL", f"{exc}; run configure-nodes")
    return Check("crio", "ok", f"active; {DROP_IN} mirrors {', '.join(prefixes) or 'the registry'} "
                 f"at {', '.join(plan.pulls_from)}")


class Containers:
    """CRI-O and podman: the registries.conf.d drop-in and auth.json; a reload of a running crio
    when the drop-in changed (podman reads it per command)."""

    name: str = NAME
    unit: str = "crio"  # podman has none
    layer: int = 2  # talks to neither docker nor containerd: acts first, listed last
    fact_files: tuple[str, ...] = (MAIN_CONF, DROP_IN, AUTH_JSON, RECORD)
    fact_dirs: tuple[str, ...] = (f"{DROP_IN_DIR}/*.conf", f"{CERTS_D}/*/ca.crt")
    formats: Mapping[str, str] = {"toml": "toml", "json": "json"}
    checks: tuple[str, ...] = ("crio", "podman")
    verify_without_action: bool = True  # podman reads its config per command: verify every write

    def shell(self) -> str:
        return scripts.read("containers.sh")

    def read_facts(self, service: ServiceFacts, values: Mapping[str, str],
                   files: Mapping[str, FileFact], dirs: Mapping[str, FileFact]) -> ContainersFacts:
        del dirs
        podman_path, _, podman_version = values.get("containers.podman", "").partition("\t")

        def text(path: str) -> str | None:
            fact = files.get(path)
            return fact.text() if fact is not None else None

        drop_ins = {p: t for p, f in files.items()
                    if p.startswith(DROP_IN_DIR + "/") and p.endswith(".conf")
                    and (t := f.text()) is not None}
        return ContainersFacts(crio=replace(service, name="crio"), podman_installed=bool(podman_path),
                               registries_conf=text(MAIN_CONF), drop_ins=drop_ins,
                               auth_json=text(AUTH_JSON), record=text(RECORD),
                               podman_version=self.version_of(podman_version),
                               ca_files={p: t for p, f in files.items() if p.startswith(f"{CERTS_D}/")
                                         and (t := f.text()) is not None})

    def version_of(self, line: str) -> str:
        """'crio version 1.30.1' / 'podman version 5.4.2' -> the version."""
        words = line.split()
        return words[-1] if len(words) > 2 else ""

    def plan(self, facts: ContainersFacts, want: Want) -> RuntimePlan:
        return plan_containers(facts, want.endpoint, want.mirrors, want.credentials, want.ca_pem,
                               want.replicas)

    def dirs_to_list(self, plan: RuntimePlan) -> tuple[str, ...]:
        del plan
        return ()

    def trust_file(self, endpoint: str) -> str:
        return ca_path(endpoint)

    def check_effect(self, plan: RuntimePlan, values: Mapping[str, str], want: Want) -> str | None:
        """None when podman (if installed) resolves every mirrored upstream at the registry first;
        an upstream the plan said another file overrides is not held against it."""
        if "containers.info" not in values:
            return None  # crio only: it settled active after its reload
        regs = podman_registries(values["containers.info"])
        if regs is None:
            return "podman info --format json gave no readable JSON after the write"
        for upstream in _mirrored(want.mirrors, want.endpoint):
            if f"redeclares [[registry]] {upstream}:" in plan.note:
                continue
            problem = mirror_problem(regs, upstream, want.endpoint, want.replicas)
            if problem is not None:
                return problem
        return None

    def unmerge(self, path: str, text: str, rec: record.Record) -> str | None:
        keys = rec.keys(path)
        return record.unmerge_json(text, keys, lambda _k, a, b: a == b) if keys else None

    def undo_plan(self, facts: ContainersFacts, files: tuple[FileChange, ...],
                  notes: tuple[str, ...]) -> RuntimePlan:
        """A reload of a running (unmasked) crio when the drop-in changes; podman reads per command."""
        crio = facts.crio
        reload = crio.installed and crio.active and not crio.masked and any(f.path == DROP_IN for f in files)
        return RuntimePlan(NAME, "configure", "; ".join(notes), files, "reload" if reload else "none")

    def undone(self, plan: RuntimePlan, values: Mapping[str, str]) -> str | None:
        del plan
        if "containers.info" in values and podman_registries(values["containers.info"]) is None:
            return "podman info --format json gave no readable JSON after the undo"
        return None

    def probe_more(self, node: BoundedNode, plan: SmokePlan, vals: Mapping[str, list[str]]) -> str:
        """podman, whatever crio's state: look (installed? its registries? the image there?), then
        pull by upstream name only when the mirror is in place (else an offline node would go to
        the upstream)."""
        del vals
        res = node.run(scripts.script("call.sh", [self.shell()], look_args(plan)), "containers_look")
        output = "\n" + res.stdout
        look = parse_probe(res.stdout)
        if first(look, "podman") != "yes":
            return output if "podman\t" in res.stdout else output + "\npodman\tno\n"
        regs = podman_registries(first(look, "containers.info"))
        mirrored = plan.image.registry in plan.mirrors and plan.image.registry != plan.endpoint
        if regs is None or (mirrored and mirror_problem(regs, plan.image.registry, plan.endpoint,
                                                        plan.replicas)):
            return output
        pull = node.run(scripts.script("call.sh", [self.shell()], pull_args(plan, "podman.had" in look)),
                        "containers_pull")
        return output + "\n" + pull.stdout

    def down_checks(self, state: str | None) -> tuple[Check, ...]:
        del state  # podman is checked whatever crio's state (probe_more)
        return ()

    def diagnose(self, vals: Mapping[str, list[str]], plan: SmokePlan) -> tuple[Check, ...]:
        return tuple(ch for ch in (crio_check(vals, plan), podman_check(vals, plan)) if ch is not None)


RUNTIME = Containers()
