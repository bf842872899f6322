"""containerd config.toml and hosts.toml edits from fixture folders: before.toml in,
expected.toml (or an error) out, every other setting and comment kept."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from nodecfg.credentials import Credentials
from nodecfg.inventory import Secret
from nodecfg.runtimes.common import ServiceFacts
from nodecfg.runtimes.containerd import (
    ContainerdFacts,
    check_effect,
    merge_hosts,
    plan_containerd,
    render_hosts,
)
from nodecfg.runtimes.containerd_config import TomlMergeError, registry_section, set_config_path

FIXTURES = Path(__file__).parent / "fixtures" / "containerd"
CASES = sorted(p for p in FIXTURES.iterdir() if p.is_dir())
EP = "10.1.1.1:5000"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_set_config_path(case: Path) -> None:
    meta = json.loads((case / "case.json").read_text())
    before = (case / "before.toml").read_text()
    if "error" in meta:
        with pytest.raises(TomlMergeError) as info:
            set_config_path(before, meta["containerd_major"])
        assert str(info.value) == meta["error"]
        return
    edit = set_config_path(before, meta["containerd_major"])
    assert edit.certs_dir == meta["certs_dir"]
    assert list(edit.notes) == meta["notes"]
    assert {k: list(v) for k, v in edit.moved_mirrors.items()} == meta["moved_mirrors"]
    if meta.get("unchanged"):
        assert edit.text is None
        return
    assert edit.text == (case / "expected.toml").read_text()
    # the result parses, has config_path where this version reads it, and no mirrors beside it
    doc = tomllib.loads(edit.text)
    table = doc
    for key in registry_section(doc.get("version", 1), meta["containerd_major"]):
        table = table[key]
    assert table["config_path"] == meta["certs_dir"]
    assert not table.get("mirrors")  # empty is fine, entries would break the CRI plugin
    # every comment line of the original survives
    for line in before.splitlines():
        if line.strip().startswith("#") or ("#" in line and "=" in line):
            assert line in edit.text


def test_default_config_keeps_every_setting() -> None:
    before = (FIXTURES / "default-1.6-edited" / "before.toml").read_text()
    after = set_config_path(before, 1).text
    assert after is not None
    old, new = tomllib.loads(before), tomllib.loads(after)
    reg = ("plugins", "io.containerd.grpc.v1.cri", "registry")
    new_reg = new["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert new_reg.pop("config_path") == "/etc/containerd/certs.d"
    old["plugins"]["io.containerd.grpc.v1.cri"]["registry"].pop("config_path")
    assert old == new, reg
    # exactly one line differs
    diff = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert diff == [('      config_path = ""', '      config_path = "/etc/containerd/certs.d"')]


def test_missing_file_gets_minimal_config_by_version() -> None:
    one = set_config_path(None, 1)
    assert one.text is not None and 'version = 2' in one.text and "io.containerd.grpc.v1.cri" in one.text
    two = set_config_path(None, 2)
    assert two.text is not None and "version = 3" in two.text and "io.containerd.cri.v1.images" in two.text


def test_no_version_on_containerd2_goes_where_containerd2_reads_it() -> None:
    """A file without `version` on containerd 2: the v3 image-service section (2.1.9 ignores
    `[plugins.cri.registry]` there); the file keeps having no version and its other settings."""
    before = "# old site file\n[plugins.cri]\n  sandbox_image = \"registry.k8s.io/pause:3.9\"\n"
    edit = set_config_path(before, 2)
    assert edit.text is not None and edit.text.startswith(before)
    doc = tomllib.loads(edit.text)
    assert "version" not in doc
    assert doc["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert doc["plugins"]["cri"] == {"sandbox_image": "registry.k8s.io/pause:3.9"}
    # containerd 1.x reads the same file's registry where version 1 puts it
    one = set_config_path(before, 1)
    assert one.text is not None
    assert tomllib.loads(one.text)["plugins"]["cri"]["registry"]["config_path"] == "/etc/containerd/certs.d"


HOSTS_CASES = [
    ("new", None, "rendered"),
    ("identical", "RENDERED", None),
    ("ours-outdated", "# Managed by nodecfg: old\nserver = \"https://registry-1.docker.io\"\n"
     '[host."http://10.9.9.9:5000"]\n  capabilities = ["pull"]\n', "rendered"),
]


@pytest.mark.parametrize(("existing", "expect"), [c[1:] for c in HOSTS_CASES],
                         ids=[c[0] for c in HOSTS_CASES])
def test_merge_hosts_simple(existing: str | None, expect: str | None) -> None:
    rendered = render_hosts("docker.io", EP, None)
    if existing == "RENDERED":
        existing = rendered
    got = merge_hosts(existing, rendered, EP, "x/hosts.toml")
    assert got == (rendered if expect == "rendered" else None)


def test_merge_hosts_foreign_file_keeps_its_hosts_ours_first() -> None:
    foreign = ('server = "https://registry-1.docker.io"\n\n'
               '[host."https://mirror.corp"]\n  capabilities = ["pull", "resolve"]\n'
               '  ca = "/etc/certs/corp.pem"\n')
    got = merge_hosts(foreign, render_hosts("docker.io", EP, None), EP, "x")
    assert got is not None
    doc = tomllib.loads(got)
    assert doc["server"] == "https://registry-1.docker.io"
    assert list(doc["host"]) == [f"http://{EP}", "https://mirror.corp"]
    assert doc["host"]["https://mirror.corp"]["ca"] == "/etc/certs/corp.pem"
    # merged once, it is stable
    assert merge_hosts(got, render_hosts("docker.io", EP, None), EP, "x") is None


def test_merge_hosts_broken_file_is_refused() -> None:
    with pytest.raises(TomlMergeError, match="not valid TOML"):
        merge_hosts('server = "x\n', render_hosts("docker.io", EP, None), EP, "x")


def test_render_hosts_plain_http_no_tls_keys_and_auth_header() -> None:
    text = render_hosts("registry.k8s.io", EP, "Basic dTpw")
    doc = tomllib.loads(text)
    assert doc["server"] == "https://registry.k8s.io"
    host = doc["host"][f"http://{EP}"]
    assert host["capabilities"] == ["pull", "resolve"]
    assert host["header"]["Authorization"] == "Basic dTpw"
    assert not {"skip_verify", "ca", "client"} & set(host)
    own = tomllib.loads(render_hosts(EP, EP, None))
    assert own["server"] == f"http://{EP}" and "push" in own["host"][f"http://{EP}"]["capabilities"]
    hub = tomllib.loads(render_hosts("docker.io", EP, None, ("https://mirror.gcr.io", "https://registry-1.docker.io")))
    assert list(hub["host"]) == [f"http://{EP}", "https://mirror.gcr.io"]


def test_plan_moves_mirrors_into_hosts_files() -> None:
    before = (FIXTURES / "mirrors-conflict" / "before.toml").read_text()
    facts = ContainerdFacts(ServiceFacts("containerd", installed=True, active=True, version="1.6.20"),
                            config_toml=before)
    plan = plan_containerd(facts, EP, ("docker.io",), None)
    paths = [f.path for f in plan.files]
    assert paths == ["/etc/containerd/config.toml", f"/etc/containerd/certs.d/{EP}/hosts.toml",
                     "/etc/containerd/certs.d/docker.io/hosts.toml",
                     "/etc/containerd/certs.d/harbor.corp:8443/hosts.toml"]
    assert plan.action == "restart"
    harbor = tomllib.loads(plan.files[3].content)
    assert "https://harbor.corp:8443" in str(harbor)


def test_plan_states_and_auth_files_are_private() -> None:
    absent = plan_containerd(ContainerdFacts(ServiceFacts("containerd")), EP, (), None)
    assert absent.status == "absent"
    masked = plan_containerd(ContainerdFacts(ServiceFacts("containerd", installed=True, masked=True)),
                             EP, (), None)
    assert masked.status == "masked" and not masked.files
    svc = ServiceFacts("containerd", installed=True, active=True, version="1.6.20")
    cfg = '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'
    plan = plan_containerd(ContainerdFacts(svc, config_toml="version = 2\n" + cfg), EP, ("quay.io",),
                           Credentials("u", Secret("p")))
    assert plan.action == "none"  # only hosts.toml files: no restart
    assert all(f.mode == 0o600 and f.secret for f in plan.files)


def test_check_effect() -> None:
    import base64

    dump = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = "/etc/containerd/certs.d"\n'
    b64 = base64.b64encode(dump.encode()).decode()
    assert check_effect(b64, "ok", "/etc/containerd/certs.d") is None
    assert "CRI plugin did not load" in (check_effect(b64, "error", "/etc/containerd/certs.d") or "")
    assert "not /srv/certs" in (check_effect(b64, "ok", "/srv/certs") or "")
    assert "does not answer" in (check_effect("", "", "/etc/containerd/certs.d") or "")


@pytest.mark.parametrize(("major", "expected"), [(1, None), (2, "/etc/containerd/certs.d")])
def test_config_path_list_is_one_directory_on_containerd2(major: int, expected: str | None) -> None:
    """containerd 2.1+ pulls for the CRI through the transfer service, which does not split a
    colon list (containerd#12415, reproduced on a lab node: ctr pulled, CRI PullImage went to the
    upstream). containerd 1.x splits it: left as it is there."""
    before = ('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
              '  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"  # platform default\n')
    edit = set_config_path(before, major)
    assert edit.certs_dir == "/etc/containerd/certs.d"
    if expected is None:
        assert edit.text is None
        return
    assert edit.text is not None and "# platform default" in edit.text
    registry = tomllib.loads(edit.text)["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert registry["config_path"] == expected
    assert "does not split" in edit.notes[0]


CA = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"


def test_render_hosts_tls_has_ca_and_never_skip_verify() -> None:
    ca = f"/etc/containerd/certs.d/{EP}/ca.crt"
    for upstream in ("docker.io", EP):
        doc = tomllib.loads(render_hosts(upstream, EP, "Basic dTpw", (), ca))
        host = doc["host"][f"https://{EP}"]
        assert host["ca"] == ca and "skip_verify" not in host
        assert host["header"]["Authorization"] == "Basic dTpw"
        assert f"http://{EP}" not in doc["host"]
    assert tomllib.loads(render_hosts(EP, EP, None, (), ca))["server"] == f"https://{EP}"


def test_merge_hosts_switching_scheme_drops_the_stale_host() -> None:
    ca = f"/etc/containerd/certs.d/{EP}/ca.crt"
    foreign = ('server = "https://registry-1.docker.io"\n\n'
               f'[host."http://{EP}"]\n  capabilities = ["pull", "resolve"]\n'
               '[host."https://mirror.corp"]\n  capabilities = ["pull", "resolve"]\n')
    got = merge_hosts(foreign, render_hosts("docker.io", EP, None, (), ca), EP, "x", "https")
    assert got is not None
    assert list(tomllib.loads(got)["host"]) == [f"https://{EP}", "https://mirror.corp"]
    # and back to plain HTTP
    back = merge_hosts(got, render_hosts("docker.io", EP, None), EP, "x", "http")
    assert back is not None and list(tomllib.loads(back)["host"]) == [f"http://{EP}", "https://mirror.corp"]


def test_plan_tls_writes_the_ca_beside_the_hosts_files_without_a_restart() -> None:
    current = set_config_path(None, 1).text
    svc = ServiceFacts("containerd", installed=True, active=True, version="1.7.24")
    facts = ContainerdFacts(service=svc, config_toml=current)
    plan = plan_containerd(facts, EP, ("docker.io",), None, CA)
    ca = f"/etc/containerd/certs.d/{EP}/ca.crt"
    assert plan.files[0].path == ca and plan.files[0].content == CA
    assert plan.action == "none"
    hosts = {f.path: f.content for f in plan.files[1:]}
    again = plan_containerd(ContainerdFacts(service=svc, config_toml=current, hosts={**hosts, ca: CA}),
                            EP, ("docker.io",), None, CA)
    assert again.files == ()
