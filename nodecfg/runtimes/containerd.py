"""containerd: the certs.d hosts.toml mirror files, the plan, its verify and smoke checks.

config.toml — the files containerd really reads (its imports too), the config_path in effect and
nodecfg's edits of it — is containerd_config.py's. A hosts.toml change needs no restart; a config
change needs one.

With replicas (`Want.replicas`, this node's order), every hosts.toml — each mirrored upstream's
and the registry's own, so pulls by registry path fail over too — lists one `[host]` per replica
in that order: containerd tries them in file order, then `server`, per request (a dead first host
costs its dial timeout on every blob). `dial_timeout = "2s"` is written only where the node's
containerd reads it (2.1+; 1.6 and 1.7 accept the key and ignore it: seen on the lab, a dead host
still took their 30 s). A hosts.toml nodecfg merged into says how many of its first hosts are
nodecfg's (`merged_mark`), so a removed replica leaves it too.
"""

from __future__ import annotations

import base64
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from nodecfg import scripts, tagged
from nodecfg.render import render
from nodecfg.runtimes import record
from nodecfg.runtimes.base import (
    IMPORT_LEVELS,
    Action,
    Check,
    FileChange,
    FileFact,
    RuntimePlan,
    ServiceFacts,
    SmokePlan,
    Want,
    first,
    parse_probe,
    pull_problem,
    rc_msg,
    timeout_problem,
)
from nodecfg.runtimes.containerd_config import (
    CONFIG_TOML,
    DEFAULT_CERTS_D,
    ConfigFile,
    TomlMergeError,
    config_path_of,
    effective_registry,
    load_order,
    registry_section,
    set_config_path,
    table_at,
    unset_config_path,
)

if TYPE_CHECKING:
    from nodecfg.credentials import Credentials
    from nodecfg.deadline import BoundedNode

MANAGED_MARK = "# Managed by nodecfg"
MERGED_MARK = "# nodecfg merged"
UPSTREAM_SERVERS = {"docker.io": "https://registry-1.docker.io"}
DIAL_TIMEOUT = "2s"  # per replica host, where containerd reads it
DIAL_TIMEOUT_SINCE = (2, 1)  # containerd PR #11106
RECORD = record.record_path("containerd")


@dataclass(frozen=True)
class ContainerdFacts:
    service: ServiceFacts
    config_toml: str | None = None  # None: no file
    config_file: str = CONFIG_TOML
    hosts: dict[str, str] = field(default_factory=dict)  # existing hosts.toml path -> text
    record: str | None = None  # /var/lib/nodecfg/containerd.json: what nodecfg set (record.py)
    imported: tuple[ConfigFile, ...] = ()  # the files it imports, in containerd's load order
    # what the config imports that facts did not read yet (paths, or `dir/glob`): another look
    unread: tuple[str, ...] = ()


def render_hosts(upstream: str, endpoint: str, authorization: str | None,
                 extra_hosts: tuple[str, ...] = (), ca: str | None = None,
                 replicas: tuple[str, ...] = (), dial_timeout: str | None = None) -> str:
    """hosts.toml for `upstream` (or for the registry itself when upstream == endpoint); `ca`: the
    path of the registry's CA on the node when it serves TLS (None: plain HTTP); `replicas`: the
    hosts in this node's order (() : the registry's endpoint alone)."""
    own = upstream == endpoint
    scheme = "https" if ca else "http"
    server = f"{scheme}://{endpoint}" if own else UPSTREAM_SERVERS.get(upstream, f"https://{upstream}")
    hosts = replicas or (endpoint,)
    text = render("hosts.toml.j2", upstream=upstream, hosts=hosts, server=server, scheme=scheme,
                  capabilities=["pull", "resolve", "push"] if own else ["pull", "resolve"],
                  authorization=authorization, ca=ca, replicas=replicas, dial_timeout=dial_timeout)
    ours = {_url_key(f"{s}://{h}") for h in (endpoint, *hosts) for s in ("http", "https")}
    for host in extra_hosts:
        if host.rstrip("/") == server or _url_key(host) in ours:
            continue
        text += f'\n[host."{host}"]\n  capabilities = ["pull", "resolve"]\n'
    return text


BY_HAND = "already configured (by hand)"
_MERGED_COUNT = re.compile(r"the registry's (\d+) replicas first")


def _url_key(url: str) -> str:
    return url.strip().rstrip("/").lower()


def merged_mark(count: int) -> str:
    """The comment heading a hosts.toml nodecfg merged into: with replicas it says how many of its
    first hosts are nodecfg's (a later run replaces exactly those)."""
    if count > 1:
        return f"{MERGED_MARK[2:]} this file: the registry's {count} replicas first, then the hosts it already had."
    return MERGED_MARK[2:] + " this file: the local registry first, then the hosts it already had."


def hand_made_equivalent(old: dict[str, Any], new: dict[str, Any], endpoint: str, scheme: str = "http",
                         replicas: tuple[str, ...] = ()) -> bool:
    """Does a hosts.toml nodecfg did not write already send pulls to the registry first?

    The same setting: its first hosts (or, with no host table and no replicas, the server) are
    ours in order (http://<endpoint>, or each replica; case and a trailing '/' aside), each can
    pull and resolve (containerd's default when no capabilities are listed), and each carries
    nodecfg's Authorization header when the registry has a login. Keys nodecfg does not write
    there (skip_verify, dial_timeout, ...) are the operator's — except over TLS, where each host
    must name nodecfg's `ca` and must not skip verification."""
    ours = [f"{scheme}://{h}" for h in replicas or (endpoint,)]
    hosts = old.get("host") or {}
    if hosts:
        firsts = list(hosts.items())[:len(ours)]
        if [_url_key(u) for u, _ in firsts] != [_url_key(u) for u in ours]:
            return False
    elif len(ours) == 1 and _url_key(str(old.get("server", ""))) == _url_key(ours[0]):
        firsts = [(ours[0], {})]
    else:
        return False
    return all(_does_what_ours_does(host, new["host"][next(u for u in ours if _url_key(u) == _url_key(url))])
               for url, host in firsts)


def _does_what_ours_does(host: Any, want: dict[str, Any]) -> bool:
    """A hand-made `[host]` table that pulls and resolves as nodecfg's `want` would (its CA and
    header; its other keys are the operator's)."""
    if not isinstance(host, dict):
        return False
    caps = host.get("capabilities", ["pull", "resolve", "push"])
    if not isinstance(caps, list) or not {"pull", "resolve"} <= set(caps):
        return False
    if want.get("ca") is not None and (host.get("ca") != want["ca"] or host.get("skip_verify")):
        return False
    header = (want.get("header") or {}).get("Authorization")
    have = (host.get("header") or {}) if isinstance(host.get("header"), dict) else {}
    return header is None or have.get("Authorization") == header


def merge_hosts(existing: str | None, rendered: str, endpoint: str, source: str,
                scheme: str = "http", replicas: tuple[str, ...] = ()) -> str | None:
    """The hosts.toml to write, or None when `existing` already does what `rendered` does.

    A file nodecfg wrote is replaced; a foreign one keeps its server and its other hosts, with the
    local registry (or each replica, in this node's order) put first (hosts are tried in order).
    The hosts nodecfg put first in a file it merged before are its own: replaced, never kept.
    """
    import tomlkit

    if existing is not None and existing == rendered:
        return None
    if existing is None or existing.lstrip().startswith(MANAGED_MARK + ":") or not existing.strip():
        return rendered
    try:
        old = tomllib.loads(existing)
    except tomllib.TOMLDecodeError as exc:
        raise TomlMergeError(f"{source} is not valid TOML ({exc}); containerd ignores it; "
                             "fix or remove it") from None
    new = tomllib.loads(rendered)
    ours = [f"{scheme}://{h}" for h in replicas or (endpoint,)]
    # the registry (and each replica) under its other scheme is stale
    stale = {f"{s}://{h}" for h in (endpoint, *replicas) for s in ("http", "https")} - set(ours)
    old_hosts = old.get("host") or {}
    if hand_made_equivalent(old, new, endpoint, scheme, replicas):
        return None
    before = 0  # the hosts a merge of nodecfg's put first: its own
    if existing.lstrip().startswith(MERGED_MARK):
        count = _MERGED_COUNT.search(existing.lstrip().splitlines()[0])
        before = int(count.group(1)) if count else 0
    doc = tomlkit.document()
    doc.add(tomlkit.comment(merged_mark(len(ours))))
    for key, value in old.items():
        if key != "host":
            doc[key] = value
    if "server" not in doc or str(doc["server"]).rstrip("/") in stale:
        doc["server"] = new["server"]
    hosts = tomlkit.table(is_super_table=True)
    for url in ours:
        hosts[url] = new["host"][url]
    skip = {_url_key(u) for u in (*ours, *stale)}
    for i, (name, value) in enumerate(old_hosts.items()):
        if i >= before and _url_key(name) not in skip:
            # the operator's spelling of ours is replaced, not kept twice; ours under the other scheme goes
            hosts[name] = value
    doc["host"] = hosts
    return tomlkit.dumps(doc)


def plan_containerd(facts: ContainerdFacts, endpoint: str, mirrors: tuple[str, ...],
                    credentials: Credentials | None, ca_pem: str | None = None,
                    replicas: tuple[str, ...] = ()) -> RuntimePlan:
    """Decide what containerd on one node needs. `replicas`: the registry's replicas in this
    node's order (() without replicas)."""
    svc = facts.service
    if not svc.installed:
        return RuntimePlan("containerd", "absent", "not installed; skipped")
    if svc.masked:
        return RuntimePlan("containerd", "masked", "masked; skipped (left masked)")
    if facts.unread:
        return RuntimePlan("containerd", "failed", f"{facts.config_file} imports files more than "
                           f"{IMPORT_LEVELS} levels deep ({', '.join(facts.unread)}); left untouched")
    try:
        mine = record.parse(facts.record, RECORD)
        where = effective_registry(facts.config_file, facts.config_toml, facts.imported, svc.major)
        edit = set_config_path(where.text, svc.major, source=where.path, version=where.version)
    except (TomlMergeError, record.RecordError) as exc:
        return RuntimePlan("containerd", "failed", str(exc))
    files: list[FileChange] = []
    if edit.text is not None and where.path == facts.config_file:
        files.append(FileChange(facts.config_file, edit.text, 0o644, facts.config_toml,
                                "config_path set", validate="containerd"))
    elif edit.text is not None:  # containerd reads it only with the files around it: after the restart
        files.append(FileChange(where.path, edit.text, 0o644, where.text,
                                "config_path set where it takes effect (a file config.toml imports)",
                                validate="toml"))
        edit = replace(edit, notes=(*edit.notes, f"config_path set in {where.path}: the CRI settings "
                                    f"in effect are that file's ({facts.config_file} imports it)"))
    authorization = credentials.authorization() if credentials else None
    ca = f"{edit.certs_dir}/{endpoint}/ca.crt" if ca_pem is not None else None
    if ca is not None and ca_pem is not None and facts.hosts.get(ca) != ca_pem:
        # read per pull like hosts.toml: no restart for it
        files.append(FileChange(ca, ca_pem, 0o644, facts.hosts.get(ca), "the registry's CA"))
    upstreams = [endpoint, *mirrors, *(h for h in edit.moved_mirrors if h not in mirrors
                                       and h != endpoint)]
    by_hand: list[str] = []
    dial = DIAL_TIMEOUT if len(replicas) > 1 and svc.release >= DIAL_TIMEOUT_SINCE else None
    for upstream in upstreams:
        path = f"{edit.certs_dir}/{upstream}/hosts.toml"
        rendered = render_hosts(upstream, endpoint, authorization,
                                edit.moved_mirrors.get(upstream, ()), ca, replicas, dial)
        existing = facts.hosts.get(path)
        try:
            text = merge_hosts(existing, rendered, endpoint, path, "https" if ca else "http", replicas)
        except TomlMergeError as exc:
            return RuntimePlan("containerd", "failed", str(exc))
        if text is not None:
            files.append(FileChange(path, text, 0o600 if authorization else 0o644, existing,
                                    f"mirror for {upstream}", secret=authorization is not None,
                                    validate="toml"))
        elif existing is not None and not existing.lstrip().startswith((MANAGED_MARK + ":", MERGED_MARK)):
            by_hand.append(upstream)
    # the config_path nodecfg set where there was none: its own, which the undo takes out
    recorded = mine.entries(where.path, "config_path")  # config.toml, or the drop-in that holds it
    set_path = (edit.set_path,) if edit.set_path else (recorded if edit.certs_dir in recorded else ())
    action: Action = "restart" if edit.text is not None and svc.active else "none"
    notes = list(edit.notes)
    if by_hand:  # a hosts.toml the operator wrote that already does what nodecfg's would
        notes.append(f"{BY_HAND}: hosts.toml for {', '.join(by_hand)}")
    if edit.text is not None and not svc.active:
        notes.append("not running: config written, not started")
    return RuntimePlan("containerd", "configure", "; ".join(notes), tuple(files), action,
                       added={where.path: {"config_path": set_path}})


def dumped_config_path(dump_b64: str) -> str | None:
    """config_path as the running containerd has it, from `containerd config dump` (base64), read
    as TOML: containerd 1.x writes double-quoted strings, 2.x single-quoted ones, and a version-2
    file is dumped in its migrated version-3 form. "" when unset, None when there is no dump."""
    try:
        dump = tomllib.loads(base64.b64decode(dump_b64).decode()) if dump_b64 else None
    except (ValueError, tomllib.TOMLDecodeError):
        return None
    if dump is None:
        return None
    version = dump.get("version", 1)
    section = table_at(dump, registry_section(version if isinstance(version, int) else 1))
    value = section.get("config_path", "") if isinstance(section, dict) else ""
    return value if isinstance(value, str) else ""


def check_effect(dump_b64: str, cri_status: str, certs_dir: str) -> str | None:
    """None if the running containerd has config_path in effect and its CRI plugin loaded."""
    value = dumped_config_path(dump_b64)
    if value is None:
        return "containerd does not answer after the restart"
    if certs_dir not in value.split(":"):
        return f"containerd config dump shows config_path = {value!r}, not {certs_dir}"
    if cri_status and cri_status != "ok":
        return f"containerd's CRI plugin did not load (status {cri_status}); check its config"
    return None


# ---------------------------------------------------------------------------------------------
# configure-nodes --undo (nodecfg/undo.py)

def plan_undo_containerd(facts: ContainerdFacts, files: tuple[FileChange, ...],
                         notes: tuple[str, ...]) -> RuntimePlan:
    """A restart when config.toml changes on a running containerd (hosts.toml and CA files are read
    per pull); `gone`: the config_path nodecfg's version set, when the undone file does not."""
    svc = facts.service
    cfg = next((f for f in files if f.path == facts.config_file), None)
    if cfg is None or not svc.active or svc.masked:
        return RuntimePlan("containerd", "configure", "; ".join(notes), files)
    before, after = config_path_of(cfg.old), config_path_of(None if cfg.remove else cfg.content)
    return RuntimePlan("containerd", "configure", "; ".join(notes), files, "restart",
                       gone=(before,) if before and before != after else ())


def undone(dump_b64: str, cri_status: str, gone: tuple[str, ...]) -> str | None:
    value = dumped_config_path(dump_b64)
    if value is None:
        return "containerd does not answer after the restart"
    if cri_status and cri_status != "ok":
        return f"containerd's CRI plugin did not load (status {cri_status}); check its config"
    if value and value in gone:
        return f"containerd config dump still shows config_path = {value!r}"
    return None


# ---------------------------------------------------------------------------------------------
# the Runtime: facts, plan, verify, smoke diagnoses; its node-side functions in scripts/containerd.sh

def config_flag(argv: tuple[str, ...]) -> str | None:
    """`-c FILE` / `--config FILE` from containerd's ExecStart."""
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def certs_dir_of(plan: RuntimePlan) -> str:
    """The certs dir a containerd plan writes its hosts.toml files into."""
    for f in plan.files:
        if f.path.endswith("/hosts.toml"):
            return f.path.rsplit("/", 2)[0]
    return DEFAULT_CERTS_D


def pulls_args(plan: SmokePlan, certs: str) -> tuple[str, ...]:
    """The second smoke step on a node whose containerd is active (`containerd_pulls`): ctr pulls
    by upstream name through the certs dir that the running containerd's config_path names (read
    from its config dump), when that dir's hosts.toml names the registry (the node's first
    replica, with replicas; then ctr also says which replica served the pull)."""
    ep = plan.endpoint
    upstream = plan.image.registry if plan.image.registry in plan.mirrors else ep
    via = ("via",) if plan.replicas else ()
    return ("-e", plan.pulls_from[0], "-S", plan.scheme, "containerd_pulls", certs,
            f"{certs}/{upstream}/hosts.toml", plan.ctr_ref, *via)


def _cri_check(vals: Mapping[str, list[str]], plan: SmokePlan, manifest: str) -> Check:
    """The kubelet's own path: CRI ImageService.PullImage on containerd's socket."""
    status, msg = rc_msg(vals["cri"])
    if status == "ok":
        return Check("cri", "ok", f"CRI PullImage {plan.ctr_ref} (the kubelet's path)")
    if status == "timeout":
        return Check("cri", "FAIL", msg)
    if status != "fail":
        return Check("cri", "skip", msg or "not checked")
    ctr_ok = first(vals, "containerd.pull") == "0"
    if ctr_ok and manifest != "404":
        config_path = dumped_config_path(first(vals, "containerd.dump")) or ""
        why = (f"; config_path {config_path} is a list, which containerd 2's transfer service does "
               "not split (containerd#12415): run configure-nodes" if ":" in config_path else "")
        return Check("cri", "FAIL", "config_path not honoured by the CRI image service: ctr pulled "
                     f"{plan.ctr_ref} through certs.d, the kubelet's PullImage did not{why} "
                     f"(containerd said: {msg})")
    return Check("cri", "FAIL", pull_problem(msg, "the CRI image service", plan.endpoint, manifest))


class Containerd:
    """containerd: config.toml's config_path and the certs.d hosts.toml files; a restart when
    config.toml changed (hosts.toml files are read per pull)."""

    name: str = "containerd"
    layer: int = 0
    fact_files: tuple[str, ...] = (CONFIG_TOML, RECORD)
    fact_dirs: tuple[str, ...] = (DEFAULT_CERTS_D, f"{DEFAULT_CERTS_D}/*/ca.crt")
    formats: Mapping[str, str] = {"containerd": "toml"}
    checks: tuple[str, ...] = ("containerd", "config_path", "cri", "crictl")

    def shell(self) -> str:
        return scripts.read("containerd.sh")

    def read_facts(self, service: ServiceFacts, values: Mapping[str, str],
                   files: Mapping[str, FileFact], dirs: Mapping[str, FileFact]) -> ContainerdFacts:
        del values
        cfg_file = config_flag(service.exec_start) or CONFIG_TOML
        fact = files.get(cfg_file)
        text = fact.text() if fact is not None else None
        hosts = {p: f.text() for p, f in files.items() if p.endswith(("/hosts.toml", "/ca.crt"))}
        imported, unread = load_order(cfg_file, text, files, dirs)
        book = files.get(RECORD)
        return ContainerdFacts(service=service, config_toml=text, config_file=cfg_file,
                               hosts={p: t for p, t in hosts.items() if t is not None},
                               imported=imported, unread=unread, record=book.text() if book is not None else None)

    def version_of(self, line: str) -> str:
        """'containerd github.com/containerd/containerd 1.6.20~ds1 ...' -> 1.6.20~ds1."""
        words = line.split()
        return words[2] if len(words) > 2 else ""

    def plan(self, facts: ContainerdFacts, want: Want) -> RuntimePlan:
        return plan_containerd(facts, want.endpoint, want.mirrors, want.credentials, want.ca_pem,
                               want.replicas)

    def dirs_to_list(self, plan: RuntimePlan) -> tuple[str, ...]:
        return (certs_dir_of(plan),)

    def trust_file(self, endpoint: str) -> str:
        return f"{DEFAULT_CERTS_D}/{endpoint}/ca.crt"

    def check_effect(self, plan: RuntimePlan, values: Mapping[str, str], want: Want) -> str | None:
        del want
        return check_effect(values.get("containerd.dump", ""), values.get("containerd.cri", ""),
                            certs_dir_of(plan))

    def unmerge(self, path: str, text: str, rec: record.Record) -> str | None:
        values = rec.entries(path, "config_path")
        return unset_config_path(text, values) if values else None

    def undo_plan(self, facts: ContainerdFacts, files: tuple[FileChange, ...],
                  notes: tuple[str, ...]) -> RuntimePlan:
        return plan_undo_containerd(facts, files, notes)

    def undone(self, plan: RuntimePlan, values: Mapping[str, str]) -> str | None:
        return undone(values.get("containerd.dump", ""), values.get("containerd.cri", ""), plan.gone)

    def probe_more(self, node: BoundedNode, plan: SmokePlan, vals: Mapping[str, list[str]]) -> str:
        """ctr by upstream name through the certs dir the running config names, then the
        kubelet's path, CRI PullImage on containerd's socket (what is left of the node's deadline)."""
        if "containerd.dump" not in vals:
            return ""
        from nodecfg.cri import pull_via_cri

        config_path = dumped_config_path(first(vals, "containerd.dump")) or ""
        certs = config_path.split(":")[0] or DEFAULT_CERTS_D
        res = node.run(scripts.script("call.sh", [self.shell()], pulls_args(plan, certs)), "containerd_pulls")
        output = "\n" + res.stdout
        pulled = (parse_probe(res.stdout).get("containerd.pull") or ["nomirror"])[0]
        if pulled == "124":  # containerd did not answer ctr in time: the CRI would not either
            status, detail = "not checked", "not tried: the ctr step ran out of time (see the containerd check)"
        elif pulled != "nomirror":
            cri = pull_via_cri(node.c, plan.ctr_ref, become=node.become, timeout=node.deadline.left())
            status, detail = cri.status, cri.detail
        else:
            return output
        return output + "\n" + tagged.encode("cri", status, base64.b64encode(detail.encode()).decode())

    def down_checks(self, state: str | None) -> tuple[Check, ...]:
        return (Check("config_path", "skip", state),) if state else ()

    def diagnose(self, vals: Mapping[str, list[str]], plan: SmokePlan) -> tuple[Check, ...]:
        ep = plan.endpoint
        manifest = first(vals, "manifest")
        checks: list[Check] = []
        if "containerd.pull" in vals:
            certs = first(vals, "containerd.certs")
            rc, msg = rc_msg(vals["containerd.pull"])
            upstream = plan.image.registry if plan.image.registry in plan.mirrors else ep
            late = (timeout_problem(vals, "containerd", "containerd.list", "containerd.pull") if rc == "124"
                    else timeout_problem(vals, "containerd", "containerd.list", "containerd.rm"))
            if late is not None:
                checks.append(Check("containerd", "FAIL", late))
            elif rc == "nomirror":
                checks.append(Check("containerd", "FAIL", f"no mirror config for {upstream}: "
                                    f"{certs}/{upstream}/hosts.toml is missing or does not name "
                                    f"{plan.scheme}://{plan.pulls_from[0]}; run configure-nodes"))
            else:
                ref = plan.image.upstream if upstream != ep else f"{ep}/{plan.image.target}"
                served = first(vals, "containerd.pull.via")
                checks.append(Check("containerd", "ok" if rc == "0" else "FAIL",
                                    f"ctr pull {ref} via {certs}" + (f" (served by {served})" if served else "")
                                    if rc == "0" else pull_problem(msg, "containerd", ep, manifest)))
        if "containerd.dump" in vals:
            cp = dumped_config_path(first(vals, "containerd.dump"))
            late = timeout_problem(vals, "containerd", "containerd.dump")
            if late is not None:
                checks.append(Check("config_path", "FAIL", late))
            elif cp is None:
                checks.append(Check("config_path", "FAIL", "containerd config dump gave no readable "
                                    "config: containerd does not answer"))
            else:
                checks.append(Check("config_path", "ok" if cp else "FAIL",
                                    f"CRI config_path = {cp}" if cp else
                                    "CRI config_path not in effect (containerd config dump shows none): "
                                    "kubelet pulls ignore certs.d; run configure-nodes"))
        if "cri" in vals:
            checks.append(_cri_check(vals, plan, manifest))
        if "crictl" in vals:
            rc, msg = rc_msg(vals["crictl"])
            late = timeout_problem(vals, "containerd", "crictl") if rc == "124" else None
            checks.append(Check("crictl", "ok" if rc == "0" else "FAIL",
                                "crictl pull" if rc == "0"
                                else late or pull_problem(msg, "crictl (CRI)", ep, manifest)))
        return tuple(checks)


RUNTIME = Containerd()
