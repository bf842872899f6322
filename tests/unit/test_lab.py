"""The dev lab's pure parts (nodecfg_lab, in lab/): flavor table, flavor assignment, the hosts'
addresses, the inventory it writes, the S3 store's layout, and the `nodecfg-lab` CLI's usage errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml
from nodecfg_lab import LabError, LabUsageError, s3store
from nodecfg_lab.cli import main
from nodecfg_lab.flavors import DEFAULT_FLAVOR, FLAVORS, NODE_IMAGE, assign_flavors, node_image
from nodecfg_lab.fleet import LabNode, host_names, inventory_text, plan_addresses, status_order
from nodecfg_lab.rootfs import _apt_preferences
from nodecfg_lab.settings import LabPaths


def test_assign_flavors_takes_the_list_in_turn_and_wraps() -> None:
    assert assign_flavors(3, ["bookworm", "trixie", "containerd2"]) == ["bookworm", "trixie", "containerd2"]
    assert assign_flavors(5, ["trixie", "containerd2"]) == ["trixie", "containerd2", "trixie",
                                                           "containerd2", "trixie"]
    assert assign_flavors(2, ["bookworm", "trixie", "containerd2"]) == ["bookworm", "trixie"]
    assert assign_flavors(0, ["bookworm"]) == []


@pytest.mark.parametrize("flavors", [[], ["bookworm", "jessie"], ["Trixie"]])
def test_assign_flavors_refuses_unknown_or_no_flavors(flavors: list[str]) -> None:
    with pytest.raises(LabUsageError):
        assign_flavors(2, flavors)


def test_flavor_table_is_consistent() -> None:
    assert DEFAULT_FLAVOR in FLAVORS
    for name, flavor in FLAVORS.items():
        assert flavor.name == name and flavor.description
        assert {"containerd", "docker.io", "systemd"} <= {p for p, _ in flavor.expect}
        if flavor.base is not None:
            base = FLAVORS[flavor.base]
            assert base.base is None, "one level of derivation"
            assert flavor.pinned and set(flavor.pinned) <= set(flavor.packages)
            # systemd stays the base's: forky's cannot boot on a cgroup-v1 host
            assert "systemd" not in flavor.pinned
            assert dict(flavor.expect)["systemd"] == dict(base.expect)["systemd"]


def test_each_flavor_has_its_own_tarball_and_image(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path / "state", tmp_path / "cache")
    assert paths.rootfs().name == "rootfs-bookworm.tar"  # the cache file name of old
    assert {paths.rootfs(f).name for f in FLAVORS} == {f"rootfs-{f}.tar" for f in FLAVORS}
    assert node_image("containerd2") == "nodecfg-lab-node:containerd2"
    assert node_image("bookworm") == NODE_IMAGE


@pytest.mark.parametrize(("env", "want"), [
    ({}, ("nodecfg-lab", "172.29.77.0/24", "~/.local/share/nodecfg/lab", "~/.cache/nodecfg",
          "http://deb.debian.org/debian")),
    ({"NODECFG_LAB_NAME": "lab-x", "NODECFG_LAB_SUBNET": "172.29.81.0/24", "NODECFG_LAB_DIR": "/tmp/lab-x",
      "NODECFG_CACHE_DIR": "/var/cache/x", "NODECFG_LAB_MIRROR": "http://mirror.lab/debian"},
     ("lab-x", "172.29.81.0/24", "/tmp/lab-x", "/var/cache/x", "http://mirror.lab/debian")),
])
def test_the_environment_names_the_lab(env: dict[str, str], want: tuple[str, ...],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from nodecfg_lab import settings

    for var in ("NODECFG_LAB_NAME", "NODECFG_LAB_SUBNET", "NODECFG_LAB_DIR", "NODECFG_CACHE_DIR",
                "NODECFG_LAB_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    paths = settings.lab_paths()
    got = (settings.lab_name(), str(settings.lab_subnet()), str(paths.state), str(paths.cache), settings.mirror())
    assert got == tuple(str(Path(w).expanduser()) if w.startswith("~") else w for w in want)
    assert settings.container_name("node1") == f"{want[0]}-node1"
    assert settings.mine() == {"label": f"nodecfg.lab={want[0]}"}


def test_apt_pins_keep_the_base_and_take_the_runtimes_from_the_new_suite() -> None:
    prefs = _apt_preferences(FLAVORS["containerd2"], "trixie")
    stanzas = [dict(line.split(": ", 1) for line in s.splitlines()) for s in prefs.strip().split("\n\n")]
    assert stanzas[0] == {"Package": "*", "Pin": "release n=trixie", "Pin-Priority": "900"}
    assert stanzas[1]["Pin"] == "release n=forky" and stanzas[1]["Pin-Priority"] == "990"
    assert {"containerd", "docker.io", "docker-cli"} <= set(stanzas[1]["Package"].split())


def test_inventory_keeps_its_format_and_notes_the_flavors(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path, tmp_path)
    nodes = [("node1", "172.29.77.11"), ("node2", "172.29.77.12")]
    plain = inventory_text(paths, "172.29.77.10", nodes)
    noted = inventory_text(paths, "172.29.77.10", nodes,
                           flavors={"master": "bookworm", "node1": "bookworm", "node2": "containerd2"},
                           minimal={"node2"})
    assert yaml.safe_load(noted) == yaml.safe_load(plain)
    lines = noted.splitlines()
    assert "  name: master   # flavor: bookworm" in lines
    assert "  - {name: node2, address: 172.29.77.12}   # flavor: containerd2, minimal" in lines


def test_the_inventory_is_one_nodecfg_reads(tmp_path: Path) -> None:
    from nodecfg.inventory import load_inventory

    paths = LabPaths(tmp_path, tmp_path)
    paths.key.write_text("")  # nodecfg checks that the key file is there
    path = tmp_path / "inventory.yaml"
    path.write_text(inventory_text(paths, "172.29.77.10", [("node1", "172.29.77.11")],
                                   flavors={"master": "bookworm", "node1": "trixie"}))
    inv = load_inventory(path)
    assert (inv.master.name, inv.master.address) == ("master", "172.29.77.10")
    assert [(n.name, n.address) for n in inv.nodes] == [("node1", "172.29.77.11")]
    assert inv.nodes[0].ssh.key == paths.key and inv.nodes[0].ssh.known_hosts == paths.known_hosts


@pytest.mark.parametrize(("nodes", "replicas", "s3", "want"), [
    (3, 0, False, {"master": 10, "node1": 11, "node2": 12, "node3": 13}),  # what it always was
    (2, 2, False, {"master": 10, "node1": 11, "node2": 12, "replica1": 13, "replica2": 14}),
    (1, 0, True, {"master": 10, "node1": 11, "s3a": 12, "s3b": 13}),
    (3, 2, True, {"master": 10, "node1": 11, "node2": 12, "node3": 13, "replica1": 14, "replica2": 15,
                  "s3a": 16, "s3b": 17}),
])
def test_hosts_take_the_addresses_after_the_master_in_order(nodes: int, replicas: int, s3: bool,
                                                            want: dict[str, int],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODECFG_LAB_SUBNET", "172.29.85.0/24")
    got = plan_addresses(nodes, replicas, s3)
    assert got == {name: f"172.29.85.{last}" for name, last in want.items()}
    assert list(got) == host_names(nodes, replicas, s3)


def test_a_subnet_too_small_for_every_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODECFG_LAB_SUBNET", "172.29.85.0/28")  # 14 host addresses: .10 to .14 fit
    assert len(plan_addresses(3, 1)) == 5
    with pytest.raises(LabError, match="too small for 6 lab hosts"):
        plan_addresses(3, 0, s3=True)


def test_status_lists_hosts_in_address_order() -> None:
    names = ["s3b", "node10", "replica2", "node2", "master", "s3a", "replica1", "node1"]
    nodes = sorted((LabNode(n, f"lab-{n}", "-", "running") for n in names), key=status_order)
    assert [n.name for n in nodes] == ["master", "node1", "node2", "node10", "replica1", "replica2", "s3a", "s3b"]
    assert [n.role for n in nodes] == ["master", "node", "node", "node", "replica", "replica", "s3", "s3"]


def test_inventory_names_replicas_and_the_s3_store_only_when_there_are(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path, tmp_path)
    nodes = [("node1", "172.29.85.11")]
    plain = yaml.safe_load(inventory_text(paths, "172.29.85.10", nodes))
    assert set(plain["registry"]) == {"port", "mirrors"}
    store = s3store.store(paths, {"s3a": "172.29.85.13", "s3b": "172.29.85.14"})
    text = inventory_text(paths, "172.29.85.10", nodes, flavors={"replica1": "bookworm"},
                          replicas=[("replica1", "172.29.85.12")], s3=store)
    assert "    - {name: replica1, address: 172.29.85.12}   # flavor: bookworm" in text.splitlines()
    data = yaml.safe_load(text)
    assert data["registry"].pop("replicas") == [{"name": "replica1", "address": "172.29.85.12"}]
    assert data["registry"].pop("storage") == {"s3": {
        "endpoint": "http://172.29.85.14:8333", "bucket": "registry", "region": "us-east-1",
        "access_key_file": str(tmp_path / "s3-access-key"), "secret_key_file": str(tmp_path / "s3-secret-key")}}
    assert data == plain
    replicas_only = yaml.safe_load(inventory_text(paths, "172.29.85.10", nodes, replicas=[("replica1", "172.29.85.12")]))
    assert "storage" not in replicas_only["registry"]


ADDRESSES = {"s3a": "172.29.85.13", "s3b": "172.29.85.14"}


def test_seaweedfs_spreads_over_two_hosts_each_process_on_its_own_address() -> None:
    units = s3store.services(ADDRESSES)
    assert {host: sorted(u) for host, u in units.items()} == {
        "s3a": ["seaweedfs-master", "seaweedfs-volume"], "s3b": ["seaweedfs-filer", "seaweedfs-volume"]}
    for host, services in units.items():
        for argv in services.values():
            assert argv[0] == s3store.WEED and f"-ip={ADDRESSES[host]}" in argv
    master = "172.29.85.13:9333"
    assert f"-mserver={master}" in units["s3a"]["seaweedfs-volume"]
    assert f"-mserver={master}" in units["s3b"]["seaweedfs-volume"]
    filer = units["s3b"]["seaweedfs-filer"]
    assert {f"-master={master}", "-s3", "-s3.port=8333", "-s3.config=/etc/seaweedfs/s3.json"} <= set(filer)
    text = s3store.unit_text("seaweedfs-filer", filer, master)
    assert f"ExecStart={' '.join(filer)}\n" in text and "StateDirectory=seaweedfs/filer\n" in text
    assert "Restart=always" in text and "WantedBy=multi-user.target" in text
    # every part but the master waits for the master's gRPC port (HTTP port + 10000) first
    assert "/dev/tcp/172.29.85.13/19333;" in text
    assert "ExecStartPre" not in s3store.unit_text("seaweedfs-master", units["s3a"]["seaweedfs-master"], master)


@pytest.mark.parametrize(("host", "has_identities"), [("s3a", False), ("s3b", True)])
def test_each_s3_host_gets_its_units_enabled_and_only_the_endpoint_the_keys(host: str,
                                                                           has_identities: bool) -> None:
    with tarfile.open(fileobj=io.BytesIO(s3store.host_archive(host, ADDRESSES, ("AK", "SK")))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        units = sorted(s3store.services(ADDRESSES)[host])
        for unit in units:
            assert members[f"etc/systemd/system/{unit}.service"].isfile()
            link = members[f"etc/systemd/system/multi-user.target.wants/{unit}.service"]
            assert link.issym() and link.linkname == f"/etc/systemd/system/{unit}.service"
        identity = members.get("etc/seaweedfs/s3.json")
        assert (identity is not None) == has_identities
        if identity is not None:
            assert identity.mode == 0o600 and identity.uid == 0
            content = tar.extractfile(identity)
            assert content is not None
            data = json.loads(content.read())
            assert data["identities"][0]["credentials"] == [{"accessKey": "AK", "secretKey": "SK"}]
            assert not any("anonymous" in i["name"] for i in data["identities"])


def test_s3_keys_are_made_once_private_and_kept(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path, tmp_path)
    keys = s3store.ensure_keys(paths)
    assert all(keys) and keys[0] != keys[1]
    for path, key in zip((paths.s3_access_key, paths.s3_secret_key), keys, strict=True):
        assert path.read_text() == key and path.stat().st_mode & 0o777 == 0o600
    assert s3store.ensure_keys(paths) == keys
    paths.s3_secret_key.write_text("")
    again = s3store.ensure_keys(paths)
    assert again[0] == keys[0] and again[1] not in ("", keys[1])


@pytest.mark.parametrize(("status", "want"), [
    ({"Topology": {"Max": 0, "Free": 0, "DataCenters": None}}, 0),
    ({"Topology": {"DataCenters": [{"Racks": [{"DataNodes": [{"Url": "a:8080"}, {"Url": "b:8080"}]}]}]}}, 2),
    ({"Topology": {"DataCenters": [{"Racks": [{"DataNodes": [{"Url": "a:8080"}]}, {"DataNodes": None}]}]}}, 1),
])
def test_volume_servers_counts_what_the_master_sees(status: dict[str, object], want: int) -> None:
    assert s3store.volume_servers(json.dumps(status).encode()) == want


def test_s3_without_seaweedfs_is_one_line_before_the_engine_is_asked(capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setattr("docker.from_env", _no_engine)
    monkeypatch.setattr("sysconfig.get_path", lambda _name: str(tmp_path))
    monkeypatch.setattr("shutil.which", lambda _name: None)
    assert main(["up", "--nodes", "1", "--s3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nodecfg-lab[s3]" in err, err


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("nodecfg-lab: error: "), err
    return err


def test_unknown_flavor_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("docker.from_env", _no_engine)
    err = _usage_error(["up", "--nodes", "2", "--flavors", "bookworm,jessie"], capsys)
    assert "unknown flavor 'jessie'" in err and "containerd2" in err


@pytest.mark.parametrize("names", ["node4", "node0", "master2,node1", "replica2", "s3a"])
def test_minimal_must_name_a_lab_host(names: str, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("docker.from_env", _no_engine)
    err = _usage_error(["up", "--nodes", "3", "--replicas", "1", "--minimal", names], capsys)
    assert "--minimal" in err and "replica1" in err


@pytest.mark.parametrize("argv", [["up", "--flavors", ","], ["up", "--nodes", "0"], ["up", "--nodes", "x"],
                                  ["up", "--replicas", "-1"], ["up", "--replicas", "two"], ["up", "--s3", "yes"],
                                  [], ["sideways"]], ids=repr)
def test_bad_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _usage_error(argv, capsys)


@pytest.mark.parametrize("action", ["up", "down", "status", "inventory", "flavors"])
def test_each_action_has_help(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([action, "--help"])
    assert info.value.code == 0
    assert f"usage: nodecfg-lab {action}" in capsys.readouterr().out


def _no_engine(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a usage error must be reported before the Docker engine is asked")
