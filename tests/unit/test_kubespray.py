"""kubespray-vars: offline.yml values that match what registry-up pushed (no host contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nodecfg.cli import main
from nodecfg.inventory import parse_inventory
from nodecfg.kubespray import REPO_VARS, offline_vars

INV = """\
registry: {port: 5000, address: 10.9.8.7}
images: [docker.io/library/busybox:1.36, registry.k8s.io/pause:3.9, quay.io/calico/node:v3.27.0]
master: {address: 10.9.8.7}
nodes: [10.9.8.8]
"""


def test_every_repo_is_the_registry_itself() -> None:
    values = offline_vars(parse_inventory(INV, "inv.yaml", check_files=False))
    assert values["registry_host"] == "10.9.8.7:5000"
    assert set(values) == {"registry_host", *REPO_VARS}
    assert {values[v] for v in REPO_VARS} == {"{{ registry_host }}"}


def test_cli_prints_offline_yml_that_kubespray_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "inventory.yaml"
    inv.write_text(INV + "ssh: {key: ./no-such-key}\n")  # keys are not needed: no host is contacted
    assert main(["kubespray-vars", "-i", str(inv)]) == 0
    out = capsys.readouterr().out
    data = yaml.safe_load(out)
    assert data == offline_vars(parse_inventory(INV, "x", check_files=False))
    # kubespray then names images as {{ docker_image_repo }}/library/busybox: what was pushed
    assert "docker.io: library/busybox:1.36" in out and "quay.io: calico/node:v3.27.0" in out
    assert "ghcr.io: no images in the inventory" in out
