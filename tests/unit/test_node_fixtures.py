"""The pure planners and effect checks against what real nodes of each lab flavor print.

The fixtures under fixtures/nodes/<flavor>/ are captured from lab nodes by
scripts/capture_fixtures.py (never written by hand): containerd 1.6 (bookworm), 1.7 (trixie) and
2.x (containerd2: forky's containerd and docker 28 on trixie's systemd).
"""

from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path

import pytest

from nodecfg.runtimes import containerd as ctd
from nodecfg.runtimes import docker as dkr

NODES = Path(__file__).parent / "fixtures" / "nodes"
FLAVORS = ("bookworm", "trixie", "containerd2")
REGISTRY = "registry.lab:5000"


def fixture(flavor: str, name: str) -> str:
    return (NODES / flavor / name).read_text()


def containerd_major(flavor: str) -> int:
    found = re.search(r"containerd \S+ v?(\d+)\.", fixture(flavor, "versions.txt"))
    assert found, fixture(flavor, "versions.txt")
    return int(found.group(1))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_every_flavor_was_captured() -> None:
    assert sorted(p.name for p in NODES.iterdir()) == sorted(FLAVORS)
    assert [containerd_major(f) for f in FLAVORS] == [1, 1, 2]


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("source", ["config-default.toml", "config.toml"])
def test_config_path_lands_where_the_files_version_says(flavor: str, source: str) -> None:
    text = fixture(flavor, source)
    edit = ctd.set_config_path(text or None, containerd_major(flavor))
    assert edit.text is not None
    doc = tomllib.loads(edit.text)
    version = doc.get("version", 1)
    if text.strip():
        assert version == tomllib.loads(text).get("version", 1), "the file keeps its own version"
        # every line of the original that was not the config_path line is still there
        kept = [ln for ln in text.splitlines() if ln.strip() and "config_path" not in ln]
        assert all(ln in edit.text.splitlines() for ln in kept)
    section: object = doc
    for key in ctd.registry_section(version, containerd_major(flavor)):
        assert isinstance(section, dict)
        section = section[key]
    assert isinstance(section, dict)
    assert section["config_path"] == ctd.DEFAULT_CERTS_D
    # idempotent: the edited file needs no further edit
    assert ctd.set_config_path(edit.text, containerd_major(flavor)).text is None


@pytest.mark.parametrize("flavor", FLAVORS)
def test_config_dump_is_read_as_toml(flavor: str) -> None:
    assert ctd.dumped_config_path(b64(fixture(flavor, "dump-configured.toml"))) == ctd.DEFAULT_CERTS_D
    stock = ctd.dumped_config_path(b64(fixture(flavor, "dump-stock.toml")))
    assert stock is not None and ctd.DEFAULT_CERTS_D not in stock.split(":")
    assert ctd.check_effect(b64(fixture(flavor, "dump-configured.toml")), "ok", ctd.DEFAULT_CERTS_D) is None


@pytest.mark.parametrize("flavor", FLAVORS)
def test_docker_info_shows_the_registry_after_configure(flavor: str) -> None:
    info = fixture(flavor, "docker-info-configured.json")
    assert dkr.check_effect(info, REGISTRY, True) is None
    assert dkr.check_effect(info, "elsewhere:5000", False) is not None
