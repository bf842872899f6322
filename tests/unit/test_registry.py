"""The master side's pure parts: htpasswd, container spec comparison, scripts, facts parsing."""

from __future__ import annotations

import json
import subprocess

import pytest

from nodecfg import registry
from nodecfg.images import plan_targets
from nodecfg.inventory import RegistryAuth, RegistrySettings, Secret
from nodecfg.registry import (
    ContainerSpec,
    container_changes,
    htpasswd_line,
    htpasswd_matches,
    parse_facts,
)

SPEC = ContainerSpec(image_id="sha256:aaa", port=5000, data_dir="/var/lib/registry", auth=False)


def inspect(**over: object) -> dict:
    base = {
        "Id": "c1", "Image": "sha256:aaa", "State": {"Running": True},
        "Config": {"Env": ["PATH=/bin"]},
        "HostConfig": {"PortBindings": {"5000/tcp": [{"HostIp": "", "HostPort": "5000"}]},
                       "Binds": ["/var/lib/registry:/var/lib/registry"],
                       "RestartPolicy": {"Name": "always"}},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            base[section][field] = value
        else:
            base[section] = value
    return base


SPEC_CASES = [
    ("missing", None, "create", "no registry container"),
    ("same", inspect(), "keep", None),
    ("stopped", inspect(State={"Running": False}), "start", "container stopped"),
    ("other-image", inspect(Image="sha256:bbb"), "recreate", "registry image changed"),
    ("other-port", inspect(HostConfig__PortBindings={"5000/tcp": [{"HostPort": "5001"}]}),
     "recreate", "port 5001 -> 5000"),
    ("other-data", inspect(HostConfig__Binds=["/srv/reg:/var/lib/registry"]), "recreate",
     "data directory is not /var/lib/registry"),
    ("no-restart", inspect(HostConfig__RestartPolicy={"Name": "no"}), "recreate",
     "restart policy is not always"),
    ("auth-on-container", inspect(Config={"Env": ["REGISTRY_AUTH=htpasswd"]}), "recreate",
     "auth disabled"),
]


@pytest.mark.parametrize(("actual", "action", "reason"), [c[1:] for c in SPEC_CASES],
                         ids=[c[0] for c in SPEC_CASES])
def test_container_changes(actual: dict | None, action: str, reason: str | None) -> None:
    got, reasons = container_changes(SPEC, actual)
    assert got == action
    if reason:
        assert reason in reasons


def test_auth_spec_needs_env_and_mount() -> None:
    spec = ContainerSpec("sha256:aaa", 5000, "/var/lib/registry", auth=True)
    action, reasons = container_changes(spec, inspect())
    assert action == "recreate" and "auth enabled" in reasons
    ok = inspect(Config={"Env": ["REGISTRY_AUTH=htpasswd"]},
                 HostConfig__Binds=["/var/lib/registry:/var/lib/registry",
                                    f"{registry.AUTH_DIR}:/auth:ro"])
    assert container_changes(spec, ok) == ("keep", [])
    assert "REGISTRY_AUTH=htpasswd" in spec.run_command("registry:2")


def test_htpasswd_is_bcrypt_and_checkable() -> None:
    line = htpasswd_line("puller", Secret("pa:ss word"))
    user, hashed = line.strip().split(":", 1)
    assert user == "puller" and hashed.startswith("$2")
    assert htpasswd_matches(line, "puller", Secret("pa:ss word"))
    assert not htpasswd_matches(line, "puller", Secret("other"))
    assert not htpasswd_matches(line, "someone", Secret("pa:ss word"))
    assert not htpasswd_matches(None, "puller", Secret("x"))
    assert not htpasswd_matches("garbage", "puller", Secret("x"))


def test_htpasswd_accepted_by_apache_format_checkers_if_available() -> None:
    # the registry (Go bcrypt) accepts $2b$; cross-check with python's crypt-free bcrypt parse
    line = htpasswd_line("u", Secret("p"))
    assert line.count(":") == 1 and line.endswith("\n")


def test_scripts_keep_the_password_off_argv() -> None:
    """The password only appears inside here-documents (stdin), never as a command argument."""
    settings = RegistrySettings(address="127.0.0.1", auth=RegistryAuth("puller", password_env="X"))
    creds = ("puller", Secret('s3cr"et\\pw'))
    targets = plan_targets(["busybox:1.36"])
    for script in (registry.facts_script(settings, targets, ["sha256:1"], creds),
                   registry.apply_script(SPEC, "create", settings, "puller:$2b$hash\n", targets, creds)):
        for line in script.splitlines():
            if "s3cr" in line:
                assert line.startswith('user = "puller:s3cr\\"et\\\\pw"'), line
        # and the script is valid shell
        assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0


def test_parse_facts() -> None:
    manifest = {"schemaVersion": 2, "config": {"digest": "sha256:cfg"}, "layers": []}
    container = [{"Id": "abc", "Image": "sha256:aaa"}]
    out = "\n".join([
        "docker\t20.10.24+dfsg1",
        "regimage\tsha256:reg",
        f"container\t{json.dumps(container)}",
        "present\tsha256:one",
        "http\t401",
        f"manifest\tlibrary/busybox:1.36\t{json.dumps(manifest)}",
        'manifest\tpause:3.9\t{"errors":[{"code":"MANIFEST_UNKNOWN"}]}',
    ])
    facts = parse_facts(out)
    assert facts.docker_version == "20.10.24+dfsg1"
    assert facts.registry_image_id == "sha256:reg"
    assert facts.container == container[0]
    assert facts.present == frozenset({"sha256:one"})
    assert facts.http_status == 401
    assert facts.manifests == {"library/busybox:1.36": "sha256:cfg", "pause:3.9": ""}
    empty = parse_facts("docker\t\ncontainer\t\nhttp\t000\n")
    assert empty.container is None and empty.http_status == 0
