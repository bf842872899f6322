"""Issue 22: the lab's registry replicas and its S3 store (`nodecfg-lab up --replicas K --s3`).

The proof the registry side relies on: the lab's own registry:2 (Debian's distribution build) with
its S3 driver pointed at the store keeps every blob in the bucket and nothing on the host's disk,
and a second registry on a replica with the same settings serves the same image.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nodecfg_lab as labmod

from tests.e2e.conftest import Lab, nodecfg_lab, start_lab

IMAGE = "localhost:5000/library/busybox:1.36"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
# registry:2 on a lab host, its data directory bound as nodecfg binds it; the S3 settings (keys
# included) come in an env file, never on a command line
RUN_REGISTRY = ("docker run -d --name s3reg --restart always -p 5000:5000 -v /var/lib/registry:/var/lib/registry "
                "--env-file /root/s3reg.env registry:2 >/dev/null && "
                "timeout 30 sh -c 'until curl -sf http://localhost:5000/v2/ >/dev/null; do sleep 0.2; done'")


def registry_env(s3: dict[str, Any], http_secret: str) -> str:
    settings = {
        "REGISTRY_STORAGE": "s3",
        "REGISTRY_STORAGE_S3_REGIONENDPOINT": s3["endpoint"],
        "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
        "REGISTRY_STORAGE_S3_SECURE": "false",
        "REGISTRY_STORAGE_S3_BUCKET": s3["bucket"],
        "REGISTRY_STORAGE_S3_REGION": s3["region"],
        "REGISTRY_STORAGE_S3_ACCESSKEY": Path(s3["access_key_file"]).read_text(),
        "REGISTRY_STORAGE_S3_SECRETKEY": Path(s3["secret_key_file"]).read_text(),
        "REGISTRY_HTTP_SECRET": http_secret,  # the same on every instance behind one name
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def list_bucket(s3: dict[str, Any], secret_key: str | None = None) -> tuple[int, list[str]]:
    """ListObjectsV2 over S3's HTTP API from this machine, signed (SigV4) with the lab's keys
    (`secret_key` replaces the lab's secret); the keys reach curl on its stdin."""
    access = Path(s3["access_key_file"]).read_text()
    secret = Path(s3["secret_key_file"]).read_text() if secret_key is None else secret_key
    url = f"{s3['endpoint']}/{s3['bucket']}?list-type=2&max-keys=1000"
    proc = subprocess.run(["curl", "-s", "--noproxy", "*", "--max-time", "10", "-K", "-", "--aws-sigv4",
                           f"aws:amz:{s3['region']}:s3", "-w", "\n%{http_code}", url],
                          input=f'user = "{access}:{secret}"\n', capture_output=True, text=True, check=True)
    body, _, code = proc.stdout.rpartition("\n")
    return int(code), re.findall(r"<Key>([^<]+)</Key>", body)


def blob_key(digest: str) -> str:
    hexa = digest.removeprefix("sha256:")
    return f"docker/registry/v2/blobs/sha256/{hexa[:2]}/{hexa}/data"


def blob_sha256(lab: Lab, host: str, digest: str) -> str:
    """The digest of the blob as the registry on `host` serves it (following its redirect into the
    store); "" when it serves none."""
    proc = lab.ssh(host, 'b=$(mktemp) && curl -sfL --max-time 10 -o "$b" '
                         f'http://localhost:5000/v2/library/busybox/blobs/{digest} && sha256sum "$b"; rc=$?; rm -f "$b"; exit $rc',
                   check=False)
    return "sha256:" + proc.stdout.split()[0] if proc.returncode == 0 else ""


def test_replicas_and_an_s3_store_serve_one_image_from_the_bucket() -> None:
    lab = start_lab(1, replicas=1, s3=True)
    net_hosts = list(labmod.lab_subnet().hosts())
    want = {name: str(net_hosts[9 + i]) for i, name in enumerate(["master", "node1", "replica1", "s3a", "s3b"])}
    assert lab.hosts == want
    status = [line.split()[:3] for line in nodecfg_lab("status").stdout.splitlines()[:-1]]
    assert status == [[name, address, "running"] for name, address in want.items()]

    data = lab.inventory_data()
    assert data["registry"]["replicas"] == [{"name": "replica1", "address": want["replica1"]}]
    s3 = data["registry"]["storage"]["s3"]
    assert {k: v for k, v in s3.items() if not k.endswith("_file")} == {
        "endpoint": f"http://{want['s3b']}:8333", "bucket": "registry", "region": "us-east-1"}
    for key in ("access_key_file", "secret_key_file"):
        path = Path(s3[key])
        assert path.parent == labmod.lab_paths().state and path.stat().st_mode & 0o777 == 0o600
        assert path.read_text().strip() == path.read_text() != ""

    # the store refuses anyone but the lab's keys; the bucket is there and empty
    assert list_bucket(s3) == (200, [])
    assert list_bucket(s3, secret_key="wrong")[0] == 403
    anonymous = subprocess.run(["curl", "-s", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}",
                                f"{s3['endpoint']}/registry"], capture_output=True, text=True, check=True)
    assert anonymous.stdout == "403"

    env = registry_env(s3, secrets.token_hex(16))
    for host in ("master", "replica1"):
        lab.load_images(host, "registry:2", *(["busybox:1.36"] if host == "master" else []))
        lab.ssh(host, "umask 077 && cat > /root/s3reg.env", stdin=env)
        lab.ssh(host, RUN_REGISTRY)

    pushed = lab.ssh("master", f"docker tag busybox:1.36 {IMAGE} && docker push {IMAGE}").stdout
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
    assert digest, pushed
    manifest = json.loads(lab.ssh("master", f"curl -sf -H 'Accept: {MANIFEST_V2}' "
                                            "http://localhost:5000/v2/library/busybox/manifests/1.36").stdout)
    blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]

    # every blob and the manifest in the bucket; nothing on either host's disk
    code, keys = list_bucket(s3)
    assert code == 200
    assert {blob_key(d) for d in [digest.group(1), *blobs]} <= set(keys), keys
    assert any(k.endswith("/_manifests/tags/1.36/current/link") for k in keys), keys
    for host in ("master", "replica1"):
        assert lab.ssh(host, "find /var/lib/registry -mindepth 1 | wc -l").stdout.strip() == "0"

    # the replica's registry, which saw no push, serves the same manifest and blobs
    headers = lab.ssh("replica1", f"curl -sfI -H 'Accept: {MANIFEST_V2}' "
                                  "http://localhost:5000/v2/library/busybox/manifests/1.36").stdout
    assert f"docker-content-digest: {digest.group(1)}" in headers.lower(), headers
    for d in blobs:
        assert blob_sha256(lab, "replica1", d) == d
    pulled = lab.ssh("replica1", f"docker pull -q {IMAGE} && docker image inspect --format '{{{{.Id}}}}' {IMAGE}")
    assert pulled.stdout.split()[-1] == manifest["config"]["digest"]

    # the store's hosts stopped and started again: SeaweedFS comes back with the data
    with ThreadPoolExecutor() as pool:
        list(pool.map(labmod.stop_node, ("s3a", "s3b")))
    for name in ("s3a", "s3b"):
        labmod.start_node(name)
    deadline = time.monotonic() + 60
    while blob_sha256(lab, "replica1", blobs[-1]) != blobs[-1]:
        assert time.monotonic() < deadline, "the registry on replica1 did not serve the blob again in 60 s"
        time.sleep(0.5)
    assert {blob_key(d) for d in blobs} <= set(list_bucket(s3)[1])
    for name in ("s3a", "s3b"):
        units = "seaweedfs-master seaweedfs-volume" if name == "s3a" else "seaweedfs-volume seaweedfs-filer"
        assert lab.ssh(name, f"systemctl is-active {units}").stdout.split() == ["active", "active"]


def test_lab_without_replicas_or_s3_starts_nothing_new() -> None:
    """The default lab is what it always was: master .10, node<i> .(10 + i); no registry.replicas,
    no registry.storage in the inventory."""
    lab = start_lab(2)
    net_hosts = list(labmod.lab_subnet().hosts())
    assert lab.hosts == {"master": str(net_hosts[9]), "node1": str(net_hosts[10]), "node2": str(net_hosts[11])}
    assert [n.name for n in labmod.lab_status()] == ["master", "node1", "node2"]
    registry = lab.inventory_data()["registry"]
    assert "replicas" not in registry and "storage" not in registry
