"""configure-nodes --undo (nodecfg/undo.py), pure: the bookkeeping every configure run adds, and the
undo plan, on a node held as a dict path -> text. A configure then an undo gives back every file byte
for byte; what someone changed after nodecfg stays; a second undo has nothing to do."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from nodecfg import runtimes, undo
from nodecfg.configure import NodeFacts, NodePlan, net_changes, visible
from nodecfg.credentials import Credentials
from nodecfg.inventory import Secret
from nodecfg.runtimes import record
from nodecfg.runtimes.base import FileFact, FileState, RuntimePlan, ServiceFacts, Want

EP = "10.0.0.10:5000"
CA = "-----BEGIN CERTIFICATE-----\nnodecfg-test-ca\n-----END CERTIFICATE-----\n"
DAEMON = "/etc/docker/daemon.json"
CONFIG_TOML = "/etc/containerd/config.toml"
HUB_HOSTS = "/etc/containerd/certs.d/docker.io/hosts.toml"
DROP_IN = "/etc/containers/registries.conf.d/99-nodecfg.conf"
DEBIAN_TOML = ('version = 2\n\n[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/usr/lib/cni"\n'
               '  conf_dir = "/etc/cni/net.d"\n')
HAND_DAEMON = '{\n    "log-level": "warn",\n    "insecure-registries": ["hand.example:5000"]\n}\n'


def want(*, auth: bool = True, tls: bool = False) -> Want:
    creds = Credentials("puller", Secret("s3cret")) if auth else None
    return Want(EP, ("docker.io", "registry.k8s.io"), creds, CA if tls else None)


def facts(node: dict[str, str], *, active: bool = True, masked: bool = False) -> NodeFacts:
    """What facts.sh would report of `node`: every file (0644, root), its dirs listed."""
    files = {p: FileFact(p, FileState.EXISTS, t.encode(), p, 0o600 if p.startswith("/root") or p.endswith("auth.json")
                         else 0o644, 0, 0) for p, t in node.items()}
    for rt in runtimes.registered():
        for f in (*rt.fact_files, record.record_path(rt.name)):
            files.setdefault(f, FileFact(f, FileState.ABSENT))
    dirs = {d: FileFact(d, FileState.EXISTS) for d in ("/etc/containerd/certs.d", record.ORIG_DIR)}
    own = {}
    values = {"containers.podman": "/usr/bin/podman\tpodman version 5.4.2"}
    for rt in runtimes.registered():
        svc = ServiceFacts(rt.name, installed=rt.name != "containers", active=active, masked=masked,
                           version="1.6.20" if rt.name == "containerd" else "20.10.24")
        own[rt.name] = rt.read_facts(svc, values, files, dirs)
    return NodeFacts(own, files, dirs)


def apply(node: dict[str, str], files: tuple[Any, ...]) -> dict[str, str]:
    out = dict(node)
    for f in files:
        assert out.get(f.path) == f.old, f.path  # compare-and-swap, as apply.sh
        if f.remove:
            del out[f.path]
        else:
            out[f.path] = f.content
    return out


def configure(node: dict[str, str], w: Want) -> tuple[dict[str, str], NodePlan]:
    f = facts(node)
    plan = NodePlan(tuple(rt.plan(f.runtimes[rt.name], w) for rt in runtimes.by_layer()))
    plan = undo.book(plan, f)
    return apply(node, plan.files), plan


def run_undo(node: dict[str, str], **kw: Any) -> tuple[dict[str, str], NodePlan]:
    plan = undo.plan_undo(facts(node, **kw))
    return apply(apply(node, plan.files), plan.then), plan


NODES = {
    "fresh": {},
    "debian": {CONFIG_TOML: DEBIAN_TOML, DAEMON: HAND_DAEMON},
    "hand hosts.toml kept": {CONFIG_TOML: DEBIAN_TOML,
                             "/etc/containerd/certs.d/quay.io/hosts.toml": 'server = "https://quay.io"\n'},
    "docker hub creds": {"/root/.docker/config.json": '{"auths": {"https://index.docker.io/v1/": {"auth": "eA=="}}}\n'},
}


@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize("name", list(NODES))
def test_configure_then_undo_gives_back_every_byte(name: str, tls: bool) -> None:
    before = NODES[name]
    configured, plan = configure(before, want(tls=tls))
    assert configured != before
    # the record says what was there: the original of every edited file kept root-only beside it
    for path in before:
        if any(f.path == path for f in plan.files):
            copy = record.orig_path(path)
            assert configured[copy] == before[path]
            assert next(f for f in plan.files if f.path == copy).mode == 0o600
    # a re-run changes nothing, the record included
    again = undo.book(NodePlan(tuple(rt.plan(facts(configured).runtimes[rt.name], want(tls=tls))
                                     for rt in runtimes.by_layer())), facts(configured))
    assert again.files == ()
    undone, uplan = run_undo(configured)
    assert undone == before
    assert uplan["docker"].action == "reload" and uplan["containerd"].action == "restart"
    assert uplan["containers"].action == "none"  # crio not installed; podman reads per command
    # a second undo has nothing to do
    assert run_undo(undone)[1].files == () and run_undo(undone)[1].then == ()


def test_docker_keys_nodecfg_added_are_emptied_for_the_reload_then_the_bytes_come_back() -> None:
    """dockerd's reload applies only the keys the file sets: registry-mirrors, absent before
    nodecfg, is first written as [] (reload), then the file gets its own bytes (no reload)."""
    configured, _ = configure(NODES["debian"], want())
    plan = undo.plan_undo(facts(configured))
    (first,) = [f for f in plan["docker"].files if f.path == DAEMON]
    assert json.loads(first.content) == {"log-level": "warn", "insecure-registries": ["hand.example:5000"],
                                         "registry-mirrors": []}
    (final,) = [f for f in plan["docker"].then if f.path == DAEMON]
    assert (final.old, final.content) == (first.content, HAND_DAEMON)
    assert plan["docker"].gone == (f'"{EP}"', f"http://{EP}/")
    # --diff shows the net change, not the step between
    (net,) = [f for f in net_changes(plan) if f.path == DAEMON]
    assert (net.old, net.content) == (configured[DAEMON], HAND_DAEMON)
    assert visible(plan["docker"]) == (DAEMON, "/root/.docker/config.json")


def test_a_file_changed_after_nodecfg_loses_only_nodecfg_entries() -> None:
    configured, _ = configure(NODES["debian"], want())
    theirs = json.loads(configured[DAEMON])
    theirs["debug"] = True
    theirs["insecure-registries"].append("late.example:5000")
    edited = {**configured, DAEMON: json.dumps(theirs, indent=2) + "\n",
              CONFIG_TOML: configured[CONFIG_TOML].replace("bin_dir", "# theirs\n  bin_dir")}
    undone, plan = run_undo(edited)
    doc = json.loads(undone[DAEMON])
    assert doc == {"log-level": "warn", "insecure-registries": ["hand.example:5000", "late.example:5000"],
                   "registry-mirrors": [], "debug": True}
    assert undone[CONFIG_TOML] == DEBIAN_TOML.replace("bin_dir", "# theirs\n  bin_dir")
    assert plan["containerd"].gone == ("/etc/containerd/certs.d",)
    assert not any(p.startswith("/var/lib/nodecfg/") for p in undone)


def test_a_hand_made_entry_nodecfg_adopted_is_never_removed() -> None:
    hand = {DAEMON: f'{{"insecure-registries": ["{EP}"], "registry-mirrors": ["http://{EP}"]}}\n'}
    configured, _ = configure(hand, want(auth=False))
    assert configured[DAEMON] == hand[DAEMON]  # "already configured (by hand)": not written
    undone, _ = run_undo(configured)
    assert undone[DAEMON] == hand[DAEMON]


def test_a_file_someone_changed_between_two_runs_keeps_their_change() -> None:
    """Its original would take their change too: dropped; the undo then takes out entries only."""
    configured, _ = configure(NODES["debian"], want(auth=False))
    theirs = json.loads(configured[DAEMON]) | {"debug": True}
    edited = {**configured, DAEMON: json.dumps(theirs, indent=2) + "\n"}
    w = Want(EP, ("docker.io",), replicas=("10.0.0.12:5000", "10.0.0.13:5000"))
    reconfigured, _ = configure(edited, w)
    assert record.orig_path(DAEMON) not in reconfigured
    book = record.parse(reconfigured[record.record_path("docker")], "r")
    assert book.files[DAEMON].orig is None and not book.files[DAEMON].created
    undone, _ = run_undo(reconfigured)
    assert json.loads(undone[DAEMON])["debug"] is True
    assert EP not in undone[DAEMON] and "10.0.0.12" not in undone[DAEMON]


def test_masked_runtimes_get_their_files_back_and_no_action() -> None:
    configured, _ = configure(NODES["debian"], want())
    plan = undo.plan_undo(facts(configured, masked=True))
    assert all(rp.action == "none" for rp in plan.runtimes)
    assert apply(apply(configured, plan.files), plan.then) == NODES["debian"]


def test_an_original_copy_gone_fails_the_runtime_naming_it() -> None:
    configured, _ = configure(NODES["debian"], want())
    del configured[record.orig_path(DAEMON)]
    plan = undo.plan_undo(facts(configured))
    assert plan["docker"].status == "failed" and plan["docker"].files == ()
    assert record.orig_path(DAEMON) in plan["docker"].note
    assert plan["containerd"].status == "configure" and plan["containerd"].files  # the others go on


def test_no_record_nothing_to_undo() -> None:
    plan = undo.plan_undo(facts({DAEMON: HAND_DAEMON, HUB_HOSTS: "# Managed by nodecfg: x\n"}))
    assert plan.files == () and plan.then == ()
    assert plan["containers"].status == "configure"


def test_record_files_round_trip_and_refusals() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    rec = record.Record({DAEMON: {"registry-mirrors": ("http://b",)}},
                        {DAEMON: record.Written(sha, sha), HUB_HOSTS: record.Written(sha, created=True)})
    assert record.parse(rec.render(), "r") == rec
    for bad in ('{"version": 1, "added": {}, "files": []}', '{"version": 1, "added": {}, "files": {"f": {"orig": 1}}}'):
        with pytest.raises(record.RecordError, match="files -> file -> last, orig, created"):
            record.parse(bad, "r")
    assert record.orig_path("/etc/docker/daemon.json") == f"{record.ORIG_DIR}/etc%2Fdocker%2Fdaemon.json"
    assert record.orig_path("/a%b/c") == f"{record.ORIG_DIR}/a%25b%2Fc"


def test_an_older_nodecfgs_own_file_counts_as_created() -> None:
    old = {HUB_HOSTS: "# Managed by nodecfg: mirror for docker.io\nserver = \"x\"\n", CONFIG_TOML: DEBIAN_TOML}
    configured, _ = configure(old, want())
    book = record.parse(configured[record.record_path("containerd")], "r")
    assert book.files[HUB_HOSTS].created and record.orig_path(HUB_HOSTS) not in configured
    undone, _ = run_undo(configured)
    assert HUB_HOSTS not in undone and undone[CONFIG_TOML] == DEBIAN_TOML


def test_outcome_files_leave_out_the_bookkeeping() -> None:
    rp = RuntimePlan("docker", "configure", files=(
        *configure(NODES["debian"], want())[1]["docker"].files,))
    assert all(not p.startswith("/var/lib/nodecfg") for p in visible(rp))


def test_a_record_without_files_still_takes_its_entries_out() -> None:
    """A record from before records of files (issue 22's, `added` only): its entries go."""
    daemon = {"log-level": "warn", "insecure-registries": ["hand:5000", "10.0.0.12:5000"]}
    node = {DAEMON: json.dumps(daemon, indent=2) + "\n",
            record.record_path("docker"): record.Record({DAEMON: {"insecure-registries": ("10.0.0.12:5000",)}}).render()}
    undone, plan = run_undo(node)
    assert json.loads(undone[DAEMON]) == {"log-level": "warn", "insecure-registries": ["hand:5000"]}
    assert plan["docker"].gone == ('"10.0.0.12:5000"',) and record.record_path("docker") not in undone


def test_an_older_nodecfgs_marked_files_without_a_record_are_named_not_touched() -> None:
    plan = undo.plan_undo(facts({HUB_HOSTS: "# Managed by nodecfg: mirror for docker.io\n"}))
    assert plan.files == () and HUB_HOSTS in plan["containerd"].note and "nothing undone" in plan["containerd"].note
    assert plan["docker"].note == ""
