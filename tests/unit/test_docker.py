"""daemon.json merges from a fixture table: existing file in, expected file out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodecfg.credentials import Credentials
from nodecfg.inventory import Secret
from nodecfg.runtimes.common import ServiceFacts
from nodecfg.runtimes.docker import (
    HUB_AUTH_KEY,
    DockerFacts,
    MergeError,
    check_effect,
    desired_settings,
    flag_values,
    merge_client_config,
    merge_daemon_json,
    plan_docker,
    unwanted_settings,
)

CASES = sorted((Path(__file__).parent / "fixtures" / "daemon_json").glob("*.json"))
EP = "10.1.1.1:5000"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_merge_daemon_json(case: Path) -> None:
    spec = json.loads(case.read_text())
    tls = spec.get("tls", False)
    wanted = desired_settings(EP, spec.get("mirror_docker_io", True), tls)
    unwanted = unwanted_settings(EP, tls)
    existing = spec["existing"] if isinstance(spec["existing"], str | type(None)) else \
        json.dumps(spec["existing"])
    flags = flag_values(tuple(spec.get("cmdline", [])))
    if "error" in spec:
        with pytest.raises(MergeError, match=spec["error"]):
            merge_daemon_json(existing, wanted, flags, unwanted=unwanted)
        return
    text, notes, _ = merge_daemon_json(existing, wanted, flags, unwanted=unwanted)
    if spec["expected"] is None:
        assert text is None
    else:
        assert text is not None
        assert json.loads(text) == spec["expected"]
        # key order of the existing file is kept
        assert list(json.loads(text)) == list(spec["expected"])
    for note in spec.get("notes", []):
        assert any(note in n for n in notes)


PULLER = Credentials("puller", Secret("pw"))


def test_template_renders_registry_and_mirror() -> None:
    assert desired_settings(EP, True) == {"insecure-registries": [EP],
                                          "registry-mirrors": [f"http://{EP}"]}
    assert desired_settings(EP, False) == {"insecure-registries": [EP]}


def test_flags_parsed_from_cmdline() -> None:
    cmd = ("/usr/bin/dockerd", "--insecure-registry", "a:5000", "--insecure-registry=b:5000",
           "--registry-mirror=http://m:5000")
    assert flag_values(cmd) == {"insecure-registries": ["a:5000", "b:5000"],
                                "registry-mirrors": ["http://m:5000"]}


def test_client_config_merge_keeps_other_auths() -> None:
    existing = json.dumps({"auths": {"other:5000": {"auth": "eDp5"}}, "detachKeys": "ctrl-x"})
    text, notes, _ = merge_client_config(existing, EP, PULLER)
    assert text is not None and notes == []
    doc = json.loads(text)
    assert doc["detachKeys"] == "ctrl-x" and doc["auths"]["other:5000"] == {"auth": "eDp5"}
    assert doc["auths"][EP]["auth"] == "cHVsbGVyOnB3"
    assert HUB_AUTH_KEY not in doc["auths"]  # docker.io not mirrored
    assert merge_client_config(text, EP, PULLER) == (None, [], ())


def test_client_config_with_docker_io_mirrored_gives_the_hub_key_too() -> None:
    text, _, _ = merge_client_config(None, EP, PULLER, mirror_docker_io=True)
    assert text is not None
    auths = json.loads(text)["auths"]
    assert auths[EP] == auths[HUB_AUTH_KEY] == {"auth": "cHVsbGVyOnB3"}
    assert merge_client_config(text, EP, PULLER, mirror_docker_io=True) == (None, [], ())
    # real Docker Hub credentials already there: kept, and said
    theirs = json.dumps({"auths": {HUB_AUTH_KEY: {"auth": "bWU6aHVi"}}})
    text, notes, _ = merge_client_config(theirs, EP, PULLER, mirror_docker_io=True)
    assert text is not None and json.loads(text)["auths"][HUB_AUTH_KEY] == {"auth": "bWU6aHVi"}
    assert notes and "kept the existing Docker Hub credentials" in notes[0]


PLAN_CASES = [
    ("absent", ServiceFacts("docker"), "absent", "none"),
    ("masked", ServiceFacts("docker", installed=True, masked=True), "masked", "none"),
    ("active", ServiceFacts("docker", installed=True, active=True), "configure", "reload"),
    ("inactive", ServiceFacts("docker", installed=True, active=False), "configure", "none"),
]


@pytest.mark.parametrize(("svc", "status", "action"), [c[1:] for c in PLAN_CASES],
                         ids=[c[0] for c in PLAN_CASES])
def test_plan_docker(svc: ServiceFacts, status: str, action: str) -> None:
    plan = plan_docker(DockerFacts(service=svc), EP, True, None)
    assert plan.status == status and plan.action == action
    if status == "configure":
        assert [f.path for f in plan.files] == ["/etc/docker/daemon.json"]


def test_plan_docker_unchanged_and_credentials() -> None:
    svc = ServiceFacts("docker", installed=True, active=True)
    current = json.dumps({"insecure-registries": [EP], "registry-mirrors": [f"http://{EP}/"]})
    plan = plan_docker(DockerFacts(service=svc, daemon_json=current), EP, True, None)
    assert plan.files == () and plan.action == "none"
    plan = plan_docker(DockerFacts(service=svc, daemon_json=current), EP, True, Credentials("u", Secret("p")))
    assert [(f.path, f.mode, f.secret) for f in plan.files] == [("/root/.docker/config.json", 0o600, True)]
    assert plan.action == "none"  # credentials need no reload


def test_check_effect() -> None:
    good = {"IndexConfigs": {EP: {"Name": EP, "Secure": False}}, "Mirrors": [f"http://{EP}/"]}
    assert check_effect(json.dumps(good), EP, True) is None
    assert "insecure" in (check_effect(json.dumps({"IndexConfigs": {}}), EP, False) or "")
    assert "mirror" in (check_effect(json.dumps({**good, "Mirrors": []}), EP, True) or "")
    assert "does not answer" in (check_effect("", EP, True) or "")


CA = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"


def test_tls_plan_trusts_the_ca_and_reloads_only_for_daemon_json() -> None:
    svc = ServiceFacts("docker", installed=True, active=True, version="28.5.2")
    current = json.dumps({"insecure-registries": [EP], "registry-mirrors": [f"http://{EP}"]})
    plan = plan_docker(DockerFacts(service=svc, daemon_json=current), EP, True, None, CA)
    assert [f.path for f in plan.files] == ["/etc/docker/daemon.json", f"/etc/docker/certs.d/{EP}/ca.crt"]
    # the emptied key stays, as []: dockerd's reload leaves a key the file does not set as it was
    assert json.loads(plan.files[0].content) == {"insecure-registries": [], "registry-mirrors": [f"https://{EP}"]}
    assert plan.files[1].content == CA and plan.files[1].mode == 0o644
    assert plan.action == "reload"
    # the CA alone (daemon.json already right): written, no reload — dockerd reads it per pull
    done = json.dumps({"registry-mirrors": [f"https://{EP}"]})
    ca_only = plan_docker(DockerFacts(service=svc, daemon_json=done), EP, True, None, CA)
    assert [f.path for f in ca_only.files] == [f"/etc/docker/certs.d/{EP}/ca.crt"] and ca_only.action == "none"
    again = plan_docker(DockerFacts(service=svc, daemon_json=done,
                                    ca_files={f"/etc/docker/certs.d/{EP}/ca.crt": CA}), EP, True, None, CA)
    assert again.files == () and again.action == "none"


def test_tls_check_effect() -> None:
    good = {"IndexConfigs": {"docker.io": {"Secure": True}}, "Mirrors": [f"https://{EP}/"]}
    assert check_effect(json.dumps(good), EP, True, tls=True) is None
    insecure = {**good, "IndexConfigs": {EP: {"Secure": False}}}
    assert "still lists" in (check_effect(json.dumps(insecure), EP, True, tls=True) or "")
    assert f"https://{EP}" in (check_effect(json.dumps({**good, "Mirrors": [f"http://{EP}"]}), EP, True,
                                            tls=True) or "")
