"""CRI-O / podman plans from fixture folders: a node's /etc/containers files in, the files to write
(expected/), the status, action and note out.

A case folder holds case.json (the services, mirrors, credentials and the expected outcome), the
node's `registries.conf`, `registries.conf.d/*.conf` and `auth.json` when it has them, and
`expected/<name>` for every file the plan writes (99-nodecfg.conf, auth.json)."""

from __future__ import annotations

import base64 as _b64
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from nodecfg import configure, runtimes, smoke, ssh
from nodecfg.credentials import Credentials
from nodecfg.deadline import BoundedNode, NodeDeadline
from nodecfg.images import parse_ref
from nodecfg.inventory import Secret, parse_inventory
from nodecfg.runtimes import containers
from nodecfg.runtimes.base import Check, SmokePlan, Want, split_fact_dir, unit_of
from nodecfg.runtimes.common import RuntimePlan, ServiceFacts
from nodecfg.runtimes.containers import (
    AUTH_JSON,
    DROP_IN,
    DROP_IN_DIR,
    MAIN_CONF,
    MANAGED_MARK,
    ConfError,
    ContainersFacts,
    check_drop_in,
    merge_auth_json,
    plan_containers,
)

FIXTURES = Path(__file__).parent / "fixtures" / "containers"
CASES = sorted(p for p in FIXTURES.iterdir() if p.is_dir())
EP = "10.1.1.1:5000"
NODE_PATHS = {"99-nodecfg.conf": DROP_IN, "auth.json": AUTH_JSON}


def facts_from(case: Path) -> tuple[ContainersFacts, dict]:
    meta = json.loads((case / "case.json").read_text())
    main = case / "registries.conf"
    auth = case / "auth.json"
    drop_ins = {f"{DROP_IN_DIR}/{p.name}": p.read_text()
                for p in sorted((case / "registries.conf.d").glob("*"))} if (case / "registries.conf.d").is_dir() else {}
    crio = ServiceFacts("crio", **meta["crio"]) if meta["crio"] else ServiceFacts("crio")
    facts = ContainersFacts(crio=crio, podman_installed=meta["podman"],
                            registries_conf=main.read_text() if main.exists() else None,
                            drop_ins=drop_ins, auth_json=auth.read_text() if auth.exists() else None)
    return facts, meta


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_from_fixture(case: Path) -> None:
    facts, meta = facts_from(case)
    creds = Credentials(meta["credentials"][0], Secret(meta["credentials"][1])) if meta["credentials"] else None
    plan = plan_containers(facts, EP, tuple(meta["mirrors"]), creds)
    assert (plan.runtime, plan.status, plan.action, plan.note) == \
        ("containers", meta["status"], meta["action"], meta["note"])
    expected = {NODE_PATHS[p.name]: p.read_text() for p in sorted((case / "expected").glob("*"))} \
        if (case / "expected").is_dir() else {}
    assert {f.path: f.content for f in plan.files} == expected
    for change in plan.files:
        if change.path == DROP_IN:
            assert change.content.startswith(MANAGED_MARK)
            assert (change.mode, change.secret, change.validate) == (0o644, False, "toml")
            assert change.old == facts.drop_ins.get(DROP_IN)
            check_drop_in(change.content, EP, [m for m in meta["mirrors"] if m != EP])
        else:
            assert (change.mode, change.secret, change.validate) == (0o600, True, "json")
            assert change.old == facts.auth_json
    # the distro's main file is never written, nor any foreign drop-in
    assert not {f.path for f in plan.files} - {DROP_IN, AUTH_JSON}
    assert MAIN_CONF not in {f.path for f in plan.files}


def test_rerun_after_apply_changes_nothing() -> None:
    """Every configuring case, applied, then planned again: no file, no reload."""
    for case in CASES:
        facts, meta = facts_from(case)
        creds = Credentials(meta["credentials"][0], Secret(meta["credentials"][1])) if meta["credentials"] else None
        plan = plan_containers(facts, EP, tuple(meta["mirrors"]), creds)
        if plan.status != "configure":
            continue
        written = {f.path: f.content for f in plan.files}
        applied = ContainersFacts(facts.crio, facts.podman_installed, facts.registries_conf,
                                  {**facts.drop_ins, **{p: t for p, t in written.items() if p == DROP_IN}},
                                  written.get(AUTH_JSON, facts.auth_json))
        again = plan_containers(applied, EP, tuple(meta["mirrors"]), creds)
        assert (again.files, again.action) == ((), "none"), case.name


def test_drop_in_shape() -> None:
    """docker.io official images: prefix and location docker.io, the mirror at the bare endpoint
    (a mirror location replaces the prefix: docker.io/library/busybox -> EP/library/busybox)."""
    plan = plan_containers(ContainersFacts(podman_installed=True), EP, ("docker.io", "registry.k8s.io"), None)
    doc = tomllib.loads(plan.files[0].content)
    assert doc == {"registry": [
        {"prefix": "docker.io", "location": "docker.io", "mirror": [{"location": EP, "insecure": True}]},
        {"prefix": "registry.k8s.io", "location": "registry.k8s.io",
         "mirror": [{"location": EP, "insecure": True}]},
        {"location": EP, "insecure": True},
    ]}
    assert plan.files[0].old is None


def test_no_mirrors_still_marks_the_registry_insecure() -> None:
    plan = plan_containers(ContainersFacts(podman_installed=True), EP, (), None)
    assert tomllib.loads(plan.files[0].content) == {"registry": [{"location": EP, "insecure": True}]}


def test_tls_registry_is_not_insecure_and_its_ca_is_trusted() -> None:
    ca = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
    plan = plan_containers(ContainersFacts(podman_installed=True), EP, ("quay.io",), None, ca)
    doc = tomllib.loads(plan.files[0].content)
    assert doc["registry"][0]["mirror"] == [{"location": EP, "insecure": False}]
    assert doc["registry"][1] == {"location": EP, "insecure": False}
    assert [(f.path, f.content, f.mode) for f in plan.files[1:]] == [
        (f"/etc/containers/certs.d/{EP}/ca.crt", ca, 0o644)]
    # a re-run with the CA and the drop-in in place changes nothing
    again = plan_containers(ContainersFacts(podman_installed=True, drop_ins={DROP_IN: plan.files[0].content},
                                            ca_files={f"/etc/containers/certs.d/{EP}/ca.crt": ca}),
                            EP, ("quay.io",), None, ca)
    assert again.files == ()


def test_drop_in_without_our_mark_is_replaced_with_a_note() -> None:
    facts = ContainersFacts(podman_installed=True, drop_ins={DROP_IN: '[[registry]]\nlocation = "x.example"\n'})
    plan = plan_containers(facts, EP, ("docker.io",), None)
    assert plan.files[0].old == facts.drop_ins[DROP_IN]
    assert "had no nodecfg mark" in plan.note


def test_non_conf_files_are_ignored() -> None:
    """containers/image loads only *.conf: a .rpmsave or a backup never fails the plan."""
    facts = ContainersFacts(podman_installed=True, drop_ins={f"{DROP_IN_DIR}/old.conf.rpmsave": "[registries.search]\n"})
    assert plan_containers(facts, EP, ("docker.io",), None).status == "configure"


@pytest.mark.parametrize(("existing", "error"), [
    ("{", "/etc/containers/auth.json is not valid JSON (Expecting property name enclosed in double quotes: "
          "line 1 column 2 (char 1)); left untouched"),
    ("[]", "/etc/containers/auth.json is not a JSON object; left untouched"),
    ('{"auths": []}', "/etc/containers/auth.json: auths is not an object of objects; left untouched"),
])
def test_auth_json_that_cannot_be_merged_fails_the_plan(existing: str, error: str) -> None:
    with pytest.raises(ConfError, match="^" + re.escape(error) + "$"):
        merge_auth_json(existing, EP, Credentials("u", Secret("p")))
    plan = plan_containers(ContainersFacts(podman_installed=True, auth_json=existing), EP, (), Credentials("u", Secret("p")))
    assert (plan.status, plan.note, plan.files) == ("failed", error, ())


def test_auth_json_unchanged_and_empty() -> None:
    first, added = merge_auth_json("", EP, Credentials("u", Secret("p")))
    assert first is not None and json.loads(first) == {"auths": {EP: {"auth": "dTpw"}}}
    assert added == (EP,)
    assert merge_auth_json(first, EP, Credentials("u", Secret("p"))) == (None, ())


def test_check_drop_in_rejects_what_was_not_meant() -> None:
    with pytest.raises(ConfError):
        check_drop_in('[[registry]]\nlocation = "docker.io"\n', EP, ["docker.io"])
    with pytest.raises(ConfError):
        check_drop_in("[registries.search]\nregistries = []\n", EP, [])



# ---------------------------------------------------------------------------------------------
# the registered runtime: facts, apply/verify/rollback fragments, smoke probe and diagnoses

FACTS = Path(__file__).parent / "fixtures" / "facts" / "configured-bookworm.txt"
INV = parse_inventory("master: {address: 172.29.77.10}\nnodes: [172.29.77.11]\n", "inv.yaml")
WANT = Want(EP, ("docker.io", "registry.k8s.io"))
PLAN = SmokePlan(EP, parse_ref("docker.io/library/busybox:1.36"), None, ("docker.io", "registry.k8s.io"),
                 False)
SHORTNAMES = f"{DROP_IN_DIR}/shortnames.conf"


def _b(text: str) -> str:
    return _b64.b64encode(text.encode()).decode()


def _info(registries: dict[str, Any]) -> str:
    return _b(json.dumps({"host": {}, "registries": registries}))


def _entry(prefix: str, *mirrors: str) -> dict[str, Any]:
    return {"Prefix": prefix, "Location": prefix, "Insecure": False, "Blocked": False,
            "Mirrors": [{"Location": m, "Insecure": True} for m in mirrors]}


GOOD_INFO = _info({"docker.io": _entry("docker.io", EP), "registry.k8s.io": _entry("registry.k8s.io", EP)})


def _facts_output(*, podman: bool = True, crio: str = "", files: dict[str, str] | None = None) -> str:
    """A real node's facts plus the containers runtime's lines: podman (or not), crio's unit
    (`crio`: its ActiveState, "" for no unit) and /etc/containers files."""
    text = FACTS.read_text().rstrip("\n").split("\n")
    end = text.pop()
    extra = [f"containers.podman\t{'/usr/bin/podman' if podman else ''}\t"
             f"{'podman version 5.4.2' if podman else ''}"]
    if crio:
        extra += ["unit.crio\tLoadState=loaded", f"unit.crio\tActiveState={crio}",
                  "unit.crio\tUnitFileState=enabled", "bin.containers\t/usr/bin/crio",
                  "version.containers\tcrio version 1.30.1"]
    else:
        extra += ["unit.crio\tLoadState=not-found", "unit.crio\tActiveState=inactive",
                  "bin.containers\t", "version.containers\t"]
    files = files if files is not None else {MAIN_CONF: "# distro defaults\n"}
    for path in (MAIN_CONF, DROP_IN, AUTH_JSON):
        if path not in files:
            extra.append(f"path\t{path}\tabsent")
    for path, content in files.items():
        extra += [f"path\t{path}\tfile\t{path}\t644 0 0 {len(content.encode())}",
                  f"file\t{path}\t{_b(content)}"]
    return "\n".join([*extra, *text, end]) + "\n"


def test_registered_with_its_unit_and_layer() -> None:
    rt = runtimes.named("containers")
    assert rt is containers.RUNTIME and unit_of(rt) == "crio"
    assert [unit_of(r) for r in runtimes.RUNTIMES] == ["docker", "containerd", "crio"]
    assert runtimes.by_layer(reverse=True)[0] is rt  # acts first: it talks to neither other runtime
    assert smoke.check_names()[-2:] == ("crio", "podman")


def test_split_fact_dir() -> None:
    assert split_fact_dir("/etc/containerd/certs.d") == ("/etc/containerd/certs.d", "*/hosts.toml")
    assert split_fact_dir(f"{DROP_IN_DIR}/*.conf") == (DROP_IN_DIR, "*.conf")


def test_facts_script_reads_the_drop_ins_by_glob(tmp_path: Path) -> None:
    args = " ".join(configure.facts_script().args)
    assert "-u crio.service" in args and f"-d {DROP_IN_DIR} *.conf" in args
    assert "-d /etc/containerd/certs.d */hosts.toml" in args
    d = tmp_path / "registries.conf.d"
    d.mkdir()
    (d / "10-site.conf").write_text('[[registry]]\nprefix = "quay.io"\nlocation = "quay.io"\n')
    (d / "README").write_text("not a drop-in\n")
    out = subprocess.run(configure.facts_script((), (f"{d}/*.conf",)).argv(),
                         capture_output=True, text=True, check=True, timeout=30).stdout
    facts = configure.parse_facts(out)
    assert set(facts.files) >= {f"{d}/10-site.conf"} and f"{d}/README" not in facts.files
    assert facts.dirs[str(d)].exists


def test_read_facts_podman_only_node() -> None:
    site = f"{DROP_IN_DIR}/10-site.conf"
    facts = configure.parse_facts(_facts_output(files={MAIN_CONF: "# distro\n", site: "# x\n",
                                                       SHORTNAMES: "[aliases]\n"}))
    cf = facts.runtimes["containers"]
    assert isinstance(cf, ContainersFacts)
    assert cf.podman_installed and cf.podman_version == "5.4.2" and not cf.crio.installed
    assert cf.registries_conf == "# distro\n" and cf.auth_json is None
    assert set(cf.drop_ins) == {site, SHORTNAMES}
    assert cf.service.installed and cf.service.version == "podman 5.4.2" and not cf.service.active
    # docker and containerd read as before
    assert facts.runtimes["docker"].service.active and facts.runtimes["containerd"].service.installed


def test_read_facts_neither_installed_is_absent() -> None:
    facts = configure.parse_facts(_facts_output(podman=False, files={}))
    plan = configure.plan_node(facts, INV, None)
    assert plan["containers"].status == "absent" and plan["containers"].files == ()
    assert plan.files == ()  # the fixture node is configured for docker and containerd


def test_podman_node_plan_and_apply_verify_without_a_reload() -> None:
    facts = configure.parse_facts(_facts_output())
    plan = configure.plan_node(facts, INV, None)
    rp = plan["containers"]
    assert rp.status == "configure" and rp.action == "none" and [f.path for f in rp.files] == [DROP_IN]
    plan, unreadable = configure.refuse_unsafe(plan, facts)
    assert not unreadable and configure.unknown_paths(plan, facts) == ()
    want = configure.want_of(INV, None)
    script = configure.apply_script(plan, configure.targets(plan, facts), want, 5, "S")
    actions = [script.args[i + 1:i + 4] for i, a in enumerate(script.args) if a == "-A"]
    assert actions == [("containers", "crio", "none")]  # verified (podman info), nothing reloaded
    subprocess.run(["sh", "-n"], input=script.program, text=True, check=True)
    # its verify is judged although nothing was reloaded
    ep = INV.registry.endpoint
    good = _info({u: _entry(u, ep) for u in INV.registry.mirrors})
    assert configure._runtime_error(rp, {"containers.info": good}, want, 5) is None
    bad = _info({"docker.io": _entry("docker.io")})
    assert "podman info shows no mirror for docker.io" in (
        configure._runtime_error(rp, {"containers.info": bad}, want, 5) or "")
    # a re-run on the written drop-in changes nothing
    again = configure.parse_facts(_facts_output(files={MAIN_CONF: "# distro defaults\n",
                                                       DROP_IN: rp.files[0].content}))
    assert configure.plan_node(again, INV, None)["containers"].files == ()


def test_active_crio_is_reloaded_then_rolled_back_by_its_unit() -> None:
    facts = configure.parse_facts(_facts_output(podman=False, crio="active"))
    cf = facts.runtimes["containers"]
    assert isinstance(cf, ContainersFacts) and cf.crio.active and cf.service.version == "crio 1.30.1"
    plan = configure.plan_node(facts, INV, None)
    rp = plan["containers"]
    assert rp.action == "reload"
    files = configure.targets(plan, facts)
    script = configure.apply_script(plan, files, configure.want_of(INV, None), 5, "S")
    actions = [script.args[i + 1:i + 4] for i, a in enumerate(script.args) if a == "-A"]
    assert actions == [("containers", "crio", "reload")]
    subprocess.run(["sh", "-n"], input=script.program, text=True, check=True)
    values = {"settled.crio": "active\trunning\tsuccess\t"}  # crio only: settled active is the proof
    assert configure._runtime_error(rp, values, configure.want_of(INV, None), 5) is None
    values = {"settled.crio": "failed\tfailed\texit-code\t", "actionlog.containers": "boom"}
    assert configure._runtime_error(rp, values, configure.want_of(INV, None), 5) == (
        "containers is failed (failed, exit-code) after its reload: boom")
    rollback = configure.rollback_script(rp, files, was_active=True, deadline=5, stamp="S")
    assert rollback.args[:10] == ("-t", "5", "-r", "containers", "-u", "crio", "-a", "reload", "-w", "1")
    assert "reload_rollback crio.service containers" in rollback.program  # containers_rollback
    subprocess.run(["sh", "-n"], input=rollback.program, text=True, check=True)


def test_check_effect() -> None:
    rt = containers.RUNTIME
    plan = RuntimePlan("containers", "configure", files=())
    assert rt.check_effect(plan, {}, WANT) is None  # no podman: crio's settled state decides
    assert rt.check_effect(plan, {"containers.info": GOOD_INFO}, WANT) is None
    assert "no readable JSON" in (rt.check_effect(plan, {"containers.info": ""}, WANT) or "")
    other = _info({"docker.io": _entry("docker.io", "mirror.example:5000", EP),
                   "registry.k8s.io": _entry("registry.k8s.io", EP)})
    assert rt.check_effect(plan, {"containers.info": other}, WANT) == (
        f"podman info shows mirrors mirror.example:5000, {EP} for docker.io, not {EP}")
    missing = _info({"registry.k8s.io": _entry("registry.k8s.io", EP)})
    assert "(no [[registry]] for docker.io)" in (rt.check_effect(plan, {"containers.info": missing}, WANT) or "")
    # an override the plan already reported is not held against the write
    noted = RuntimePlan("containers", "configure", f"{DROP_IN_DIR}/zz.conf loads after 99-nodecfg.conf "
                        "and redeclares [[registry]] docker.io: its entry wins, ...")
    assert rt.check_effect(noted, {"containers.info": other}, WANT) is None


def _smoke(*lines: str, crio: str = "inactive\tnot-found") -> tuple[Check, ...]:
    out = ("unit.docker\tactive\tenabled\nunit.containerd\tinactive\tnot-found\n"
           f"unit.crio\t{crio}\nreach\tcurl\t0\t200\n" + "\n".join(lines) + "\n")
    return smoke.diagnose(out, PLAN, "node1")


def _named(checks: tuple[Check, ...]) -> dict[str, Check]:
    return {ch.name: ch for ch in checks}


def test_smoke_podman_ok_and_not_installed() -> None:
    got = _named(_smoke("podman\tyes\tpodman version 5.4.2", f"containers.info\t{GOOD_INFO}",
                        "podman.pull\t0\t"))
    assert got["podman"] == Check("podman", "ok", f"podman pull docker.io/library/busybox:1.36 via the "
                                  f"mirror {EP}")
    assert got["crio"] == Check("crio", "skip", "not installed")
    got = _named(_smoke("podman\tno"))
    assert got["podman"] == Check("podman", "skip", "not installed")
    assert all(ch.status != "FAIL" for ch in got.values() if ch.name in ("crio", "podman"))


def test_smoke_podman_without_the_mirror_fails_without_pulling() -> None:
    info = _info({"registry.k8s.io": _entry("registry.k8s.io", EP)})
    got = _named(_smoke("podman\tyes", f"containers.info\t{info}"))
    assert got["podman"].status == "FAIL"
    assert got["podman"].detail.startswith("no mirror config for docker.io: podman info shows no "
                                           "mirror for docker.io")
    assert "run configure-nodes" in got["podman"].detail


def test_smoke_podman_401_names_the_authfile() -> None:
    msg = _b("Error: initializing source docker://docker.io/library/busybox:1.36: unauthorized: "
             "authentication required")
    got = _named(_smoke("podman\tyes", f"containers.info\t{GOOD_INFO}", f"podman.pull\t125\t{msg}"))
    assert got["podman"].status == "FAIL" and got["podman"].detail.startswith("401: podman has no")
    assert "REGISTRY_AUTH_FILE=/etc/containers/auth.json" in got["podman"].detail
    assert "--authfile" in got["podman"].detail


def test_smoke_podman_other_failures() -> None:
    https = _b('Error: pinging container registry 10.1.1.1:5000: Get "https://10.1.1.1:5000/v2/": '
               "http: server gave HTTP response to HTTPS client")
    got = _named(_smoke("podman\tyes", f"containers.info\t{GOOD_INFO}", f"podman.pull\t125\t{https}"))
    assert got["podman"].detail.startswith("HTTP answered where HTTPS was expected: podman")
    pull = _b("podman pull -q docker.io/library/busybox:1.36")
    got = _named(_smoke("podman\tyes", f"containers.info\t{GOOD_INFO}", f"timeout.podman.pull\t17\t{pull}",
                        "podman.pull\t124\t"))
    assert got["podman"] == Check("podman", "FAIL", "`podman pull -q docker.io/library/busybox:1.36` did not "
                                  "answer within 17 s: podman hung?")
    got = _named(_smoke("podman\tyes", "containers.info\t"))
    assert got["podman"] == Check("podman", "FAIL", "podman info --format json gave no readable "
                                  "JSON: podman does not work on this node")
    info = _b("podman info --format json")
    got = _named(_smoke("podman\tyes", f"timeout.podman.info\t0\t{info}", "containers.info\t"))
    assert got["podman"] == Check("podman", "FAIL", "`podman info --format json` was not run: the node's "
                                  "smoke-test --timeout was spent before it")


def test_smoke_active_crio_reads_its_drop_in() -> None:
    facts = ContainersFacts(crio=ServiceFacts("crio", installed=True, active=True))
    text = plan_containers(facts, EP, ("docker.io",), None).files[0].content
    got = _named(_smoke(f"containers.dropin\t{_b(text)}", "podman\tno", crio="active\tenabled"))
    assert got["crio"].status == "ok" and "mirrors docker.io" in got["crio"].detail
    got = _named(_smoke("containers.dropin\t", "podman\tno", crio="active\tenabled"))
    assert got["crio"].status == "FAIL" and "is missing" in got["crio"].detail
    got = _named(_smoke("podman\tno", crio="failed\tenabled"))
    assert got["crio"] == Check("crio", "FAIL", "crio is failed (enabled: enabled): runtime down")


def test_probe_script_runs_crio_probe_only_when_active() -> None:
    script = smoke.probe_script(PLAN, None)
    assert " ".join(script.args).endswith("-r docker docker -r containerd containerd -r containers crio")
    assert f"b64 < {DROP_IN}" in script.program  # containers_probe, run when crio is active
    subprocess.run(["sh", "-n"], input=script.program, text=True, check=True)


class _Node:
    """ssh.run on a fake node: answers the look script with `look`, records every script."""

    def __init__(self, look: str) -> None:
        self.look = look
        self.scripts: list[list[str]] = []

    def run(self, c: Any, command: str, **kw: Any) -> ssh.RunResult:
        del c
        args = shlex.split(command)
        # bounded on the node as a whole (timeout -k), given what is left of its deadline (-T),
        # and here (ssh.run's timeout)
        assert args[:3] == ["timeout", "-k", "2"] and args[4:6] == ["sh", "-c"] and args[7:9] == ["nodecfg", "-T"]
        assert int(args[3]) == int(args[9]) + 1 and 45 <= int(args[9]) <= 50 and 45 < kw["timeout"] <= 54
        self.scripts.append(args[4:])
        out = self.look if "containers_look" in args else "podman.pull\t0\t\n"
        return ssh.RunResult(command, 0, out + "end\tcall\n", "")


@pytest.mark.parametrize(("look", "pulls", "removes"), [
    ("podman\tno\n", False, False),
    (f"podman\tyes\tpodman version 5.4.2\ncontainers.info\t{GOOD_INFO}\n", True, True),
    (f"podman\tyes\ncontainers.info\t{GOOD_INFO}\npodman.had\tyes\n", True, False),  # the node's own
    (f"podman\tyes\ncontainers.info\t{GOOD_INFO}\npodman.had\tunknown\n", True, False),  # maybe: kept
    (f"podman\tyes\ncontainers.info\t{_info({})}\n", False, False),  # no mirror: never the upstream
])
def test_probe_more_pulls_by_upstream_name_only_through_the_mirror(
        monkeypatch: pytest.MonkeyPatch, look: str, pulls: bool, removes: bool) -> None:
    node = _Node(look)
    monkeypatch.setattr(ssh, "run", node.run)
    out = containers.RUNTIME.probe_more(BoundedNode("node1", None, False, NodeDeadline.start(50)), PLAN, {})
    assert len(node.scripts) == (2 if pulls else 1)
    for script in node.scripts:
        subprocess.run(["sh", "-n"], input=script[2], text=True, check=True)
    assert node.scripts[0][6:] == ["containers_look", "docker.io/library/busybox:1.36"]
    if pulls:
        assert node.scripts[1][6:] == ["containers_pull", "docker.io/library/busybox:1.36",
                                       "no" if removes else "yes"]
        assert "podman.pull\t0" in out


def test_version_of() -> None:
    assert containers.RUNTIME.version_of("crio version 1.30.1") == "1.30.1"
    assert containers.RUNTIME.version_of("podman version 5.4.2") == "5.4.2"
    assert containers.RUNTIME.version_of("") == ""


def test_smoke_podman_only_node_is_not_runtime_down() -> None:
    """A node whose only runtime is podman (no unit of its own): its pull is the runtime that works."""
    out = ("unit.docker\tinactive\tnot-found\nunit.containerd\tinactive\tnot-found\n"
           "unit.crio\tinactive\tnot-found\nreach\tcurl\t0\t200\n"
           f"podman\tyes\tpodman version 5.4.2\ncontainers.info\t{GOOD_INFO}\npodman.pull\t0\t\n")
    got = _named(smoke.diagnose(out, PLAN, "node1"))
    assert got["podman"].status == "ok"
    assert "runtime" not in got
    nothing = _named(smoke.diagnose(out.replace("podman\tyes", "podman\tno"), PLAN, "node1"))
    assert nothing["runtime"].status == "FAIL"
