"""Issue 11: the fleets users run today — every lab flavor in one fleet, driven by the installed wheel.

node1  bookworm     docker 20.10, containerd 1.6, no config.toml tweaks
node2  trixie       docker 26, containerd 1.7
node3  containerd2  docker 28, containerd 2.x: its own `containerd config default` (version 3) with
                    a comment and an edited setting
node4  containerd2  a version-2 config.toml kept from containerd 1.x (containerd 2 migrates it in
                    memory) whose config_path is a list: containerd 2's CRI pulls don't split it
                    (containerd#12415), so it becomes the one directory, in the version-2 section
node5  containerd2  no config.toml at all, and neither curl nor wget (a minimal image)
node6  containerd2  a config.toml without `version` (containerd 2 reads its registry settings from
                    the version-3 image-service section there)

The containerd2 nodes have podman 5.4 (no CRI-O: Debian does not package it); bookworm and trixie
nodes have neither: the `containers` runtime is absent there, and its smoke checks skip.
"""

from __future__ import annotations

import tomllib

import nodecfg_lab as labmod
import pytest

from tests.e2e.conftest import Lab, by_name, nodecfg, run_json, start_lab

FLAVORS = ("bookworm", "trixie", "containerd2", "containerd2", "containerd2", "containerd2")
NODES = ("node1", "node2", "node3", "node4", "node5", "node6")
PODMAN_NODES = ("node3", "node4", "node5", "node6")  # the containerd2 flavor has podman
NO_PODMAN = ("node1", "node2")
DROP_IN = "/etc/containers/registries.conf.d/99-nodecfg.conf"
NO_VERSION = "# no version line: an old hand-written file\n[plugins.cri]\n  enable_selinux = false\n"
V2_CONFIG = """\
# kept from the containerd 1.x days
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
"""


def seed(lab: Lab) -> None:
    lab.ssh("node3", "containerd config default > /etc/containerd/config.toml && "
                     "sed -i '1i # site config, owned by the platform team' /etc/containerd/config.toml && "
                     "sed -i \"s|sandbox = '.*'|sandbox = 'registry.k8s.io/pause:3.9'|\" "
                     "/etc/containerd/config.toml && systemctl restart containerd")
    lab.ssh("node4", f"cat > /etc/containerd/config.toml <<'EOF'\n{V2_CONFIG}EOF\nsystemctl restart containerd")
    lab.ssh("node5", "rm -f /etc/containerd/config.toml && systemctl restart containerd")
    lab.ssh("node6", f"printf '%s' '{NO_VERSION}' > /etc/containerd/config.toml && systemctl restart containerd")


def start_times(lab: Lab, name: str) -> str:
    return lab.ssh(name, "systemctl show -p ActiveEnterTimestampMonotonic --value docker containerd").stdout


def registries_conf(lab: Lab, name: str) -> str:
    return lab.ssh(name, "sha256sum /etc/containers/registries.conf").stdout


def dumped_config_path(lab: Lab, name: str) -> str:
    dump = tomllib.loads(lab.ssh(name, "containerd config dump").stdout)
    section = ("io.containerd.cri.v1.images" if dump.get("version", 1) >= 3 else "io.containerd.grpc.v1.cri")
    return str(dump["plugins"][section]["registry"]["config_path"])


@pytest.fixture(scope="module")
def fleet() -> Lab:
    lab = start_lab(len(NODES), flavors=FLAVORS, minimal=("node5",))
    assert labmod.lab_flavors() == {"master": "bookworm", **dict(zip(NODES, FLAVORS, strict=True))}
    proc = nodecfg("registry-up", "-i", str(lab.inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seed(lab)
    return lab


def test_versions_are_todays_stacks(fleet: Lab) -> None:
    majors = {n: fleet.ssh(n, "containerd --version | awk '{print $3}'").stdout.strip() for n in NODES}
    assert majors["node1"].startswith("1.6") and majors["node2"].startswith("1.7"), majors
    assert all(majors[n].startswith("2.") for n in ("node3", "node4", "node5")), majors
    docker = fleet.ssh("node3", "docker version --format '{{.Server.Version}}'").stdout.strip()
    assert docker.startswith("28."), docker
    assert fleet.ssh("node5", "command -v curl wget", check=False).stdout.strip() == ""


def test_configure_every_flavor_then_rerun_restarts_nothing(fleet: Lab) -> None:
    inv = str(fleet.inventory)
    v3_before = fleet.ssh("node3", "cat /etc/containerd/config.toml").stdout
    distro_conf = {n: registries_conf(fleet, n) for n in PODMAN_NODES}
    rc, data, err = run_json("configure-nodes", "-i", inv)
    assert rc == 0, (err, data)
    hosts = by_name(data)
    for name in NODES:
        assert hosts[name]["ok"], hosts[name]
        assert dumped_config_path(fleet, name) == "/etc/containerd/certs.d", name
    # node3: its own version-3 default, comment and edit kept, config_path in the v3 section
    v3 = fleet.ssh("node3", "cat /etc/containerd/config.toml").stdout
    assert v3.startswith("# site config, owned by the platform team\n")
    assert "sandbox = 'registry.k8s.io/pause:3.9'" in v3
    doc = tomllib.loads(v3)
    assert doc["version"] == 3
    assert doc["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert len(v3.splitlines()) == len(v3_before.splitlines())  # one value changed, nothing appended
    # node4: a version-2 file stays version 2, config_path where version 2 puts it
    v2 = tomllib.loads(fleet.ssh("node4", "cat /etc/containerd/config.toml").stdout)
    assert v2["version"] == 2
    assert v2["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert v2["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] == "registry.k8s.io/pause:3.9"
    assert "# kept from the containerd 1.x days" in fleet.ssh("node4", "cat /etc/containerd/config.toml").stdout
    # node5: none -> a minimal version-3 file
    assert tomllib.loads(fleet.ssh("node5", "cat /etc/containerd/config.toml").stdout)["version"] == 3
    # node6: still no version; config_path where containerd 2 reads it for such a file
    no_version = fleet.ssh("node6", "cat /etc/containerd/config.toml").stdout
    assert no_version.startswith(NO_VERSION) and "version" not in tomllib.loads(no_version)
    # docker 28 took the registry by a reload, not a restart
    assert hosts["node3"]["result"]["docker"]["action"] == "reloaded", hosts["node3"]
    # podman: the drop-in written (no reload: podman reads it per command), verified by
    # `podman info`; the distro's registries.conf byte for byte as it was
    endpoint = fleet.inventory_data()["master"]["address"] + ":5000"
    for name in PODMAN_NODES:
        podman = hosts[name]["result"]["containers"]
        assert podman["status"] == "changed" and podman["action"] == "none", (name, podman)
        assert podman["files"] == [DROP_IN] and podman["version"].startswith("podman 5."), podman
        drop_in = tomllib.loads(fleet.ssh(name, f"cat {DROP_IN}").stdout)
        mirrors = {r["prefix"]: r["mirror"][0] for r in drop_in["registry"] if "prefix" in r}
        assert mirrors["docker.io"] == {"location": endpoint, "insecure": True}, mirrors
        assert set(mirrors) == {"docker.io", "registry.k8s.io", "quay.io"}, mirrors
        assert registries_conf(fleet, name) == distro_conf[name], name
    for name in NO_PODMAN:
        assert hosts[name]["result"]["containers"]["status"] == "absent", hosts[name]
        assert fleet.ssh(name, f"test -e {DROP_IN}", check=False).returncode == 1

    before = {n: start_times(fleet, n) for n in NODES}
    rc, again, err = run_json("configure-nodes", "-i", inv)
    assert rc == 0, err
    for name in NODES:
        host = by_name(again)[name]
        assert host["result"]["changed"] is False, host
        assert start_times(fleet, name) == before[name], f"{name} restarted a runtime on a re-run"
        assert host["result"]["containers"]["status"] == (
            "unchanged" if name in PODMAN_NODES else "absent"), host


def test_smoke_passes_on_every_flavor(fleet: Lab) -> None:
    rc, data, err = run_json("smoke-test", "-i", str(fleet.inventory))
    assert rc == 0, (err, data)
    for name in NODES:
        got = {c["name"]: c for c in by_name(data)[name]["result"]["checks"]}
        for check in ("docker", "docker mirror", "containerd", "config_path", "cri"):
            assert got[check]["status"] == "ok", (name, got[check])
        assert got["registry"]["status"] == "ok", (name, got["registry"])
    node5 = {c["name"]: c for c in by_name(data)["node5"]["result"]["checks"]}
    assert "(python3)" in node5["registry"]["detail"], node5["registry"]
    # podman pulled the image by its upstream name through the mirror; nodes without it skip
    for name in NODES:
        got = {c["name"]: c for c in by_name(data)[name]["result"]["checks"]}
        assert got["crio"] == {"name": "crio", "status": "skip", "detail": "not installed"}, got
        if name in NO_PODMAN:
            assert got["podman"]["status"] == "skip", (name, got["podman"])
            continue
        assert got["podman"]["status"] == "ok", (name, got["podman"])
        assert got["podman"]["detail"] == (
            "podman pull docker.io/library/busybox:1.36 via the mirror "
            f"{fleet.inventory_data()['master']['address']}:5000"), got["podman"]
        # ... and left the node's image store as it found it
        assert fleet.ssh(name, "podman image exists docker.io/library/busybox:1.36",
                         check=False).returncode == 1, name
    log = fleet.ssh("master", "docker logs registry 2>&1").stdout
    for name in PODMAN_NODES:
        assert any(f"{fleet.hosts[name]} - -" in ln and "/v2/library/busybox/manifests/1.36" in ln
                   and "containers/" in ln for ln in log.splitlines()), f"no podman pull from {name}"


def test_cri_pull_proves_the_kubelets_path(fleet: Lab) -> None:
    """A config_path list on containerd 2: `config dump` shows it and ctr --hosts-dir pulls, but the
    kubelet's CRI PullImage ignores certs.d. smoke-test names it; configure-nodes repairs it."""
    # the first config_path is the image service's (the transfer service has one of its own below)
    fleet.ssh("node3", "sed -i \"0,/^ *config_path = /s|^\\( *config_path = \\).*|\\1'/etc/containerd/certs.d:/etc/docker/certs.d'|\" "
                       "/etc/containerd/config.toml && systemctl restart containerd")
    assert dumped_config_path(fleet, "node3") == "/etc/containerd/certs.d:/etc/docker/certs.d"
    rc, data, _ = run_json("smoke-test", "-i", str(fleet.inventory), "--limit", "node3")
    assert rc == 1
    got = {c["name"]: c for c in by_name(data)["node3"]["result"]["checks"]}
    assert got["containerd"]["status"] == "ok" and got["config_path"]["status"] == "ok", got
    assert got["cri"]["status"] == "FAIL"
    assert "not honoured by the CRI image service" in got["cri"]["detail"], got["cri"]
    assert "containerd#12415" in got["cri"]["detail"]
    rc, _, err = run_json("configure-nodes", "-i", str(fleet.inventory), "--limit", "node3")
    assert rc == 0, err
    assert dumped_config_path(fleet, "node3") == "/etc/containerd/certs.d"
    rc, data, _ = run_json("smoke-test", "-i", str(fleet.inventory), "--limit", "node3")
    assert rc == 0, data
