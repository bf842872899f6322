"""The Runtime protocol: a third runtime registered in `nodecfg.runtimes.RUNTIMES` is planned,
applied, reported and smoke-tested by configure.py, smoke.py and report.py without any change to
them. The fake here is the whole of what a new runtime supplies (its module would also bring
templates and tests)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nodecfg import configure, report, runtimes, smoke, ssh
from nodecfg.deadline import BoundedNode
from nodecfg.fleet import FleetResult, HostResult
from nodecfg.images import parse_ref
from nodecfg.inventory import Host, parse_inventory
from nodecfg.runtimes.base import (
    Check,
    FileChange,
    FileFact,
    Runtime,
    RuntimePlan,
    ServiceFacts,
    SmokePlan,
    Want,
    first,
)

CONF = "/etc/fakert/registries.conf"
INV = parse_inventory("master: {address: 172.29.77.10}\nnodes: [172.29.77.11]\n", "inv.yaml")
FACTS = Path(__file__).parent / "fixtures" / "facts" / "configured-bookworm.txt"


# its node-side functions (a real runtime ships them as nodecfg/scripts/<name>.sh)
SHELL = r"""
fakert_facts() {
  rec bin.fakert "$(command -v fakert)"
  rec version.fakert "$(fakert --version 2>/dev/null)"
}
fakert_validate() {
  [ "$1" = fakert ] || return 0
  fakert check "$2" || fail "$3" rejected
}
fakert_verify() { rec fakert.mirror "$(fakert mirrors)"; }
fakert_rollback() {
  if changed || down; then timeout "$deadline" systemctl --no-block reload fakert.service; fi
}
fakert_probe() { rec fakert.pull "$(fakert pull "$image_ref" >/dev/null; echo $?)"; }
"""


@dataclass(frozen=True)
class FakeFacts:
    service: ServiceFacts
    conf: str | None


class FakeRuntime:
    """A runtime with one config file, reloaded when it changes."""

    name: str = "fakert"
    layer: int = 2  # talks to docker, say: acts first, listed last
    fact_files: tuple[str, ...] = (CONF,)
    fact_dirs: tuple[str, ...] = ()
    formats: Mapping[str, str] = {"fakert": "toml"}
    checks: tuple[str, ...] = ("fakert",)

    def shell(self) -> str:
        return SHELL

    def read_facts(self, service: ServiceFacts, values: Mapping[str, str],
                   files: Mapping[str, FileFact], dirs: Mapping[str, FileFact]) -> FakeFacts:
        del values, dirs
        fact = files.get(CONF)
        return FakeFacts(service, fact.text() if fact is not None else None)

    def version_of(self, line: str) -> str:
        words = line.split()
        return words[2] if len(words) > 2 else ""

    def plan(self, facts: FakeFacts, want: Want) -> RuntimePlan:
        if not facts.service.installed:
            return RuntimePlan(self.name, "absent", "not installed; skipped")
        wanted = f'mirror = "{want.endpoint}"\n'
        if facts.conf == wanted:
            return RuntimePlan(self.name, "configure")
        change = FileChange(CONF, wanted, 0o644, facts.conf, "mirror set", validate="fakert")
        return RuntimePlan(self.name, "configure", "", (change,),
                           "reload" if facts.service.active else "none")

    def dirs_to_list(self, plan: RuntimePlan) -> tuple[str, ...]:
        del plan
        return ()

    def trust_file(self, endpoint: str) -> str:
        del endpoint
        return ""

    def check_effect(self, plan: RuntimePlan, values: Mapping[str, str], want: Want) -> str | None:
        del plan
        return None if values.get("fakert.mirror") == want.endpoint else "fakert did not take it"

    def probe_more(self, node: BoundedNode, plan: SmokePlan, vals: Mapping[str, list[str]]) -> str:
        del node, plan, vals
        return ""

    def down_checks(self, state: str | None) -> tuple[Check, ...]:
        del state
        return ()

    def diagnose(self, vals: Mapping[str, list[str]], plan: SmokePlan) -> tuple[Check, ...]:
        if "fakert.pull" not in vals:
            return ()
        ok = first(vals, "fakert.pull") == "0"
        return (Check("fakert", "ok" if ok else "FAIL",
                      f"fakert pull {plan.image.upstream}" if ok else "fakert pull failed"),)


FAKE: Runtime[Any] = FakeRuntime()  # mypy: the fake satisfies the protocol


@pytest.fixture
def with_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "RUNTIMES", (*runtimes.RUNTIMES, FAKE))


def _facts_output(conf: str = "absent", active: str = "active") -> str:
    """A real node's facts plus the fake runtime's unit, binary, version and config file."""
    text = FACTS.read_text().rstrip("\n").split("\n")
    end = text.pop()
    extra = ["unit.fakert\tLoadState=loaded", f"unit.fakert\tActiveState={active}",
             "unit.fakert\tUnitFileState=enabled", "bin.fakert\t/usr/bin/fakert",
             "version.fakert\tfakert version 1.2.3", f"path\t{CONF}\t{conf}",
             # every runtime's record, and the dir of the original copies (nodecfg/undo.py)
             "path\t/var/lib/nodecfg/fakert.json\tabsent", "path\t/var/lib/nodecfg/containerd.json\tabsent",
             "dir\t/var/lib/nodecfg/orig\tabsent"]
    return "\n".join([*extra, *text, end]) + "\n"


def _cells(line: str) -> list[str]:
    return [w for w in line.split() if w.strip("┃│|━─")]


def test_registry_and_the_real_runtimes_satisfy_the_protocol() -> None:
    assert [rt.name for rt in runtimes.RUNTIMES] == ["docker", "containerd", "containers"]
    assert [rt.name for rt in runtimes.by_layer()] == ["containerd", "docker", "containers"]
    for rt in runtimes.RUNTIMES:
        assert runtimes.named(rt.name) is rt
    assert smoke.check_names() == ("registry", "docker", "docker mirror", "containerd", "config_path",
                                   "cri", "crictl", "crio", "podman")


@pytest.mark.usefixtures("with_fake")
def test_configure_facts_plan_and_apply_take_a_new_runtime() -> None:
    script = configure.facts_script()
    assert "-u crio.service -u fakert.service -r docker -r containerd -r containers -r fakert" in " ".join(
        script.args)
    assert "fakert_facts()" in script.program and CONF in script.args
    facts = configure.parse_facts(_facts_output())
    fake = facts.runtimes["fakert"]
    assert isinstance(fake, FakeFacts) and fake.service.version == "1.2.3" and fake.conf is None
    plan = configure.plan_node(facts, INV, None)
    assert [rp.runtime for rp in plan.runtimes] == ["containerd", "docker", "containers", "fakert"]
    assert plan["fakert"].action == "reload" and plan["fakert"].files[0].path == CONF
    assert plan.files == (plan["fakert"].files[0],)  # the real node was already configured
    plan, unreadable = configure.refuse_unsafe(plan, facts)
    assert not unreadable and configure.unknown_paths(plan, facts) == ()
    apply = configure.apply_script(plan, configure.targets(plan, facts),
                                   configure.want_of(INV, None), 5, "S")
    i = apply.args.index("-F")
    assert apply.args[i:i + 9] == ("-F", CONF, CONF, "644", "-", "fakert", "fakert", "absent", "-")
    assert apply.args[i + 9:i + 13] == ("-A", "fakert", "fakert", "reload")
    assert "fakert_validate()" in apply.program and "fakert_verify()" in apply.program
    rollback = configure.rollback_script(plan["fakert"], configure.targets(plan, facts),
                                         was_active=True, deadline=5, stamp="S")
    assert rollback.args[:10] == ("-t", "5", "-r", "fakert", "-u", "fakert", "-a", "reload", "-w", "1")
    assert "fakert_rollback()" in rollback.program


@pytest.mark.usefixtures("with_fake")
def test_configure_node_and_its_report_list_a_new_runtime(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """configure-nodes --check on a node with the fake runtime: its outcome, the recap's column,
    and the --json key, through the real configure_node and report code."""
    def fake_run(c: Any, command: str, **_: Any) -> ssh.RunResult:
        del c
        return ssh.RunResult(command, 0, _facts_output(), "")

    monkeypatch.setattr(ssh, "run", fake_run)
    host = Host("node1", "172.29.77.11")
    outcome = configure.configure_node(None, host, INV, configure.Options(check=True), None)
    assert outcome.runtimes["fakert"].status == "would change"
    assert outcome.runtimes["fakert"].action == "would reload"
    assert outcome.runtimes["docker"].status == "unchanged"
    assert outcome.files_changed == (CONF,)
    fleet = FleetResult((HostResult(host, outcome),))
    report.configure_recap(fleet, configure.Options(check=True), as_json=True)
    result = json.loads(capsys.readouterr().out)["hosts"][0]["result"]
    assert list(result)[:6] == ["changed", "files_changed", "docker", "containerd", "containers",
                                "fakert"]
    assert result["fakert"]["status"] == "would change"
    report.configure_recap(fleet, configure.Options(check=True), as_json=False)
    table = capsys.readouterr().out
    header = next(ln for ln in table.splitlines() if "node" in ln and "files" in ln)
    assert _cells(header)[:5] == ["node", "docker", "containerd", "containers", "fakert"]
    assert "fakert would reload" in table and "would change" in table


@pytest.mark.usefixtures("with_fake")
def test_smoke_probes_and_diagnoses_a_new_runtime(capsys: pytest.CaptureFixture[str]) -> None:
    plan = SmokePlan("10.1.1.1:5000", parse_ref("docker.io/library/busybox:1.36"), None,
                     ("docker.io",), False)
    script = smoke.probe_script(plan, None)
    assert script.args[-3:] == ("-r", "fakert", "fakert") and "fakert_probe()" in script.program
    assert smoke.check_names()[-1] == "fakert"
    out = ("unit.docker\tinactive\tnot-found\nunit.containerd\tinactive\tnot-found\n"
           "unit.fakert\tactive\tenabled\nreach\tcurl\t0\t200\nfakert.pull\t0\n")
    checks = smoke.diagnose(out, plan, "node1")
    by_name = {ch.name: ch for ch in checks}
    assert by_name["fakert"].status == "ok" and "busybox" in by_name["fakert"].detail
    assert "runtime" not in by_name  # an active runtime, even a new one, is a runtime
    down = smoke.diagnose(out.replace("fakert\tactive", "fakert\tfailed"), plan, "node1")
    assert Check("fakert", "FAIL", "fakert is failed (enabled: enabled): runtime down") in down
    host = Host("node1", "10.1.1.2")
    fleet = FleetResult((HostResult(host, smoke.NodeSmoke(checks)),))
    report.smoke_recap(smoke.SmokeResult(plan, fleet), as_json=False)
    header = next(ln for ln in capsys.readouterr().out.splitlines() if ln.lstrip().startswith("node"))
    assert _cells(header)[-2:] == ["fakert", "verdict"]
