"""containerd's imports, from the fixture table fixtures/containerd_imports.yaml: the files the
daemon really reads (load order, globs, relative paths, imports of imports), the config_path in
effect per containerd version, and the one file nodecfg edits when it must set it."""

from __future__ import annotations

import posixpath
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodecfg import configure
from nodecfg.runtimes.base import FileFact, FileState, ServiceFacts, Want
from nodecfg.runtimes.containerd import RUNTIME, ContainerdFacts, certs_dir_of
from nodecfg.runtimes.containerd_config import load_order

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "fixtures" / "containerd_imports.yaml").read_text())
EP = "10.1.1.1:5000"


def facts_of(case: dict[str, Any]) -> ContainerdFacts:
    files = {p: (FileFact(p, FileState.ABSENT) if t is None else FileFact(p, FileState.EXISTS, t.encode()))
             for p, t in case["files"].items()}
    dirs = {d: FileFact(d, FileState.EXISTS) for d in case.get("dirs", ())}
    for p, f in files.items():  # the dir of every file given was listed
        if f.exists:
            dirs.setdefault(posixpath.dirname(p), FileFact(posixpath.dirname(p), FileState.EXISTS))
    service = ServiceFacts("containerd", installed=True, active=True, version=case["version"])
    facts = RUNTIME.read_facts(service, {}, files, dirs)
    assert isinstance(facts, ContainerdFacts)
    return facts


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_imports(case: dict[str, Any]) -> None:
    facts = facts_of(case)
    if "unread" in case:
        assert list(facts.unread) == case["unread"]
        assert configure.unread(configure.NodeFacts({"containerd": facts})) == tuple(case["unread"])
        plan = RUNTIME.plan(facts, Want(EP, ()))
        assert plan.status == "failed" and "levels deep" in plan.note
        return
    assert facts.unread == ()
    plan = RUNTIME.plan(facts, Want(EP, ()))
    if "error" in case:
        assert plan.status == "failed" and case["error"] in plan.note and plan.files == ()
        return
    assert plan.status == "configure", plan.note
    configs = [f for f in plan.files if not f.path.endswith(("/hosts.toml", "/ca.crt"))]
    hosts = [f.path for f in plan.files if f.path.endswith("/hosts.toml")]
    assert certs_dir_of(plan) == case["in_effect"] and hosts == [f"{case['in_effect']}/{EP}/hosts.toml"]
    if case["edits"] == "none":
        assert configs == [] and plan.action == "none"  # nothing to restart
        return
    assert [f.path for f in configs] == [case["edits"]] and plan.action == "restart"
    (change,) = configs
    assert change.old == case["files"][case["edits"]]
    # the main file is checked by containerd itself before the restart; an imported file only as
    # TOML (containerd reads it with the others, after the restart, and the verify checks the dump)
    assert change.validate == ("containerd" if case["edits"] == "/etc/containerd/config.toml" else "toml")
    tomllib.loads(change.content)
    for line in case.get("has", ()):
        assert line in change.content
    if "note" in case:
        assert case["note"] in plan.note


def test_a_glob_reads_its_matches_in_order_only_in_its_own_dir() -> None:
    files = {p: FileFact(p, FileState.EXISTS, b"version = 2\n") for p in (
        "/etc/c/d/20-b.toml", "/etc/c/d/10-a.toml", "/etc/c/d/sub/30-c.toml", "/etc/c/d/README")}
    dirs = {"/etc/c/d": FileFact("/etc/c/d", FileState.EXISTS)}
    loaded, unread = load_order("/etc/c/config.toml", 'imports = ["d/*.toml"]\n', files, dirs)
    assert [f.path for f in loaded] == ["/etc/c/d/10-a.toml", "/etc/c/d/20-b.toml"] and unread == ()


def test_an_unlistable_import_dir_fails_the_runtime() -> None:
    dirs = {"/etc/c/d": FileFact("/etc/c/d", FileState.UNREADABLE, reason="Permission denied")}
    loaded, _ = load_order("/etc/c/config.toml", 'imports = ["/etc/c/d/*.toml"]\n', {}, dirs)
    assert loaded[0].problem == "cannot list /etc/c/d: Permission denied"
