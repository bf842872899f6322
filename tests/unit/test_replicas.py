"""Issue 22, on the nodes: every runtime pointed at every replica, in each node's own order, from a
fixture table.

A case folder (fixtures/replicas/<case>/) holds case.yaml — the runtime and its version, the node
(its order follows from its index in the inventory), the inventory's replicas and whether the
registry serves TLS or has a login, and the expected status, action and note —, `before/`: the
node's files as facts read them (absolute paths under the folder), and `after/`: exactly the files
the plan writes. Every case is also applied and planned again: a re-run changes nothing.

The inventory: master cp1 10.0.0.11 (a replica), replicas 10.0.0.12 and 10.0.0.13 (unless the case
names others), nodes node1..node4 (10.0.0.21..24): node1 starts at 10.0.0.11, node2 at .12, node3 at
.13, node4 at .11 again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodecfg import configure, runtimes
from nodecfg.credentials import Credentials
from nodecfg.inventory import Inventory, Secret, parse_inventory
from nodecfg.runtimes import record
from nodecfg.runtimes.base import FileChange, FileFact, FileState, RuntimePlan, ServiceFacts, Want, split_fact_dir
from nodecfg.runtimes.containers import mirror_problem
from nodecfg.runtimes.docker import check_effect as docker_effect

FIXTURES = Path(__file__).parent / "fixtures" / "replicas"
CASES = sorted(p for p in FIXTURES.iterdir() if p.is_dir())
CA = "-----BEGIN CERTIFICATE-----\nnodecfg-test-ca\n-----END CERTIFICATE-----\n"
NODES = [{"name": f"node{i}", "address": f"10.0.0.2{i}"} for i in range(1, 5)]


def inventory(meta: dict[str, Any]) -> Inventory:
    registry: dict[str, Any] = {"mirrors": meta.get("mirrors", ["docker.io"]),
                                "replicas": meta.get("replicas", ["10.0.0.12", "10.0.0.13"])}
    if not registry["replicas"]:
        del registry["replicas"]
    if "address" in meta:
        registry["address"] = meta["address"]
    data = {"master": {"name": "cp1", "address": "10.0.0.11"}, "nodes": NODES, "registry": registry}
    return parse_inventory(yaml.safe_dump(data), "inv.yaml", check_files=False)


def tree(root: Path) -> dict[str, str]:
    """Absolute node path -> text of every file under `root`."""
    return {"/" + str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.is_dir() else {}


def facts_files(rt: Any, files: dict[str, str]) -> dict[str, FileFact]:
    """What facts would read: every file the node has under the runtime's fact files and dirs;
    its fact files it lacks as absent."""
    out = {p: FileFact(p, FileState.EXISTS, t.encode(), p, 0o644, 0, 0) for p, t in files.items()}
    for f in rt.fact_files:
        out.setdefault(f, FileFact(f, FileState.ABSENT))
    return out


def plan_case(meta: dict[str, Any], files: dict[str, str]) -> Any:
    inv = inventory(meta)
    rt = runtimes.named(meta["runtime"])
    unit = "crio" if meta["runtime"] == "containers" else meta["runtime"]
    service = ServiceFacts(unit, installed=meta["runtime"] != "containers", active=True,
                           version=str(meta.get("version", "")))
    values = {"containers.podman": "/usr/bin/podman\tpodman version 5.4.2"} \
        if meta["runtime"] == "containers" else {}
    facts = rt.read_facts(service, values, facts_files(rt, files), {})
    creds = Credentials("puller", Secret("s3cret")) if meta.get("auth") else None
    node = next(h for h in inv.nodes if h.name == meta["node"])
    want = Want(inv.registry.endpoint, inv.registry.mirrors, creds, CA if meta.get("tls") else None,
                inv.replicas_for(node))
    return rt.plan(facts, want)


def with_added(plan: Any, before: dict[str, str]) -> tuple[Any, ...]:
    """The plan's files and its record's `added` part (the fixtures hold that part: the files
    part, which nodecfg/undo.py `book` adds on a node, is tested in test_undo.py)."""
    path = record.record_path(plan.runtime)
    if plan.added is None or (path not in before and not any(plan.added.get(p, {}).get(k)
                                                             for p in plan.added for k in plan.added[p])):
        return plan.files
    kept = record.Record(plan.added, record.parse(before.get(path), path).files)
    book = record.change(plan.runtime, before.get(path), kept)
    return (*plan.files, *((book,) if book is not None else ()))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_from_fixture(case: Path) -> None:
    meta = yaml.safe_load((case / "case.yaml").read_text())
    before = tree(case / "before")
    plan = plan_case(meta, before)
    assert (plan.status, plan.action, plan.note) == (meta["status"], meta["action"], meta.get("note", ""))
    files = with_added(plan, before)
    assert {f.path: f.content for f in files} == tree(case / "after")
    for f in files:
        assert f.old == before.get(f.path)
        if f.path.startswith("/var/lib/nodecfg/"):  # the record: root only, JSON, no secret in it
            assert (f.mode, f.secret, f.validate) == (0o600, False, "json")
    # applied, then planned again: nothing to write, nothing to reload
    after = {**before, **{f.path: f.content for f in files}}
    again = plan_case(meta, after)
    assert (with_added(again, after), again.action, again.status) == ((), "none", meta["status"])


def test_every_fixture_path_is_one_facts_read() -> None:
    """The fixtures hold only files the runtimes' facts read (their files, or a glob of their dirs)."""
    import fnmatch

    for case in CASES:
        meta = yaml.safe_load((case / "case.yaml").read_text())
        rt = runtimes.named(meta["runtime"])
        globs = [f"{d}/{g}" for d, g in map(split_fact_dir, rt.fact_dirs)]
        for path in (*tree(case / "before"), *tree(case / "after")):
            assert path in rt.fact_files or any(fnmatch.fnmatch(path, g) for g in globs), (case.name, path)


# ---------------------------------------------------------------------------------------------
# each node's order


def test_each_node_starts_at_its_own_replica_and_limit_keeps_it() -> None:
    inv = inventory({})
    a, b, c = "10.0.0.11:5000", "10.0.0.12:5000", "10.0.0.13:5000"
    assert inv.replica_endpoints == (a, b, c)
    assert [inv.replicas_for(n) for n in inv.nodes] == [(a, b, c), (b, c, a), (c, a, b), (a, b, c)]
    # --limit selects nodes, never renumbers them
    (node3,) = inv.select(["node3"])
    assert inv.replicas_for(node3) == (c, a, b)
    two = inventory({"replicas": ["10.0.0.12"]})
    assert [two.replicas_for(n) for n in two.nodes] == [(a, b), (b, a), (a, b), (b, a)]
    # without replicas: no order at all, every runtime names registry.address as before
    assert inventory({"replicas": []}).replicas_for(inv.nodes[1]) == ()


def test_a_vip_as_registry_address_is_no_replica() -> None:
    """registry.address names what pulls by registry path use (a DNS name or VIP in front of the
    replicas): the nodes trust it and pull by upstream name from the replicas themselves."""
    inv = inventory({"address": "registry.site.example"})
    assert inv.registry.endpoint == "registry.site.example:5000"
    reps = inv.replicas_for(inv.nodes[0])
    assert reps == ("10.0.0.11:5000", "10.0.0.12:5000", "10.0.0.13:5000")
    plan = plan_case({"runtime": "docker", "version": "26.1.5", "node": "node1",
                      "address": "registry.site.example"}, {})
    daemon = json.loads(plan.files[0].content)
    assert daemon["insecure-registries"] == ["registry.site.example:5000", *reps]
    assert daemon["registry-mirrors"] == [f"http://{r}" for r in reps]


@pytest.mark.parametrize(("version", "dial"), [
    ("1.6.20~ds1", False), ("1.7.24~ds1", False), ("2.0.5", False), ("2.1.9+unknown", True),
    ("2.2.0", True), ("v3.0.1", True), ("", False),
])
def test_dial_timeout_only_where_containerd_reads_it(version: str, dial: bool) -> None:
    """containerd 2.1 added `dial_timeout` (PR #11106). Seen on the lab: 1.6.20 and 1.7.24 accept the
    key and ignore it (a black-holed first host still cost them their 30 s dial), 2.1.9 honours it."""
    plan = plan_case({"runtime": "containerd", "version": version, "node": "node1"},
                     {"/etc/containerd/config.toml": "version = 2\n"})
    hosts = [f.content for f in plan.files if f.path.endswith("/hosts.toml")]
    assert hosts and all(('dial_timeout = "2s"' in h) is dial for h in hosts)


def test_no_dial_timeout_and_no_record_without_replicas() -> None:
    """Without replicas the files are what they always were: one host, no dial_timeout, no record."""
    for runtime, version in (("containerd", "2.1.9"), ("docker", "26.1.5"), ("containers", "")):
        plan = plan_case({"runtime": runtime, "version": version, "node": "node2", "replicas": []}, {})
        assert plan.files and not any(f.path.startswith("/var/lib/nodecfg/") for f in plan.files)
        assert not any("dial_timeout" in f.content or "10.0.0.12" in f.content for f in plan.files)


# ---------------------------------------------------------------------------------------------
# the record (nodecfg/runtimes/record.py)


def _same(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


MERGE_CASES = [
    # (current, wanted, recorded, ordered) -> (merged, recorded after)
    ("added and recorded", [], ["a", "b"], [], False, ["a", "b"], ["a", "b"]),
    ("there before: used, not recorded", ["a"], ["a", "b"], [], False, ["a", "b"], ["b"]),
    ("recorded, no longer wanted: removed", ["x", "a", "b", "c"], ["a", "b"], ["b", "c"], False,
     ["x", "a", "b"], ["b"]),
    ("a hand entry no longer wanted stays", ["c", "a"], ["a"], [], False, ["c", "a"], []),
    ("recorded, removed by hand, wanted: back", ["a"], ["a", "b"], ["a", "b"], False, ["a", "b"], ["a", "b"]),
    ("another spelling is the same entry", ["A/"], ["a"], [], False, ["A/"], []),
    ("ordered: appended in order", ["x"], ["b", "c", "a"], [], True, ["x", "b", "c", "a"], ["b", "c", "a"]),
    ("ordered: a block where the first stood", ["x", "a", "y", "b", "c"], ["b", "c", "a"], ["a", "b", "c"],
     True, ["x", "b", "c", "a", "y"], ["b", "c", "a"]),
    ("ordered: in order already", ["b", "x", "c", "a"], ["b", "c", "a"], [], True, ["b", "x", "c", "a"], []),
    ("unordered: order left alone", ["c", "a", "b"], ["a", "b", "c"], [], False, ["c", "a", "b"], []),
    ("non-strings are kept", [{"k": 1}, "a"], ["b"], ["a"], False, [{"k": 1}, "b"], ["b"]),
]


@pytest.mark.parametrize(("current", "wanted", "recorded", "ordered", "merged", "mine"),
                         [c[1:] for c in MERGE_CASES], ids=[c[0] for c in MERGE_CASES])
def test_merge_list(current: list[Any], wanted: list[str], recorded: list[str], ordered: bool,
                    merged: list[Any], mine: list[str]) -> None:
    got, added = record.merge_list(current, wanted, recorded, _same, ordered=ordered)
    assert (got, list(added)) == (merged, mine)
    # merged once, it is stable, and what was recorded stays so
    assert record.merge_list(got, wanted, list(added), _same, ordered=ordered) == (got, added)


def test_record_render_parse_and_what_is_refused() -> None:
    rec = record.Record({"/etc/docker/daemon.json": {"registry-mirrors": ("http://b:5000",), "insecure-registries": ()},
                         "/root/.docker/config.json": {"auths": ()}})
    text = rec.render()
    assert text == ('{\n  "added": {\n    "/etc/docker/daemon.json": {\n      "registry-mirrors": [\n'
                    '        "http://b:5000"\n      ]\n    }\n  },\n  "version": 1\n}\n')
    assert record.parse(text, "x").entries("/etc/docker/daemon.json", "registry-mirrors") == ("http://b:5000",)
    assert record.parse(None, "x") == record.Record() and record.Record().empty
    for bad in ("{", "[]", '{"version": 2, "added": {}}', '{"version": 1, "added": {"f": {"k": [1]}}}',
                '{"version": 1, "added": {"f": ["a"]}}'):
        with pytest.raises(record.RecordError, match=r"^x is not nodecfg's record of what it added .*; fix or remove it$"):
            record.parse(bad, "x")


def test_record_is_written_with_the_first_entry_and_kept_after() -> None:
    some = record.Record({"/f": {"k": ("a",)}})
    assert record.change("docker", None, record.Record()) is None  # nothing added: no file
    first = record.change("docker", None, some)
    assert first is not None and (first.path, first.mode, first.old) == ("/var/lib/nodecfg/docker.json", 0o600, None)
    # once there, it is kept up to date
    assert record.change("docker", first.content, some) is None
    emptied = record.change("docker", first.content, record.Record())
    assert emptied is not None and emptied.content == '{\n  "added": {},\n  "version": 1\n}\n'


def test_a_record_nodecfg_cannot_read_fails_the_runtime_and_writes_nothing() -> None:
    for runtime, path in (("docker", "/var/lib/nodecfg/docker.json"), ("containers", "/var/lib/nodecfg/containers.json")):
        plan = plan_case({"runtime": runtime, "version": "26.1.5", "node": "node1", "auth": True}, {path: "{oops"})
        assert (plan.status, plan.files) == ("failed", ())
        assert plan.note == f"{path} is not nodecfg's record of what it added (not JSON); fix or remove it"


# ---------------------------------------------------------------------------------------------
# verify: what the running runtimes show


def _info(insecure: list[str], mirrors: list[str]) -> str:
    return json.dumps({"RegistryConfig": {"IndexConfigs": {e: {"Name": e, "Secure": False} for e in insecure},
                                          "Mirrors": [f"{m}/" for m in mirrors]}})


def test_docker_effect_wants_every_replica_insecure_and_mirrored() -> None:
    reps = ("10.0.0.12:5000", "10.0.0.11:5000")
    every = ["10.0.0.11:5000", "10.0.0.12:5000"]
    assert docker_effect(_info(every, [f"http://{r}" for r in reps]), "10.0.0.11:5000", True, False, reps) is None
    assert docker_effect(_info(every[:1], [f"http://{r}" for r in reps]), "10.0.0.11:5000", True, False, reps) == (
        "docker info does not list 10.0.0.12:5000 as an insecure registry (config not applied)")
    assert docker_effect(_info(every, ["http://10.0.0.11:5000"]), "10.0.0.11:5000", True, False, reps) == (
        "docker info does not list http://10.0.0.12:5000 as a registry mirror")


def test_podman_must_resolve_the_replicas_in_the_nodes_order() -> None:
    def regs(*mirrors: str) -> dict[str, Any]:
        return {"docker.io": {"Prefix": "docker.io", "Mirrors": [{"Location": m} for m in mirrors]}}

    reps = ("10.0.0.12:5000", "10.0.0.13:5000", "10.0.0.11:5000")
    assert mirror_problem(regs(*reps, "corp:5000"), "docker.io", "10.0.0.11:5000", reps) is None
    assert mirror_problem(regs(*reversed(reps)), "docker.io", "10.0.0.11:5000", reps) == (
        "podman info shows mirrors 10.0.0.11:5000, 10.0.0.13:5000, 10.0.0.12:5000 for docker.io, not "
        "10.0.0.12:5000, 10.0.0.13:5000, 10.0.0.11:5000")


def test_apply_tells_the_verifies_the_replicas_in_the_nodes_order() -> None:
    inv = inventory({})
    want = Want(inv.registry.endpoint, ("docker.io",), None, None, inv.replicas_for(inv.nodes[2]))
    script = configure.apply_script(configure.NodePlan(()), {}, want, 5, "S")
    assert [script.args[i + 1] for i, a in enumerate(script.args) if a == "-p"] == [
        "10.0.0.13:5000", "10.0.0.11:5000", "10.0.0.12:5000"]
    none = configure.apply_script(configure.NodePlan(()), {}, Want("10.0.0.11:5000", ()), 5, "S")
    assert "-p" not in none.args  # without replicas: the arguments nodecfg always gave


def test_docker_verify_waits_for_every_replica_under_dash(tmp_path: Path) -> None:
    """apply.sh's docker_verify polls `docker info` until the registry and each replica are listed
    insecure and each replica is a mirror (an IPv6 replica among them)."""
    from tests.unit.nodesh import fake_node

    node = fake_node(tmp_path)
    for unit in ("docker.service", "containerd.service"):
        node.unit(unit, ActiveState="active", SubState="running", Result="success", Job="",
                  UnitFileState="enabled", LoadState="loaded", MainPID="123", ActiveEnterTimestampMonotonic="123")
    daemon = node.path("/etc/docker/daemon.json")
    daemon.parent.mkdir(parents=True)
    daemon.write_text("{}\n")
    reps = ("[fd00::a]:5000", "10.0.0.11:5000")
    change = FileChange(str(daemon), '{"x": 1}\n', 0o644, "{}\n", "x", validate="json")
    plan = configure.NodePlan((RuntimePlan("docker", "configure", files=(change,), action="reload"),))
    fact = FileFact(str(daemon), FileState.EXISTS, b"{}\n", str(daemon), 0o644, 0, 0)
    want = Want("10.0.0.11:5000", ("docker.io",), None, None, reps)
    listed = _info(["10.0.0.11:5000", "[fd00::a]:5000"], [f"http://{r}" for r in reps])
    (node.stub / "docker-info.json").write_text(listed)
    start = time.monotonic()
    report = configure.parse_apply(node.run(configure.apply_script(plan, {str(daemon): fact}, want, 3, "S")).stdout)
    assert time.monotonic() - start < 3 and report.values["docker.info"] == listed
    assert configure._runtime_error(plan["docker"], report.values, want, 3) is None
    # one replica missing: it waits its deadline out, then says which
    daemon.write_text("{}\n")
    (node.stub / "docker-info.json").write_text(_info(["10.0.0.11:5000"], [f"http://{r}" for r in reps]))
    report = configure.parse_apply(node.run(configure.apply_script(plan, {str(daemon): fact}, want, 1, "S")).stdout)
    assert configure._runtime_error(plan["docker"], report.values, want, 1) == (
        "docker info does not list [fd00::a]:5000 as an insecure registry (config not applied)")
