"""Issue 23 with replicas (issue 22): registry-prune on every replica. Own disks: each replica pruned on
its own, its bytes freed on its own disk. One S3 bucket: pruned once, collected with every replica's
registry stopped, and every replica serving again afterwards.

One lab: the master, replica1, a SeaweedFS S3 store, one node.
"""

from __future__ import annotations

import http.client
from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import Lab, run_json, start_lab
from tests.e2e.test_prune import B_MB, A, B, _build

HOSTS = ("master", "replica1")


@pytest.fixture(scope="module")
def lab() -> Lab:
    client = docker.from_env(timeout=900)
    for ref, mb in ((A, 1), (B, B_MB)):
        _build(client, ref, f"FROM busybox:1.36\nRUN head -c {mb << 20} /dev/urandom > /{ref.split('/')[-1][:7]}\n")
    return start_lab(1, replicas=1, s3=True)


def _inventory(lab: Lab, tmp: Path, name: str, images: list[str], *, s3: bool) -> str:
    data = lab.inventory_data()
    data["images"] = images
    if not s3:
        data["registry"].pop("storage", None)
    return str(lab.write_inventory(tmp / f"{name}.yaml", data))


def _status(lab: Lab, host: str, path: str) -> int:
    conn = http.client.HTTPConnection(lab.hosts[host], 5000, timeout=10)
    conn.request("HEAD", path, headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    status = conn.getresponse().status
    conn.close()
    return status


def _started(lab: Lab) -> dict[str, str]:
    return {h: lab.ssh(h, "docker inspect --format '{{.State.StartedAt}}' registry").stdout.strip() for h in HOSTS}


def _prune_then_check(lab: Lab, tmp: Path, *, s3: bool) -> list[dict[str, object]]:
    name = "s3" if s3 else "disks"
    rc, up, err = run_json("registry-up", "-i", _inventory(lab, tmp, f"{name}-ab", [A, B], s3=s3))
    assert rc == 0, err
    assert {h: _status(lab, h, "/v2/e2e/prune-b/manifests/1") for h in HOSTS} == {"master": 200, "replica1": 200}
    dropped = _inventory(lab, tmp, f"{name}-a", [A], s3=s3)
    rc, check, err = run_json("registry-prune", "-i", dropped, "--check")
    assert rc == 0, err
    assert all(_status(lab, h, "/v2/e2e/prune-b/manifests/1") == 200 for h in HOSTS)  # nothing changed
    before = _started(lab)
    rc, pruned, err = run_json("registry-prune", "-i", dropped)
    assert rc == 0, err
    after = _started(lab)
    # every replica's registry was stopped and started again: with own disks for its own collection,
    # with S3 while the one bucket was collected
    assert all(after[h] != before[h] for h in HOSTS), (before, after)
    for h in HOSTS:  # every replica serves again, A and not B
        assert _status(lab, h, "/v2/e2e/prune-a/manifests/1") == 200, h
        assert _status(lab, h, "/v2/e2e/prune-b/manifests/1") == 404, h
    del up, check
    return list(pruned["hosts"])


def test_own_disks_each_replica_pruned_and_freed_on_its_own(lab: Lab, tmp_path: Path) -> None:
    hosts = _prune_then_check(lab, tmp_path, s3=False)
    assert [h["master"].split(" ")[0] for h in hosts] == list(HOSTS)
    for h in hosts:
        assert [t["target"] for t in h["removed"]] == ["e2e/prune-b:1"], h
        assert h["bytes_freed"] >= B_MB << 20 and h["stopped"] >= 0, h


def test_s3_pruned_once_with_every_replica_stopped_meanwhile(lab: Lab, tmp_path: Path) -> None:
    # the registries of the previous test are recreated on the bucket by registry-up
    hosts = _prune_then_check(lab, tmp_path, s3=True)
    first, other = hosts
    assert [t["target"] for t in first["removed"]] == ["e2e/prune-b:1"]
    assert first["bytes_estimated"] >= B_MB << 20 and first["bytes_freed"] == -1 and first["stopped"] >= 0
    assert "serves the same S3 bucket" in str(other["note"])
