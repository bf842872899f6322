"""Issue 24: configure-nodes configures the containerd config the daemon really reads — config.toml
and the files it imports — on containerd 1.7 (trixie) and 2.1 (containerd2) nodes.

node1  trixie       config.toml imports conf.d/*.toml; a drop-in sets the CRI registry's
                    config_path to a site dir: hosts.toml go there, no config file changes, no restart
node2  containerd2  the same in version-3 files
node3  trixie       a drop-in holds the CRI plugin's table (CNI settings) without config_path:
                    containerd 1.x takes that table whole, so config_path set in config.toml would
                    never take effect; nodecfg sets it in the drop-in, restarts once, and it shows
"""

from __future__ import annotations

import tomllib

import pytest

from tests.e2e.conftest import Lab, by_name, nodecfg, run_json, start_lab

SITE = "/etc/containerd/site-certs.d"
MAIN_V2 = '# the site\'s containerd\nversion = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n'
MAIN_V3 = '# the site\'s containerd\nversion = 3\nimports = ["/etc/containerd/conf.d/*.toml"]\n'
DROP_IN_V2 = f'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{SITE}"\n'
DROP_IN_V3 = f'version = 3\n[plugins."io.containerd.cri.v1.images".registry]\n  config_path = "{SITE}"\n'
CNI_DROP_IN = '# CNI, from the platform team\n[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/usr/lib/cni"\n'
SEED = {"node1": (MAIN_V2, "10-registry.toml", DROP_IN_V2), "node2": (MAIN_V3, "10-registry.toml", DROP_IN_V3),
        "node3": (MAIN_V2, "50-cni.toml", CNI_DROP_IN)}
FILES = "/etc/containerd/config.toml /etc/containerd/conf.d/*.toml"


def state(lab: Lab, name: str) -> tuple[str, str]:
    """(sha256 of config.toml and the drop-ins, containerd's MainPID and start time)."""
    sums = lab.ssh(name, f"sha256sum {FILES}").stdout
    started = lab.ssh(name, "systemctl show -p MainPID -p ActiveEnterTimestampMonotonic --value containerd").stdout
    return sums, started


def in_effect(lab: Lab, name: str) -> str:
    dump = tomllib.loads(lab.ssh(name, "containerd config dump").stdout)
    section = "io.containerd.cri.v1.images" if dump.get("version", 1) >= 3 else "io.containerd.grpc.v1.cri"
    return str(dump["plugins"][section]["registry"].get("config_path", ""))


@pytest.fixture(scope="module")
def fleet() -> Lab:
    lab = start_lab(3, flavors=("trixie", "containerd2", "trixie"))
    proc = nodecfg("registry-up", "-i", str(lab.inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name, (main, drop_in, text) in SEED.items():
        lab.ssh(name, f"mkdir -p /etc/containerd/conf.d && cat > /etc/containerd/conf.d/{drop_in}", stdin=text)
        lab.ssh(name, "cat > /etc/containerd/config.toml && systemctl restart containerd", stdin=main)
    assert in_effect(lab, "node1") == SITE and in_effect(lab, "node2") == SITE and in_effect(lab, "node3") == ""
    return lab


def test_configured_where_the_daemon_reads(fleet: Lab) -> None:
    inv = str(fleet.inventory)
    before = {name: state(fleet, name) for name in SEED}
    rc, data, err = run_json("configure-nodes", "-i", inv)
    assert rc == 0, (err, data)
    hosts = by_name(data)
    for name in ("node1", "node2"):  # the drop-in's config_path is used as it is
        assert hosts[name]["ok"], hosts[name]
        assert state(fleet, name) == before[name], f"{name}: a config file changed or containerd restarted"
        listed = fleet.ssh(name, f"ls {SITE}").stdout.split()
        assert listed and all((fleet.ssh(name, f"test -f {SITE}/{d}/hosts.toml", check=False).returncode == 0)
                              for d in listed), listed
        assert fleet.ssh(name, "test -e /etc/containerd/certs.d", check=False).returncode != 0
        assert in_effect(fleet, name) == SITE
    # node3: the drop-in holding the CRI table got config_path; config.toml untouched; one restart
    sums, started = state(fleet, "node3")
    assert started != before["node3"][1]
    assert fleet.ssh("node3", "sha256sum /etc/containerd/config.toml").stdout in before["node3"][0]
    cni = fleet.ssh("node3", "cat /etc/containerd/conf.d/50-cni.toml").stdout
    assert cni.startswith(CNI_DROP_IN) and 'config_path = "/etc/containerd/certs.d"' in cni
    assert in_effect(fleet, "node3") == "/etc/containerd/certs.d"
    assert hosts["node3"]["result"]["containerd"]["status"] == "changed", hosts["node3"]
    assert hosts["node3"]["result"]["containerd"]["action"] == "restarted", hosts["node3"]
    del sums

    rc, smoke, err = run_json("smoke-test", "-i", inv)
    assert rc == 0, (err, smoke)
    for name in SEED:
        checks = {c["name"]: c for c in by_name(smoke)[name]["result"]["checks"]}
        assert checks["containerd"]["status"] == "ok" and checks["cri"]["status"] == "ok", checks
        assert checks["config_path"]["detail"].endswith(SITE if name != "node3" else "/etc/containerd/certs.d")

    again = {name: state(fleet, name) for name in SEED}
    rc, data, err = run_json("configure-nodes", "-i", inv)
    assert rc == 0, err
    for name in SEED:
        assert by_name(data)[name]["result"]["changed"] is False, by_name(data)[name]
        assert state(fleet, name) == again[name], f"{name}: a re-run changed a file or restarted containerd"
