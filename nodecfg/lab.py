"""The local lab: a throwaway fleet of real Debian systemd hosts on this machine's Docker engine.

Each node is a container running /sbin/init (systemd) with sshd, docker.io and containerd from
Debian's packages, on a private docker network with fixed addresses, reachable with a key the lab
generates. `lab up` writes an inventory for the fleet, so every other command can run against it.

Nothing is pulled: the node image is built with debootstrap (the rootfs tarball is cached, so a
second build takes seconds) and the operator-side images (`registry:2` and small test images named
like upstream ones) are built from Debian's docker-registry and busybox-static binaries unless they
exist locally already (or `--pull` finds them in a reachable registry).
"""

from __future__ import annotations

import io
import ipaddress
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodecfg.errors import LabError

if TYPE_CHECKING:
    import docker

LABEL = "nodecfg.lab"
NETWORK = "nodecfg-lab"
NODE_IMAGE = "nodecfg-lab-node:bookworm"
SUITE = "bookworm"
PACKAGES = ("systemd,systemd-sysv,openssh-server,docker.io,containerd,iproute2,ca-certificates,"
            "curl,python3,sudo")
TEST_IMAGES = ("docker.io/library/busybox:1.36", "registry.k8s.io/pause:3.9",
               "quay.io/prometheus/busybox:latest")
REGISTRY_IMAGE = "registry:2"
MASTER_OFFSET, NODE_OFFSET = 10, 11
Say = Callable[[str], None]


def _noop(_: str) -> None:
    return None


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
    def rootfs(self) -> Path:
        return self.cache / f"rootfs-{SUITE}.tar"


def lab_paths() -> LabPaths:
    state = os.environ.get("NODECFG_LAB_DIR") or str(Path("~/.local/share/nodecfg/lab").expanduser())
    cache = os.environ.get("NODECFG_CACHE_DIR") or str(Path("~/.cache/nodecfg").expanduser())
    return LabPaths(Path(state), Path(cache))


def lab_subnet() -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(os.environ.get("NODECFG_LAB_SUBNET", "172.29.77.0/24"))


@dataclass(frozen=True)
class LabNode:
    name: str
    container: str
    address: str
    state: str  # docker's container state: running, exited, ...


def _client() -> docker.DockerClient:
    import docker

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:  # noqa: BLE001 -- the SDK raises several unrelated types for "no engine"
        raise LabError(f"no Docker engine answers on this machine ({exc}); start dockerd first") from None
    return client


# ---------------------------------------------------------------------------------------------
# images


def _rootfs_customisations() -> dict[str, str]:
    """Files written into the debootstrap tree: sshd for key-only root login, per-node host keys."""
    return {
        "etc/ssh/sshd_config.d/nodecfg-lab.conf": (
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
            "MaxStartups 200:30:400\n"
        ),
        # host keys are made at first boot, so every node has its own
        "etc/systemd/system/lab-hostkeys.service": (
            "[Unit]\nDescription=Generate SSH host keys\nBefore=ssh.service\n"
            "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n\n"
            "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        ),
    }


def build_rootfs(paths: LabPaths, say: Say = _noop) -> Path:
    """debootstrap a node rootfs and cache it as a tarball; returns the tarball."""
    if paths.rootfs.exists():
        return paths.rootfs
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = os.environ.get("NODECFG_LAB_MIRROR", "http://deb.debian.org/debian")
    paths.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nodecfg-rootfs-", dir=paths.cache) as tmp:
        root = Path(tmp) / "root"
        say(f"building the node rootfs with debootstrap ({SUITE}, about a minute)")
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(root), mirror],
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise LabError(f"debootstrap failed: {' | '.join(tail)}")
        for rel, text in _rootfs_customisations().items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / "lab-hostkeys.service").symlink_to("/etc/systemd/system/lab-hostkeys.service")
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
        for unit in ("getty@tty1.service", "systemd-udevd.service", "systemd-firstboot.service"):
            mask = root / "etc/systemd/system" / unit
            if not mask.exists():
                mask.symlink_to("/dev/null")
        (root / "etc/machine-id").write_text("")
        partial = paths.rootfs.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.rename(paths.rootfs)
    return paths.rootfs


def ensure_node_image(paths: LabPaths, say: Say = _noop, *, rebuild: bool = False) -> str:
    client = _client()
    if not rebuild and _has_image(client, NODE_IMAGE):
        return NODE_IMAGE
    if rebuild and paths.rootfs.exists():
        paths.rootfs.unlink()
    tarball = build_rootfs(paths, say)
    say(f"importing {NODE_IMAGE}")
    changes = ['CMD ["/sbin/init"]', "ENV container=docker"]
    client.api.import_image_from_file(str(tarball), repository=NODE_IMAGE.split(":", maxsplit=1)[0],
                                      tag=NODE_IMAGE.split(":")[1], changes=changes)
    return NODE_IMAGE


def _tar_add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o644,
             link: str | None = None, directory: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    if directory:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    elif link is not None:
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, link, 0o777
        tar.addfile(info)
    else:
        assert data is not None
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))


REGISTRY_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def _shared_libs(binary: str) -> list[str]:
    """Absolute paths of the shared libraries `binary` needs (from ldd)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/") and Path(p).exists():
                libs.append(p)
                break
    return libs


def registry_image_tar() -> bytes:
    """A rootfs for `registry:2` from Debian's docker-registry (the real distribution registry)."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).exists():
        raise LabError("docker-registry is not installed (apt-get install docker-registry)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "etc/docker", "etc/docker/registry", "var", "var/lib",
                  "var/lib/registry", "tmp"):
            _tar_add(tar, d, directory=True)
        _tar_add(tar, "bin/registry", data=Path(binary).read_bytes(), mode=0o755)
        for lib in _shared_libs(binary):
            parts = Path(lib).parts[1:]
            for i in range(1, len(parts)):
                _tar_add(tar, "/".join(parts[:i]), directory=True)
            _tar_add(tar, "/".join(parts), data=Path(lib).resolve().read_bytes(), mode=0o755)
        _tar_add(tar, "etc/docker/registry/config.yml", data=REGISTRY_CONFIG.encode())
    return buf.getvalue()


def busybox_image_tar() -> bytes:
    """A tiny rootfs: busybox-static and its applet links."""
    binary = "/bin/busybox"
    if not Path(binary).exists():
        raise LabError("busybox-static is not installed (apt-get install busybox-static)")
    applets = subprocess.run([binary, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "tmp", "etc"):
            _tar_add(tar, d, directory=True)
        _tar_add(tar, "bin/busybox", data=Path(binary).read_bytes(), mode=0o755)
        for applet in applets:
            if applet != "bin/busybox" and applet.split("/")[0] in ("bin", "sbin", "usr"):
                _tar_add(tar, applet, link="/bin/busybox")
        _tar_add(tar, "etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
    return buf.getvalue()


def _has_image(client: docker.DockerClient, ref: str) -> bool:
    import docker

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_operator_images(say: Say = _noop, *, pull: bool = False) -> list[str]:
    """Make sure this machine's engine has registry:2 and the lab's test images."""
    client = _client()
    made = []
    wanted: list[tuple[str, Callable[[], bytes], list[str]]] = [
        (REGISTRY_IMAGE, registry_image_tar,
         ['ENTRYPOINT ["/bin/registry"]', 'CMD ["serve", "/etc/docker/registry/config.yml"]',
          "EXPOSE 5000", 'VOLUME ["/var/lib/registry"]']),
        *((ref, busybox_image_tar,
           ['CMD ["/bin/sleep", "3600"]'] if "pause" in ref else ['CMD ["/bin/sh"]'])
          for ref in TEST_IMAGES),
    ]
    for ref, build, changes in wanted:
        if _has_image(client, ref):
            continue
        if pull:
            try:
                client.images.pull(ref)
                made.append(ref)
                continue
            except Exception:  # noqa: BLE001 -- no registry reachable: build it instead
                say(f"could not pull {ref}; building it")
        say(f"building {ref}")
        repo, tag = ref.rsplit(":", 1)
        client.api.import_image_from_data(build(), repository=repo, tag=tag, changes=changes)
        made.append(ref)
    return made


# ---------------------------------------------------------------------------------------------
# fleet


def _containers(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(all=True, filters={"label": LABEL})


def _addresses(count: int) -> tuple[str, list[str]]:
    net = lab_subnet()
    hosts = list(net.hosts())
    if NODE_OFFSET + count > len(hosts):
        raise LabError(f"subnet {net} is too small for {count} nodes")
    return str(hosts[MASTER_OFFSET - 1]), [str(hosts[NODE_OFFSET - 1 + i]) for i in range(count)]


def _ensure_key(paths: LabPaths) -> None:
    paths.state.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not paths.key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nodecfg-lab",
                        "-f", str(paths.key)], check=True)
    paths.key.chmod(0o600)
    paths.resolv_conf.write_text("# nodecfg lab: offline nodes, no resolver\nnameserver 127.0.0.1\n"
                                 "options timeout:1 attempts:1\n")
    paths.resolv_conf.chmod(0o644)


def inventory_text(paths: LabPaths, master: str, nodes: list[tuple[str, str]]) -> str:
    lines = [
        "# Written by `nodecfg lab up`: the local lab fleet. Regenerated on every `lab up`.",
        "ssh:",
        "  user: root",
        f"  key: {paths.key}",
        f"  known_hosts: {paths.known_hosts}   # the lab's own; reset on every lab up",
        "  connect_timeout: 5",
        "registry:",
        "  port: 5000",
        "  mirrors: [docker.io, registry.k8s.io, quay.io]",
        "images:",
        *(f"  - {ref}" for ref in TEST_IMAGES),
        "master:",
        "  name: master",
        f"  address: {master}",
        "nodes:",
        *(f"  - {{name: {name}, address: {addr}}}" for name, addr in nodes),
    ]
    return "\n".join(lines) + "\n"


def _run_node(client: docker.DockerClient, name: str, address: str, paths: LabPaths) -> None:
    container = f"nodecfg-lab-{name}"
    mounts = {
        "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
        str(paths.key) + ".pub": {"bind": "/root/.ssh/authorized_keys", "mode": "ro"},
        # names resolve nowhere, at once: docker's embedded DNS would forward them to this
        # machine's resolver (traffic leaving the lab) and time out after ~20 s per lookup
        # (dockerd looks up registry-1.docker.io even when a mirror serves the pull)
        str(paths.resolv_conf): {"bind": "/etc/resolv.conf", "mode": "ro"},
    }
    created = client.api.create_container(
        NODE_IMAGE, name=container, hostname=name, labels={LABEL: "1", f"{LABEL}.name": name},
        environment={"container": "docker"}, stop_signal="SIGRTMIN+3",
        host_config=client.api.create_host_config(
            cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            # the runtimes' state and the journal live in memory: on real fleets every node has a
            # disk of its own, here 40 nodes would queue on one (iowait, not CPU, bounded a
            # 40-node smoke-test); nested overlayfs works on tmpfs
            tmpfs={"/run": "", "/run/lock": "", "/var/lib/docker": "exec", "/var/lib/containerd": "exec",
                   "/var/log/journal": ""},
            binds=mounts, network_mode=NETWORK,
            cgroupns="host"),
        networking_config=client.api.create_networking_config(
            {NETWORK: client.api.create_endpoint_config(ipv4_address=address)}),
    )
    client.api.start(created["Id"])


def _wait_for_ssh(address: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=1) as sock:
                if sock.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise LabError(f"{address}: sshd did not come up")


def _wait_for_runtimes(paths: LabPaths, hosts: list[tuple[str, str]], timeout: float = 120) -> None:
    """Every node answers over SSH with docker and containerd active."""
    from nodecfg import ssh
    from nodecfg.inventory import Host, SshSettings

    settings = SshSettings(key=paths.key, known_hosts=paths.known_hosts, connect_timeout=5)
    deadline = time.monotonic() + timeout
    for name, address in hosts:
        _wait_for_ssh(address, deadline)
        host = Host(name=name, address=address, ssh=settings)
        c = ssh.connect(host)
        try:
            while True:
                res = ssh.run(c, "systemctl is-active docker containerd")
                if res.ok:
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"{name}: docker/containerd not active: {res.stdout.split()}")
                time.sleep(0.5)
        finally:
            ssh.close(c)


# per lab host: systemd, sshd, dockerd and containerd each take inotify instances and keyring keys
# from the one kernel they share; Debian's defaults (128 instances, 200 keys) stop at ~25 hosts
_KERNEL_LIMITS = (("fs/inotify/max_user_instances", 16), ("fs/inotify/max_user_watches", 16384),
                  ("kernel/keys/maxkeys", 40), ("kernel/keys/maxbytes", 40 * 25))


def _raise_kernel_limits(hosts: int, say: Say) -> None:
    """Raise the shared kernel limits that many systemd containers exhaust (never lower them)."""
    for name, per_host in _KERNEL_LIMITS:
        path = Path("/proc/sys") / name
        try:
            current = int(path.read_text().split()[0])
        except (OSError, ValueError):
            continue
        wanted = per_host * (hosts + 8)
        if current < wanted:
            try:
                path.write_text(str(wanted))
                say(f"raised {name.replace('/', '.')} from {current} to {wanted} for {hosts} lab hosts")
            except OSError as exc:
                raise LabError(f"{hosts} lab hosts need {name.replace('/', '.')} >= {wanted} "
                               f"(it is {current}; cannot raise it: {exc.strerror})") from None


def lab_up(count: int, say: Say = _noop, *, pull: bool = False, rebuild: bool = False) -> Path:
    """Start (or restart) the lab with a master and `count` nodes; returns the inventory path."""
    from docker.types import IPAMConfig, IPAMPool

    if count < 1:
        raise LabError("--nodes must be at least 1")
    paths = lab_paths()
    client = _client()
    ensure_node_image(paths, say, rebuild=rebuild)
    ensure_operator_images(say, pull=pull)
    _ensure_key(paths)
    _raise_kernel_limits(count + 1, say)
    if _containers(client):
        say("removing the previous lab")
        lab_down(say=_noop)
    net = lab_subnet()
    pool = IPAMPool(subnet=str(net), gateway=str(next(net.hosts())))
    # internal: the nodes reach each other and this machine, never the outside world
    client.networks.create(NETWORK, driver="bridge", internal=True, labels={LABEL: "1"},
                           ipam=IPAMConfig(pool_configs=[pool]))
    master, node_addrs = _addresses(count)
    hosts = [("master", master)] + [(f"node{i + 1}", a) for i, a in enumerate(node_addrs)]
    say(f"starting {len(hosts)} lab hosts on {net}")
    for name, address in hosts:
        _run_node(client, name, address, paths)
    if paths.known_hosts.exists():
        paths.known_hosts.unlink()
    _wait_for_runtimes(paths, hosts)
    paths.inventory.write_text(inventory_text(paths, master, hosts[1:]))
    return paths.inventory


def lab_down(say: Say = _noop) -> int:
    """Remove every lab container, its volumes and the lab network; returns how many hosts."""
    client = _client()
    containers = _containers(client)
    for c in containers:
        say(f"removing {c.name}")
        c.remove(force=True, v=True)
    for vol in client.volumes.list(filters={"label": LABEL}):
        vol.remove(force=True)
    for net in client.networks.list(names=[NETWORK]):
        net.remove()
    paths = lab_paths()
    if paths.known_hosts.exists():
        paths.known_hosts.unlink()
    return len(containers)


def lab_status() -> list[LabNode]:
    client = _client()
    out = []
    for c in _containers(client):
        nets = c.attrs.get("NetworkSettings", {}).get("Networks", {})
        address = nets.get(NETWORK, {}).get("IPAddress", "") or "-"
        out.append(LabNode(c.labels.get(f"{LABEL}.name", c.name), c.name, address, c.status))
    order = {"master": -1}
    return sorted(out, key=lambda n: order.get(n.name, int(n.name[4:]) if n.name[4:].isdigit() else 0))


def stop_node(name: str) -> None:
    """Stop one lab host (to make it unreachable in tests)."""
    _client().containers.get(f"nodecfg-lab-{name}").stop(timeout=5)


def start_node(name: str) -> None:
    _client().containers.get(f"nodecfg-lab-{name}").start()
