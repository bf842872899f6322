"""kubespray-vars: offline.yml values that match what registry-up pushed (no host contacted)."""

from __future__ import annotations

import json
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
    assert set(values) == {"registry_host", *REPO_VARS, "containerd_registries_mirrors"}
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


REPLICAS = """\
registry: {port: 5000, replicas: [10.9.8.11, {name: cp3, address: 10.9.8.12}], mirrors: [docker.io, quay.io]}
images: [docker.io/library/busybox:1.36]
master: {address: 10.9.8.7}
nodes: [10.9.8.8]
"""


def test_containerd_registries_mirrors_lists_every_replica_in_kubesprays_format(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """kubespray's containerd role renders one certs.d/<prefix>/hosts.toml per entry: the registry's
    own prefix (what `{{ registry_host }}/...` pulls use) and each mirrored upstream, every replica a
    mirror host, in the inventory's order (one order for every node: kubespray renders one file)."""
    inv = tmp_path / "inventory.yaml"
    inv.write_text(REPLICAS)
    assert main(["kubespray-vars", "-i", str(inv)]) == 0
    out = capsys.readouterr().out
    hosts = [{"host": f"http://10.9.8.{n}:5000", "capabilities": ["pull", "resolve"], "skip_verify": False}
             for n in (7, 11, 12)]
    assert yaml.safe_load(out)["containerd_registries_mirrors"] == [
        {"prefix": "10.9.8.7:5000", "server": "http://10.9.8.7:5000", "mirrors": hosts},
        {"prefix": "docker.io", "server": "https://registry-1.docker.io", "mirrors": hosts},
        {"prefix": "quay.io", "server": "https://quay.io", "mirrors": hosts},
    ]
    assert "the registry's 3 replicas, tried in this order (the same on every node)" in out
    assert main(["kubespray-vars", "-i", str(inv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["containerd_registries_mirrors"][0]["mirrors"] == hosts


def test_containerd_registries_mirrors_over_tls_and_without_replicas() -> None:
    tls = parse_inventory(REPLICAS.replace("mirrors: [docker.io, quay.io]", "mirrors: [docker.io], tls: true"),
                          "x", check_files=False)
    entries = offline_vars(tls)["containerd_registries_mirrors"]
    assert entries[0]["server"] == "https://10.9.8.7:5000"
    assert {m["host"] for e in entries for m in e["mirrors"]} == {f"https://10.9.8.{n}:5000" for n in (7, 11, 12)}
    assert {tuple(m["ca"]) for e in entries for m in e["mirrors"]} == {("/etc/containerd/certs.d/10.9.8.7:5000/ca.crt",)}
    one = offline_vars(parse_inventory(INV, "x", check_files=False))["containerd_registries_mirrors"]
    assert [(e["prefix"], [m["host"] for m in e["mirrors"]]) for e in one] == [
        ("10.9.8.7:5000", ["http://10.9.8.7:5000"]), *((u, ["http://10.9.8.7:5000"]) for u in
                                                         ("docker.io", "registry.k8s.io", "quay.io"))]
