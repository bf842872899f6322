"""Running the fleet: a master and N nodes, each a container running /sbin/init (systemd) with sshd,
docker.io and containerd from Debian's packages, on a private, internal docker network with fixed
addresses (NODECFG_LAB_SUBNET, see `settings`), reachable as root with a key the lab generates.
`up` writes a nodecfg inventory for the fleet, so every nodecfg command can run against it.

Optional, and nothing of them runs unless asked: K registry replicas (`--replicas K`: hosts
replica1..replicaK, the master's flavor, nothing running on them but what every host runs; the
inventory lists them under `registry.replicas`) and an S3 store for the registry (`--s3`: SeaweedFS
on hosts s3a and s3b, see `s3store`; the inventory names it under `registry.storage.s3`).

A lab host is a full systemd host, so the containers are as privileged as this machine's dockerd
allows (`--privileged` fails here: CAP_SYS_RESOURCE is not available): every capability but
SYS_RESOURCE, seccomp and apparmor unconfined, the host's cgroup namespace with /sys/fs/cgroup
read-only; and `up` raises shared kernel limits under /proc/sys for many hosts. Hence a dev tool of
its own, never part of nodecfg.

Every flavor gets /var/lib/docker, /var/lib/containerd and /var/lib/containers as tmpfs (no
overlay on overlay). `--minimal` nodes have neither curl nor wget (purged after boot).
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nodecfg_lab import s3store
from nodecfg_lab.errors import LabError, LabUsageError
from nodecfg_lab.flavors import DEFAULT_FLAVOR, FLAVORS, MASTER_FLAVOR, assign_flavors, node_image
from nodecfg_lab.images import TEST_IMAGES, ensure_node_image, ensure_operator_images
from nodecfg_lab.settings import (
    LABEL,
    LabPaths,
    Say,
    client,
    container_name,
    lab_name,
    lab_paths,
    lab_subnet,
    mine,
    noop,
)

if TYPE_CHECKING:
    import docker

MASTER_OFFSET = 10  # the master is the subnet's 10th host address; every other host follows it
Role = Literal["master", "node", "replica", "s3"]
_ROLE_ORDER: dict[Role, int] = {"master": 0, "node": 1, "replica": 2, "s3": 3}


def role_of(name: str) -> Role:
    """A lab host's role, from its name (master, node<i>, replica<k>, s3a/s3b)."""
    if name == "master":
        return "master"
    if name in s3store.S3_HOSTS:
        return "s3"
    return "replica" if name.startswith("replica") else "node"


@dataclass(frozen=True)
class LabNode:
    name: str
    container: str
    address: str
    state: str  # docker's container state: running, exited, ...
    flavor: str = DEFAULT_FLAVOR
    minimal: bool = False

    @property
    def role(self) -> Role:
        return role_of(self.name)


def _containers(engine: docker.DockerClient) -> list[Any]:
    return engine.containers.list(all=True, filters=mine())


def host_names(count: int, replicas: int = 0, s3: bool = False) -> list[str]:
    """Every lab host in address order: master, node1..N, replica1..K, then s3a, s3b."""
    return ["master", *(f"node{i + 1}" for i in range(count)), *(f"replica{k + 1}" for k in range(replicas)),
            *(s3store.S3_HOSTS if s3 else ())]


def plan_addresses(count: int, replicas: int = 0, s3: bool = False) -> dict[str, str]:
    """Host name -> address (see `settings` for the layout), in address order."""
    net = lab_subnet()
    names = host_names(count, replicas, s3)
    hosts = list(net.hosts())
    if MASTER_OFFSET - 1 + len(names) > len(hosts):
        raise LabError(f"subnet {net} is too small for {len(names)} lab hosts")
    return {name: str(hosts[MASTER_OFFSET - 1 + i]) for i, name in enumerate(names)}


def _ensure_key(paths: LabPaths) -> None:
    paths.state.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not paths.key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nodecfg-lab",
                        "-f", str(paths.key)], check=True)
    paths.key.chmod(0o600)
    paths.resolv_conf.write_text("# nodecfg lab: offline nodes, no resolver\nnameserver 127.0.0.1\n"
                                 "options timeout:1 attempts:1\n")
    paths.resolv_conf.chmod(0o644)


def _flavor_note(name: str, flavors: Mapping[str, str], minimal: Collection[str]) -> str:
    words = [w for w in (flavors.get(name), "minimal" if name in minimal else None) if w]
    return f"   # flavor: {', '.join(words)}" if words else ""


def _storage_lines(store: s3store.S3Store) -> list[str]:
    return ["  storage:", "    s3:", f"      endpoint: {store.endpoint}", f"      bucket: {store.bucket}",
            f"      region: {store.region}", f"      access_key_file: {store.access_key_file}",
            f"      secret_key_file: {store.secret_key_file}"]


def inventory_text(paths: LabPaths, master: str, nodes: list[tuple[str, str]], *,
                   flavors: Mapping[str, str] | None = None, minimal: Collection[str] = (),
                   replicas: Sequence[tuple[str, str]] = (), s3: s3store.S3Store | None = None) -> str:
    """The lab's nodecfg inventory; `flavors` (host name -> flavor) and `minimal` only add comments.
    `registry.replicas` and `registry.storage` are written only when there are replicas, an S3 store."""
    flavors = flavors or {}
    lines = [
        "# Written by `nodecfg-lab up`: the local lab fleet. Regenerated on every `nodecfg-lab up`.",
        "ssh:",
        "  user: root",
        f"  key: {paths.key}",
        f"  known_hosts: {paths.known_hosts}   # the lab's own; reset on every lab up",
        "  connect_timeout: 5",
        "registry:",
        "  port: 5000",
        "  mirrors: [docker.io, registry.k8s.io, quay.io]",
        *(["  replicas:"] if replicas else []),
        *(f"    - {{name: {name}, address: {addr}}}" + _flavor_note(name, flavors, minimal)
          for name, addr in replicas),
        *(_storage_lines(s3) if s3 else []),
        "images:",
        *(f"  - {ref}" for ref in TEST_IMAGES),
        "master:",
        "  name: master" + _flavor_note("master", flavors, minimal),
        f"  address: {master}",
        "nodes:",
        *(f"  - {{name: {name}, address: {addr}}}" + _flavor_note(name, flavors, minimal)
          for name, addr in nodes),
    ]
    return "\n".join(lines) + "\n"


def _run_node(engine: docker.DockerClient, name: str, address: str, paths: LabPaths, *,
              flavor: str = DEFAULT_FLAVOR, minimal: bool = False, files: bytes | None = None,
              read_only: Mapping[str, str] | None = None) -> None:
    """Create and start one lab host; `files`, a tar, is unpacked at / before it boots; `read_only`
    (this machine's file -> the host's path) is mounted read-only."""
    mounts = {
        "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
        str(paths.key) + ".pub": {"bind": "/root/.ssh/authorized_keys", "mode": "ro"},
        # names resolve nowhere, at once: docker's embedded DNS would forward them to this
        # machine's resolver (traffic leaving the lab) and time out after ~20 s per lookup
        # (dockerd looks up registry-1.docker.io even when a mirror serves the pull)
        str(paths.resolv_conf): {"bind": "/etc/resolv.conf", "mode": "ro"},
        **{src: {"bind": dst, "mode": "ro"} for src, dst in (read_only or {}).items()},
    }
    labels = {LABEL: lab_name(), f"{LABEL}.name": name, f"{LABEL}.flavor": flavor}
    if minimal:
        labels[f"{LABEL}.minimal"] = "1"
    created = engine.api.create_container(
        node_image(flavor), name=container_name(name), hostname=name, labels=labels,
        environment={"container": "docker"}, stop_signal="SIGRTMIN+3",
        host_config=engine.api.create_host_config(
            cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            # the runtimes' state and the journal live in memory: on real fleets every node has a
            # disk of its own, here 40 nodes would queue on one (iowait, not CPU, bounded a
            # 40-node smoke-test); nested overlayfs works on tmpfs (podman refuses overlay on
            # overlay too: /var/lib/containers, harmless where podman is absent)
            tmpfs={"/run": "", "/run/lock": "", "/var/lib/docker": "exec", "/var/lib/containerd": "exec",
                   "/var/lib/containers": "exec", "/var/log/journal": ""},
            binds=mounts, network_mode=lab_name(),
            cgroupns="host"),
        networking_config=engine.api.create_networking_config(
            {lab_name(): engine.api.create_endpoint_config(ipv4_address=address)}),
    )
    if files is not None:
        engine.api.put_archive(created["Id"], "/", files)
    engine.api.start(created["Id"])


# a minimal node: no HTTP client besides what the runtimes bring (python3 and bash stay);
# purged like an admin would, so dpkg agrees with the file system
_STRIP_FETCHERS = ("dpkg --purge curl wget >/tmp/nodecfg-lab-purge.log 2>&1 || "
                   "dpkg --purge --force-depends curl wget >>/tmp/nodecfg-lab-purge.log 2>&1; "
                   "for b in curl wget; do if command -v $b >/dev/null; then echo \"$b is still there\"; "
                   "exit 1; fi; done")


def _strip_fetchers(engine: docker.DockerClient, name: str) -> None:
    code, out = engine.containers.get(container_name(name)).exec_run(["sh", "-c", _STRIP_FETCHERS])
    if code != 0:
        raise LabError(f"{name}: could not remove curl and wget: {out.decode(errors='replace').strip()}")


def wait_for_ssh(address: str, deadline: float) -> None:
    """Until sshd on `address` sends its banner (a lab host booting, or an sshd reloaded)."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=1) as sock:
                if sock.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise LabError(f"{address}: sshd did not come up")


# on a node: until docker and containerd are both active, at most $1 seconds; then their states
_AWAIT_RUNTIMES = ('end=$(($(date +%s) + $1)); until systemctl is-active -q docker containerd; do '
                   'if [ "$(date +%s)" -ge "$end" ]; then systemctl is-active docker containerd; exit 1; fi; '
                   'sleep 0.3; done')


def _wait_for_runtimes(paths: LabPaths, hosts: list[tuple[str, str]], timeout: float = 180) -> None:
    """Every node answers over SSH with docker and containerd active (one deadline for all:
    the hosts boot in parallel; containerd 2 and docker 28 take a few seconds more). The OpenSSH
    client logs in with the lab's key, learning each host's key into the lab's known_hosts, and
    waits on the node, one connection per host unless a login fails while the host boots."""
    deadline = time.monotonic() + timeout
    for name, address in hosts:
        wait_for_ssh(address, deadline)
        while True:
            left = max(1, int(deadline - time.monotonic()))
            ssh = ["ssh", "-i", str(paths.key), "-o", f"UserKnownHostsFile={paths.known_hosts}",
                   "-o", "StrictHostKeyChecking=accept-new", "-o", "HashKnownHosts=no", "-o", "BatchMode=yes",
                   "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", f"root@{address}",
                   shlex.join(["sh", "-c", _AWAIT_RUNTIMES, "nodecfg-lab", str(left)])]
            try:
                proc = subprocess.run(ssh, capture_output=True, text=True, check=False, timeout=left + 10)
            except subprocess.TimeoutExpired:
                said = "no answer"
            else:
                if proc.returncode == 0:
                    break
                said = " ".join(proc.stdout.split()) or proc.stderr.strip()
            if time.monotonic() > deadline:
                raise LabError(f"{name}: docker/containerd not active after {timeout:.0f} s: {said}")
            time.sleep(0.5)


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


def check_minimal(minimal: Collection[str], hosts: Sequence[str]) -> None:
    unknown = [n for n in minimal if n not in hosts]
    if unknown:
        raise LabUsageError(f"up: --minimal names no lab host: {', '.join(unknown)} "
                            f"(the hosts are {', '.join(hosts)})")


def lab_up(count: int, say: Say = noop, *, pull: bool = False, rebuild: bool = False,
           flavors: Sequence[str] = (DEFAULT_FLAVOR,), minimal: Collection[str] = (),
           replicas: int = 0, s3: bool = False) -> Path:
    """Start (or restart) the lab with a master and `count` nodes; returns the inventory path.

    node1, node2, ... take `flavors` in turn; `minimal` names hosts that get neither curl nor
    wget. Only the flavors in use are built. The master is always MASTER_FLAVOR: it runs the
    registry container, and docker 28 cannot start a bridge-networked container inside a lab host
    (it fails to disable IPv6 on the container's interface: /proc/sys is read-only here). So are
    the `replicas` (replica1..K) and, with `s3`, the S3 store's hosts."""
    from docker.types import IPAMConfig, IPAMPool

    if count < 1:
        raise LabUsageError("up: --nodes must be at least 1")
    if replicas < 0:
        raise LabUsageError("up: --replicas must not be negative")
    node_flavors = assign_flavors(count, flavors)
    names = host_names(count, replicas, s3)
    plan = {name: MASTER_FLAVOR for name in names} | {f"node{i + 1}": f for i, f in enumerate(node_flavors)}
    check_minimal(minimal, names)
    weed = s3store.weed_binary() if s3 else None
    paths = lab_paths()
    engine = client()
    # bases before the flavors made from them, so a --rebuild derives from the fresh base
    for flavor in sorted(dict.fromkeys(plan.values()), key=lambda f: FLAVORS[f].base is not None):
        ensure_node_image(paths, say, rebuild=rebuild, flavor=flavor)
    ensure_operator_images(say, pull=pull)
    _ensure_key(paths)
    _raise_kernel_limits(len(names), say)
    if _containers(engine):
        say("removing the previous lab")
        lab_down(say=noop)
    net = lab_subnet()
    pool = IPAMPool(subnet=str(net), gateway=str(next(net.hosts())))
    # internal: the nodes reach each other and this machine, never the outside world
    engine.networks.create(lab_name(), driver="bridge", internal=True, labels={LABEL: lab_name()},
                           ipam=IPAMConfig(pool_configs=[pool]))
    addresses = plan_addresses(count, replicas, s3)
    files = {}
    if weed is not None:
        keys = s3store.ensure_keys(paths)
        files = {name: s3store.host_archive(name, addresses, keys) for name in s3store.S3_HOSTS}
    say(f"starting {len(addresses)} lab hosts on {net}")
    for name, address in addresses.items():
        _run_node(engine, name, address, paths, flavor=plan[name], minimal=name in minimal, files=files.get(name),
                  read_only={str(weed): s3store.WEED} if weed is not None and name in files else None)
    if paths.known_hosts.exists():
        paths.known_hosts.unlink()
    _wait_for_runtimes(paths, list(addresses.items()))
    store = None
    if s3:
        say("waiting for the S3 store (SeaweedFS on s3a, s3b)")
        s3store.await_store(engine, addresses)
        store = s3store.store(paths, addresses)
    for name in plan:
        if name in minimal:
            _strip_fetchers(engine, name)
    by_role = {role: [(n, a) for n, a in addresses.items() if role_of(n) == role] for role in _ROLE_ORDER}
    paths.inventory.write_text(inventory_text(paths, addresses["master"], by_role["node"], flavors=plan,
                                              minimal=minimal, replicas=by_role["replica"], s3=store))
    return paths.inventory


def lab_down(say: Say = noop) -> int:
    """Remove every lab container, its volumes and the lab network; returns how many hosts."""
    engine = client()
    containers = _containers(engine)
    for c in containers:
        say(f"removing {c.name}")
        c.remove(force=True, v=True)
    for vol in engine.volumes.list(filters=mine()):
        vol.remove(force=True)
    for net in engine.networks.list(names=[lab_name()]):
        net.remove()
    paths = lab_paths()
    if paths.known_hosts.exists():
        paths.known_hosts.unlink()
    return len(containers)


def lab_status() -> list[LabNode]:
    engine = client()
    out = []
    for c in _containers(engine):
        nets = c.attrs.get("NetworkSettings", {}).get("Networks", {})
        address = nets.get(lab_name(), {}).get("IPAddress", "") or "-"
        out.append(LabNode(c.labels.get(f"{LABEL}.name", c.name), c.name, address, c.status,
                           c.labels.get(f"{LABEL}.flavor", DEFAULT_FLAVOR),
                           c.labels.get(f"{LABEL}.minimal") == "1"))
    return sorted(out, key=status_order)


def status_order(node: LabNode) -> tuple[int, int, str]:
    """Address order: master, node1..N (by number), replica1..K, s3a, s3b."""
    digits = node.name.lstrip("abcdefghijklmnopqrstuvwxyz")
    return _ROLE_ORDER[node.role], int(digits) if digits.isdigit() else 0, node.name


def lab_flavors() -> dict[str, str]:
    """Host name -> flavor of the running lab (from the containers' labels)."""
    return {n.name: n.flavor for n in lab_status()}


def stop_node(name: str) -> None:
    """Stop one lab host (to make it unreachable in tests)."""
    client().containers.get(container_name(name)).stop(timeout=5)


def start_node(name: str) -> None:
    client().containers.get(container_name(name)).start()
