"""The lab's pure parts: flavor table, flavor assignment, the inventory it writes, CLI errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nodecfg import lab
from nodecfg.cli import main
from nodecfg.errors import UsageError


def test_assign_flavors_takes_the_list_in_turn_and_wraps() -> None:
    assert lab.assign_flavors(3, ["bookworm", "trixie", "containerd2"]) == ["bookworm", "trixie", "containerd2"]
    assert lab.assign_flavors(5, ["trixie", "containerd2"]) == ["trixie", "containerd2", "trixie",
                                                               "containerd2", "trixie"]
    assert lab.assign_flavors(2, ["bookworm", "trixie", "containerd2"]) == ["bookworm", "trixie"]
    assert lab.assign_flavors(0, ["bookworm"]) == []


@pytest.mark.parametrize("flavors", [[], ["bookworm", "jessie"], ["Trixie"]])
def test_assign_flavors_refuses_unknown_or_no_flavors(flavors: list[str]) -> None:
    with pytest.raises(UsageError):
        lab.assign_flavors(2, flavors)


def test_flavor_table_is_consistent() -> None:
    assert lab.DEFAULT_FLAVOR in lab.FLAVORS
    for name, flavor in lab.FLAVORS.items():
        assert flavor.name == name and flavor.description
        assert {"containerd", "docker.io", "systemd"} <= {p for p, _ in flavor.expect}
        if flavor.base is not None:
            base = lab.FLAVORS[flavor.base]
            assert base.base is None, "one level of derivation"
            assert flavor.pinned and set(flavor.pinned) <= set(flavor.packages)
            # systemd stays the base's: forky's cannot boot on a cgroup-v1 host
            assert "systemd" not in flavor.pinned
            assert dict(flavor.expect)["systemd"] == dict(base.expect)["systemd"]


def test_each_flavor_has_its_own_tarball_and_image(tmp_path: Path) -> None:
    paths = lab.LabPaths(tmp_path / "state", tmp_path / "cache")
    assert paths.rootfs().name == "rootfs-bookworm.tar"  # the cache file name of old
    assert {paths.rootfs(f).name for f in lab.FLAVORS} == {f"rootfs-{f}.tar" for f in lab.FLAVORS}
    assert lab.node_image("containerd2") == "nodecfg-lab-node:containerd2"
    assert lab.node_image("bookworm") == lab.NODE_IMAGE


def test_apt_pins_keep_the_base_and_take_the_runtimes_from_the_new_suite() -> None:
    prefs = lab._apt_preferences(lab.FLAVORS["containerd2"], "trixie")
    stanzas = [dict(line.split(": ", 1) for line in s.splitlines()) for s in prefs.strip().split("\n\n")]
    assert stanzas[0] == {"Package": "*", "Pin": "release n=trixie", "Pin-Priority": "900"}
    assert stanzas[1]["Pin"] == "release n=forky" and stanzas[1]["Pin-Priority"] == "990"
    assert {"containerd", "docker.io", "docker-cli"} <= set(stanzas[1]["Package"].split())


def test_inventory_keeps_its_format_and_notes_the_flavors(tmp_path: Path) -> None:
    paths = lab.LabPaths(tmp_path, tmp_path)
    nodes = [("node1", "172.29.77.11"), ("node2", "172.29.77.12")]
    plain = lab.inventory_text(paths, "172.29.77.10", nodes)
    noted = lab.inventory_text(paths, "172.29.77.10", nodes,
                               flavors={"master": "bookworm", "node1": "bookworm", "node2": "containerd2"},
                               minimal={"node2"})
    assert yaml.safe_load(noted) == yaml.safe_load(plain)
    lines = noted.splitlines()
    assert "  name: master   # flavor: bookworm" in lines
    assert "  - {name: node2, address: 172.29.77.12}   # flavor: containerd2, minimal" in lines


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_unknown_flavor_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "_client", _no_engine)
    err = _usage_error(["lab", "up", "--nodes", "2", "--flavors", "bookworm,jessie"], capsys)
    assert "unknown flavor 'jessie'" in err and "containerd2" in err


@pytest.mark.parametrize("names", ["node4", "node0", "master2,node1"])
def test_minimal_must_name_a_lab_host(names: str, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "_client", _no_engine)
    err = _usage_error(["lab", "up", "--nodes", "3", "--minimal", names], capsys)
    assert "--minimal" in err


def test_flags_need_values(capsys: pytest.CaptureFixture[str]) -> None:
    _usage_error(["lab", "up", "--flavors", ","], capsys)


def _no_engine() -> None:
    raise AssertionError("a usage error must be reported before the Docker engine is asked")
