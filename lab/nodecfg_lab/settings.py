"""Where a lab lives, as the environment says (the contract other labs, CI and the e2e suite rely on):

- NODECFG_LAB_NAME (default `nodecfg-lab`): the lab's docker network, its containers' prefix
  (`<name>-master`, `<name>-node1`, `<name>-replica1`, `<name>-s3a`, ...) and the value of their
  `nodecfg.lab` label. Labs with other names, each with its own NODECFG_LAB_SUBNET and
  NODECFG_LAB_DIR, run beside it.
- NODECFG_LAB_SUBNET (default 172.29.77.0/24): the network's addresses. With N nodes and K
  replicas: the master is the 10th host address, node<i> the (10 + i)th, replica<k> the
  (10 + N + k)th, then the S3 hosts (`--s3`) s3a and s3b, the (11 + N + K)th and (12 + N + K)th.
  Without replicas or S3 the nodes' addresses are what they always were (x.x.x.10, .11, ...).
- NODECFG_LAB_DIR (default ~/.local/share/nodecfg/lab): the lab's key, known_hosts, resolv.conf,
  inventory.yaml and, with `--s3`, the S3 store's keys (s3-access-key, s3-secret-key; 0600).
- NODECFG_CACHE_DIR (default ~/.cache/nodecfg): the rootfs tarballs, `rootfs-<flavor>.tar`,
  shared by every lab on the machine.
- NODECFG_LAB_MIRROR (default http://deb.debian.org/debian): the Debian mirror debootstrap and apt use.

Also the one Docker engine client every part of the lab uses.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nodecfg_lab.errors import LabError

if TYPE_CHECKING:
    import docker

LABEL = "nodecfg.lab"
Say = Callable[[str], None]


def noop(_: str) -> None:
    return None


def lab_name() -> str:
    """This lab's name: its network, its containers' prefix and its label value."""
    return os.environ.get("NODECFG_LAB_NAME") or "nodecfg-lab"


def container_name(host: str) -> str:
    return f"{lab_name()}-{host}"


def mine() -> dict[str, str]:
    """Docker filter for this lab's objects (containers, volumes, network)."""
    return {"label": f"{LABEL}={lab_name()}"}


@dataclass(frozen=True)
class LabPaths:
    state: Path
    cache: Path

    @property
    def resolv_conf(self) -> Path:
        return self.state / "resolv.conf"

    @property
    def key(self) -> Path:
        return self.state / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.state / "inventory.yaml"

    @property
    def s3_access_key(self) -> Path:
        return self.state / "s3-access-key"

    @property
    def s3_secret_key(self) -> Path:
        return self.state / "s3-secret-key"

    def rootfs(self, flavor: str = "bookworm") -> Path:
        return self.cache / f"rootfs-{flavor}.tar"


def lab_paths() -> LabPaths:
    state = os.environ.get("NODECFG_LAB_DIR") or str(Path("~/.local/share/nodecfg/lab").expanduser())
    cache = os.environ.get("NODECFG_CACHE_DIR") or str(Path("~/.cache/nodecfg").expanduser())
    return LabPaths(Path(state), Path(cache))


def lab_subnet() -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(os.environ.get("NODECFG_LAB_SUBNET", "172.29.77.0/24"))


def mirror() -> str:
    return os.environ.get("NODECFG_LAB_MIRROR", "http://deb.debian.org/debian")


def client() -> docker.DockerClient:
    import docker

    try:
        engine = docker.from_env(timeout=300)
        engine.ping()
    except Exception as exc:  # noqa: BLE001 -- the SDK raises several unrelated types for "no engine"
        raise LabError(f"no Docker engine answers on this machine ({exc}); start dockerd first") from None
    return engine


def has_image(engine: docker.DockerClient, ref: str) -> bool:
    import docker

    try:
        engine.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True
