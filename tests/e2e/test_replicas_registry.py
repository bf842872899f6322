"""Issue 22 on the registry side: registry-up brings the master and two replicas up side by side, in
both storage modes; every replica serves every image with the same digests; the operator's link
carries each blob once; a re-run moves nothing; one replica down is named while the others go on;
registry-down stops every replica.

One lab: the master, replica1, replica2, a SeaweedFS S3 store, one node.
"""

from __future__ import annotations

import http.client
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lab, nodecfg, run_json, start_lab

REPLICAS = ("master", "replica1", "replica2")
ACCEPT = ("application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json")


@pytest.fixture(scope="module")
def lab() -> Lab:
    return start_lab(1, replicas=2, s3=True)


def _inventory(lab: Lab, tmp: Path, name: str, *, s3: bool) -> str:
    data = lab.inventory_data()
    assert [r["name"] for r in data["registry"]["replicas"]] == ["replica1", "replica2"]
    if not s3:
        data["registry"].pop("storage", None)
    else:
        assert "s3" in data["registry"]["storage"]
    return str(lab.write_inventory(tmp / f"{name}.yaml", data))


def _digests(lab: Lab, host: str) -> dict[str, str]:
    """repository:tag -> manifest digest, as the registry on `host` serves them."""
    base = f"{lab.hosts[host]}:5000"
    with urllib.request.urlopen(f"http://{base}/v2/_catalog", timeout=10) as resp:
        repos = json.loads(resp.read())["repositories"]
    out = {}
    for repo in repos:
        with urllib.request.urlopen(f"http://{base}/v2/{repo}/tags/list", timeout=10) as resp:
            tags = json.loads(resp.read())["tags"] or []
        for tag in tags:
            conn = http.client.HTTPConnection(lab.hosts[host], 5000, timeout=10)
            conn.request("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
            resp = conn.getresponse()
            resp.read()
            out[f"{repo}:{tag}"] = resp.getheader("Docker-Content-Digest") or ""
            conn.close()
    return out


def _by_host(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["master"].split(" ")[0]: r for r in data["replicas"]}


def test_own_disks_every_replica_holds_every_image_each_blob_sent_once(lab: Lab, tmp_path: Path) -> None:
    inv = _inventory(lab, tmp_path, "disks", s3=False)
    rc, up, err = run_json("registry-up", "-i", inv)
    assert rc == 0, err
    replicas = _by_host(up)
    assert list(replicas) == list(REPLICAS)
    assert replicas["master"]["sync"] == "pushed"
    assert {replicas[h]["sync"] for h in REPLICAS[1:]} == {"copied"}
    sent = up["transfer"]["uploaded"]
    assert len(sent) == len(set(sent))  # the operator's link carried each blob once
    for h in REPLICAS[1:]:
        assert replicas[h]["copied"] > 0, replicas[h]  # the rest came from the master, inside the site
    served = {h: _digests(lab, h) for h in REPLICAS}
    assert served["master"] and served["replica1"] == served["master"] == served["replica2"]
    for h in REPLICAS:  # own disks: the data is on each host
        assert lab.ssh(h, "ls /var/lib/registry/docker/registry/v2/repositories").stdout.strip()

    rc, again, err = run_json("registry-up", "-i", inv)
    assert rc == 0, err
    assert again["transfer"]["uploaded"] == [] and all(i["action"] == "skipped" for i in again["images"])
    assert {r["container_action"] for r in again["replicas"]} == {"keep"}
    assert {_by_host(again)[h]["sync"] for h in REPLICAS[1:]} == {"up to date"}

    down = nodecfg("registry-down", "-i", inv, "--purge")
    assert down.returncode == 0, down.stderr
    for h in REPLICAS:
        assert f"{h} " in down.stdout or h in down.stdout
        assert lab.ssh(h, "docker ps -aq --filter name=^registry$").stdout.strip() == ""
        assert lab.ssh(h, "test -e /var/lib/registry && echo there || echo gone").stdout.strip() == "gone"


def test_s3_every_replica_serves_one_bucket(lab: Lab, tmp_path: Path) -> None:
    inv = _inventory(lab, tmp_path, "s3", s3=True)
    rc, up, err = run_json("registry-up", "-i", inv)
    assert rc == 0, err
    replicas = _by_host(up)
    assert replicas["master"]["sync"] == "pushed"
    assert {replicas[h]["sync"] for h in REPLICAS[1:]} == {"shared"}
    served = {h: _digests(lab, h) for h in REPLICAS}
    assert served["master"] and served["replica1"] == served["master"] == served["replica2"]
    for h in REPLICAS:  # the blobs are in the bucket, not on the replicas' disks
        out = lab.ssh(h, "ls -A /var/lib/registry 2>/dev/null | wc -l").stdout.strip()
        assert out == "0", (h, out)
        env = lab.ssh(h, "stat -c '%a %U' /etc/nodecfg/registry/registry.env").stdout.strip()
        assert env == "600 root"
        args = lab.ssh(h, "docker inspect --format '{{json .Args}} {{json .HostConfig.Binds}}' registry").stdout
        assert "SECRETKEY" not in args
    secrets = {lab.ssh(h, "grep -c ^REGISTRY_HTTP_SECRET= /etc/nodecfg/registry/registry.env && "
                          "sha256sum < /etc/nodecfg/registry/registry.env").stdout for h in REPLICAS}
    assert len(secrets) == 1  # one http.secret (and the same keys) on every replica
    rc, again, err = run_json("registry-up", "-i", inv)
    assert rc == 0 and again["transfer"]["uploaded"] == [], err
    assert {r["container_action"] for r in again["replicas"]} == {"keep"}

    # the node pulls through the other replicas from the bucket while the master's registry is stopped
    # (the registry streams the blobs itself: the node never needs to reach the S3 store)
    proc = nodecfg("configure-nodes", "-i", inv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lab.ssh("master", "docker stop registry >/dev/null")
    try:
        rc, smoke, err = run_json("smoke-test", "-i", inv)
        assert rc == 0, (smoke, err)
        assert [r for r in smoke["replicas_down"] if r["endpoint"] == f"{lab.hosts['master']}:5000"], smoke
    finally:
        lab.ssh("master", "docker start registry >/dev/null")

    # a replica whose host is down: the others are brought up and serve; the run names it and exits 1
    lab.stop("replica2")
    try:
        proc = nodecfg("registry-up", "-i", inv, "--timeout", "10")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "replica2" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
        assert _digests(lab, "replica1") == served["master"]
    finally:
        lab.start("replica2")
    down = nodecfg("registry-down", "-i", inv, "--purge")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "S3 bucket" in down.stdout
    for h in REPLICAS:
        assert lab.ssh(h, "docker ps -aq --filter name=^registry$").stdout.strip() == ""
