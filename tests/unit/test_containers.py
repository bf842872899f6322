"""CRI-O / podman plans from fixture folders: a node's /etc/containers files in, the files to write
(expected/), the status, action and note out.

A case folder holds case.json (the services, mirrors, credentials and the expected outcome), the
node's `registries.conf`, `registries.conf.d/*.conf` and `auth.json` when it has them, and
`expected/<name>` for every file the plan writes (99-nodecfg.conf, auth.json)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from nodecfg.runtimes.common import ServiceFacts
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
    creds = tuple(meta["credentials"]) if meta["credentials"] else None
    plan = plan_containers(facts, EP, tuple(meta["mirrors"]), creds)  # type: ignore[arg-type]
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
        creds = tuple(meta["credentials"]) if meta["credentials"] else None
        plan = plan_containers(facts, EP, tuple(meta["mirrors"]), creds)  # type: ignore[arg-type]
        if plan.status != "configure":
            continue
        written = {f.path: f.content for f in plan.files}
        applied = ContainersFacts(facts.crio, facts.podman_installed, facts.registries_conf,
                                  {**facts.drop_ins, **{p: t for p, t in written.items() if p == DROP_IN}},
                                  written.get(AUTH_JSON, facts.auth_json))
        again = plan_containers(applied, EP, tuple(meta["mirrors"]), creds)  # type: ignore[arg-type]
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


def test_tls_registry_is_not_insecure() -> None:
    plan = plan_containers(ContainersFacts(podman_installed=True), EP, ("quay.io",), None, insecure=False)
    doc = tomllib.loads(plan.files[0].content)
    assert doc["registry"][0]["mirror"] == [{"location": EP, "insecure": False}]
    assert doc["registry"][1] == {"location": EP, "insecure": False}


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
        merge_auth_json(existing, EP, "u", "p")
    plan = plan_containers(ContainersFacts(podman_installed=True, auth_json=existing), EP, (), ("u", "p"))
    assert (plan.status, plan.note, plan.files) == ("failed", error, ())


def test_auth_json_unchanged_and_empty() -> None:
    first = merge_auth_json("", EP, "u", "p")
    assert first is not None and json.loads(first) == {"auths": {EP: {"auth": "dTpw"}}}
    assert merge_auth_json(first, EP, "u", "p") is None


def test_check_drop_in_rejects_what_was_not_meant() -> None:
    with pytest.raises(ConfError):
        check_drop_in('[[registry]]\nlocation = "docker.io"\n', EP, ["docker.io"])
    with pytest.raises(ConfError):
        check_drop_in("[registries.search]\nregistries = []\n", EP, [])

