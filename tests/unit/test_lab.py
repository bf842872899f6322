"""The dev lab's pure parts (nodecfg_lab, in lab/): flavor table, flavor assignment, the inventory it
writes, and the `nodecfg-lab` CLI's usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from nodecfg_lab import LabUsageError
from nodecfg_lab.cli import main
from nodecfg_lab.flavors import DEFAULT_FLAVOR, FLAVORS, NODE_IMAGE, assign_flavors, node_image
from nodecfg_lab.fleet import inventory_text
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


@pytest.mark.parametrize("names", ["node4", "node0", "master2,node1"])
def test_minimal_must_name_a_lab_host(names: str, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("docker.from_env", _no_engine)
    err = _usage_error(["up", "--nodes", "3", "--minimal", names], capsys)
    assert "--minimal" in err


@pytest.mark.parametrize("argv", [["up", "--flavors", ","], ["up", "--nodes", "0"], ["up", "--nodes", "x"],
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
