"""The local lab: a throwaway fleet of real Debian systemd hosts on this machine's Docker engine.

Each node is a container running /sbin/init (systemd) with sshd, docker.io and containerd from
Debian's packages, on a private docker network with fixed addresses, reachable with a key the lab
generates. `lab up` writes an inventory for the fleet, so every other command can run against it.

Nothing is pulled: the node images are built with debootstrap (each flavor's rootfs tarball is
cached, so a second build takes seconds) and the operator-side images (`registry:2` and small test
images named like upstream ones) are built from Debian's docker-registry and busybox-static binaries
unless they exist locally already (or `--pull` finds them in a reachable registry).

Node flavors (`FLAVORS`; cache `rootfs-<flavor>.tar`, image `nodecfg-lab-node:<flavor>`):

- bookworm: systemd 252, docker.io 20.10, containerd 1.6, runc 1.1.5.
- trixie: systemd 257, docker.io 26.1 (+ the separate docker-cli package), containerd 1.7.
- containerd2: the trixie rootfs plus forky's containerd 2.1, docker.io/docker-cli 28.5 (and
  tini-static) through an apt pin, and trixie's podman 5.4 (forky's needs forky's libc); systemd
  stays trixie's 257 (forky's cannot boot on a cgroup-v1 host), runc trixie's 1.1.15.

/etc/containerd/config.toml on every flavor is the file Debian's containerd package ships, the
same 9 lines on all three: `version = 2`, `[plugins."io.containerd.grpc.v1.cri".cni]` with
bin_dir "/usr/lib/cni" and conf_dir "/etc/cni/net.d", and `[plugins."io.containerd.internal.v1.opt"]`
path "/var/lib/containerd/opt". On containerd2 the upgrade to containerd 2 keeps that version-2
file as it is (containerd 2 migrates it in memory on every start): no `version = 3` file, no
config_path.

Every flavor gets /var/lib/docker, /var/lib/containerd and /var/lib/containers as tmpfs (no
overlay on overlay). `--minimal` nodes have neither curl nor wget (purged after boot).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodecfg.errors import LabError, UsageError

if TYPE_CHECKING:
    import docker

LABEL = "nodecfg.lab"


def lab_name() -> str:
    """This lab's name: its network, its containers' prefix and its label value. Labs with other
    names (NODECFG_LAB_NAME, with their own NODECFG_LAB_SUBNET and NODECFG_LAB_DIR) run beside it."""
    return os.environ.get("NODECFG_LAB_NAME") or "nodecfg-lab"


def _container(name: str) -> str:
    return f"{lab_name()}-{name}"


def _mine() -> dict[str, str]:
    """Docker filter for this lab's objects (containers, volumes, network)."""
    return {"label": f"{LABEL}={lab_name()}"}
NODE_REPO = "nodecfg-lab-node"
DEFAULT_FLAVOR = "bookworm"
NODE_IMAGE = f"{NODE_REPO}:{DEFAULT_FLAVOR}"  # the default flavor's image
PACKAGES = ("systemd", "systemd-sysv", "openssh-server", "docker.io", "containerd", "iproute2",
            "ca-certificates", "curl", "python3", "sudo")
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

    def rootfs(self, flavor: str = "bookworm") -> Path:
        return self.cache / f"rootfs-{flavor}.tar"


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
    flavor: str = DEFAULT_FLAVOR
    minimal: bool = False


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


@dataclass(frozen=True)
class Flavor:
    """One kind of lab node. A flavor without `base` is debootstrapped from `suite` (the common
    PACKAGES plus `packages`); one with a `base` starts from that flavor's rootfs and installs
    `packages` from `suite` in a chroot, pinned above the base (the suite's source is removed
    afterwards). `expect` is checked in the finished rootfs: (package, version prefix)."""

    name: str
    suite: str
    packages: tuple[str, ...] = ()
    base: str | None = None
    description: str = ""
    # derived flavors: the packages apt takes from `suite` (pin 990); everything else stays the base's
    pinned: tuple[str, ...] = ()
    expect: tuple[tuple[str, str], ...] = ()


MASTER_FLAVOR = "bookworm"  # see lab_up
FLAVORS: dict[str, Flavor] = {f.name: f for f in (
    Flavor("bookworm", "bookworm", description="Debian 12: docker 20.10, containerd 1.6",
           expect=(("containerd", "1.6."), ("docker.io", "20.10."), ("systemd", "252"))),
    Flavor("trixie", "trixie", ("docker-cli",), description="Debian 13: docker 26, containerd 1.7",
           expect=(("containerd", "1.7."), ("docker.io", "26."), ("docker-cli", "26."),
                   ("systemd", "257"))),
    # forky's podman (5.8) needs forky's libc: podman stays trixie's (5.4)
    Flavor("containerd2", "forky", ("containerd", "docker.io", "docker-cli", "podman"), base="trixie",
           description="trixie + forky's containerd 2.1 and docker 28; trixie's podman 5.4",
           pinned=("containerd", "docker.io", "docker-cli"),
           expect=(("containerd", "2."), ("docker.io", "28."), ("docker-cli", "28."), ("podman", ""),
                   ("systemd", "257"))),
)}


def node_image(flavor: str) -> str:
    return f"{NODE_REPO}:{flavor}"


def check_flavors(flavors: Sequence[str]) -> None:
    if not flavors:
        raise UsageError("lab up: --flavors needs at least one flavor")
    for name in flavors:
        if name not in FLAVORS:
            raise UsageError(f"lab up: unknown flavor {name!r} (known: {', '.join(FLAVORS)})")


def assign_flavors(count: int, flavors: Sequence[str]) -> list[str]:
    """The flavors of node1..node<count>: the listed ones in turn, wrapping around."""
    check_flavors(flavors)
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    return [flavors[i % len(flavors)] for i in range(count)]


def _mirror() -> str:
    return os.environ.get("NODECFG_LAB_MIRROR", "http://deb.debian.org/debian")


def _run(argv: list[str], what: str, *, timeout: float = 1800) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise LabError(f"{what} failed: {' | '.join(tail)}")
    return proc.stdout


def _customise(root: Path) -> None:
    for rel, text in _rootfs_customisations().items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "lab-hostkeys.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/lab-hostkeys.service")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    # systemd-modules-load: a container loads no kernel modules (trixie's fails without /lib/modules
    # and leaves the node "degraded"; bookworm's cached rootfs predates this mask, its unit passes)
    for unit in ("getty@tty1.service", "systemd-udevd.service", "systemd-firstboot.service",
                 "systemd-modules-load.service"):
        mask = root / "etc/systemd/system" / unit
        if not mask.exists() and not mask.is_symlink():
            mask.symlink_to("/dev/null")
    (root / "etc/machine-id").write_text("")


def package_versions(root: Path, packages: Sequence[str]) -> dict[str, str]:
    """Installed versions in a rootfs (missing packages are left out)."""
    out = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                          "-f", "${Package} ${db:Status-Status} ${Version}\n", *packages],
                         capture_output=True, text=True, check=False).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "installed":
            found[parts[0]] = parts[2]
    return found


def _check_versions(flavor: Flavor, root: Path) -> None:
    have = package_versions(root, [p for p, _ in flavor.expect])
    wrong = [f"{p} {have.get(p, 'missing')} (want {prefix or 'any'}*)" for p, prefix in flavor.expect
             if not have.get(p, "\0").startswith(prefix)]
    if wrong:
        raise LabError(f"the {flavor.name} rootfs has the wrong packages: {', '.join(wrong)}")


def _debootstrap(flavor: Flavor, root: Path, say: Say) -> None:
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed (apt-get install debootstrap)")
    say(f"building the {flavor.name} rootfs with debootstrap ({flavor.suite}, a minute or two)")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES + flavor.packages)}",
          flavor.suite, str(root), _mirror()], "debootstrap")


def _apt_preferences(flavor: Flavor, base_suite: str) -> str:
    return (f"Package: *\nPin: release n={base_suite}\nPin-Priority: 900\n\n"
            f"Package: {' '.join(flavor.pinned)}\nPin: release n={flavor.suite}\nPin-Priority: 990\n")


def _derive(flavor: Flavor, base_tar: Path, root: Path, say: Say) -> None:
    """Unpack the base rootfs and add the flavor's packages from its suite in a chroot."""
    assert flavor.base is not None
    base_suite = FLAVORS[flavor.base].suite
    say(f"building the {flavor.name} rootfs: {flavor.base} + {' '.join(flavor.packages)} from {flavor.suite}")
    root.mkdir()
    _run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(base_tar)], "unpacking the base rootfs")
    source = root / f"etc/apt/sources.list.d/nodecfg-{flavor.suite}.list"
    prefs = root / f"etc/apt/preferences.d/nodecfg-{flavor.suite}"
    policy = root / "usr/sbin/policy-rc.d"
    resolv = root / "etc/resolv.conf"
    saved_resolv = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
    source.write_text(f"deb {_mirror()} {flavor.suite} main\n")
    prefs.write_text(_apt_preferences(flavor, base_suite))
    policy.write_text("#!/bin/sh\nexit 101\n")  # no service starts in the chroot
    policy.chmod(0o755)
    if resolv.is_symlink():
        resolv.unlink()
    shutil.copyfile("/etc/resolv.conf", resolv)
    apt = ["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "apt-get",
           "-q", "-y", "-o", "Acquire::Check-Valid-Until=false"]
    _run(["mount", "--bind", "/proc", str(root / "proc")], "mounting /proc in the chroot")
    try:
        _run([*apt, "update"], f"apt-get update ({flavor.suite})")
        _run([*apt, "install", "--no-install-recommends", *flavor.packages], "apt-get install")
        _run(["chroot", str(root), "apt-get", "clean"], "apt-get clean")
    finally:
        # lazy: detached at once even if busy, so removing the tree never reaches the host's /proc
        subprocess.run(["umount", "--lazy", str(root / "proc")], check=False)
    # nodes are offline: no trace of the extra suite stays behind
    source.unlink()
    prefs.unlink()
    policy.unlink()
    for lists in (root / "var/lib/apt/lists").glob(f"*_dists_{flavor.suite}_*"):
        lists.unlink()
    if saved_resolv is not None:
        resolv.write_bytes(saved_resolv)
    else:
        resolv.unlink()


def build_rootfs(paths: LabPaths, flavor: str = DEFAULT_FLAVOR, say: Say = _noop) -> Path:
    """Build a flavor's node rootfs (and its base's first) and cache it as a tarball; returns it."""
    spec = FLAVORS[flavor]
    tarball = paths.rootfs(flavor)
    if tarball.exists():
        return tarball
    base_tar = build_rootfs(paths, spec.base, say) if spec.base else None
    paths.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"nodecfg-rootfs-{flavor}-", dir=paths.cache) as tmp:
        root = Path(tmp) / "root"
        if base_tar is None:
            _debootstrap(spec, root, say)
        else:
            _derive(spec, base_tar, root, say)
        _customise(root)
        _check_versions(spec, root)
        partial = tarball.with_suffix(".partial")
        _run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], "tar")
        partial.rename(tarball)
    return tarball


def ensure_node_image(paths: LabPaths, say: Say = _noop, *, rebuild: bool = False,
                      flavor: str = DEFAULT_FLAVOR) -> str:
    """The flavor's node image, imported from its (cached or freshly built) rootfs tarball.
    `rebuild` builds this flavor's rootfs again; a derived flavor reuses its base's tarball."""
    import docker

    client = _client()
    image = node_image(flavor)
    old = client.images.get(image).id if _has_image(client, image) else None
    if old and not rebuild:
        return image
    if rebuild and paths.rootfs(flavor).exists():
        paths.rootfs(flavor).unlink()
    tarball = build_rootfs(paths, flavor, say)
    say(f"importing {image}")
    changes = ['CMD ["/sbin/init"]', "ENV container=docker"]
    client.api.import_image_from_file(str(tarball), repository=NODE_REPO, tag=flavor, changes=changes)
    if old and client.images.get(image).id != old:
        with contextlib.suppress(docker.errors.APIError):  # still used by a container: docker keeps it
            client.images.remove(old)
    return image


def built_flavors() -> set[str]:
    """The flavors whose node image this machine's engine has."""
    client = _client()
    return {name for name in FLAVORS if _has_image(client, node_image(name))}


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
    return client.containers.list(all=True, filters=_mine())


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


def _flavor_note(name: str, flavors: Mapping[str, str], minimal: Collection[str]) -> str:
    words = [w for w in (flavors.get(name), "minimal" if name in minimal else None) if w]
    return f"   # flavor: {', '.join(words)}" if words else ""


def inventory_text(paths: LabPaths, master: str, nodes: list[tuple[str, str]], *,
                   flavors: Mapping[str, str] | None = None, minimal: Collection[str] = ()) -> str:
    """The lab's inventory; `flavors` (host name -> flavor) and `minimal` only add comments."""
    flavors = flavors or {}
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
        "  name: master" + _flavor_note("master", flavors, minimal),
        f"  address: {master}",
        "nodes:",
        *(f"  - {{name: {name}, address: {addr}}}" + _flavor_note(name, flavors, minimal)
          for name, addr in nodes),
    ]
    return "\n".join(lines) + "\n"


def _run_node(client: docker.DockerClient, name: str, address: str, paths: LabPaths, *,
              flavor: str = DEFAULT_FLAVOR, minimal: bool = False) -> None:
    container = _container(name)
    mounts = {
        "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
        str(paths.key) + ".pub": {"bind": "/root/.ssh/authorized_keys", "mode": "ro"},
        # names resolve nowhere, at once: docker's embedded DNS would forward them to this
        # machine's resolver (traffic leaving the lab) and time out after ~20 s per lookup
        # (dockerd looks up registry-1.docker.io even when a mirror serves the pull)
        str(paths.resolv_conf): {"bind": "/etc/resolv.conf", "mode": "ro"},
    }
    labels = {LABEL: lab_name(), f"{LABEL}.name": name, f"{LABEL}.flavor": flavor}
    if minimal:
        labels[f"{LABEL}.minimal"] = "1"
    created = client.api.create_container(
        node_image(flavor), name=container, hostname=name, labels=labels,
        environment={"container": "docker"}, stop_signal="SIGRTMIN+3",
        host_config=client.api.create_host_config(
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
        networking_config=client.api.create_networking_config(
            {lab_name(): client.api.create_endpoint_config(ipv4_address=address)}),
    )
    client.api.start(created["Id"])


# a minimal node: no HTTP client besides what the runtimes bring (python3 and bash stay);
# purged like an admin would, so dpkg agrees with the file system
_STRIP_FETCHERS = ("dpkg --purge curl wget >/tmp/nodecfg-lab-purge.log 2>&1 || "
                   "dpkg --purge --force-depends curl wget >>/tmp/nodecfg-lab-purge.log 2>&1; "
                   "for b in curl wget; do if command -v $b >/dev/null; then echo \"$b is still there\"; "
                   "exit 1; fi; done")


def _strip_fetchers(client: docker.DockerClient, name: str) -> None:
    code, out = client.containers.get(_container(name)).exec_run(["sh", "-c", _STRIP_FETCHERS])
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


def _wait_for_runtimes(paths: LabPaths, hosts: list[tuple[str, str]], timeout: float = 180) -> None:
    """Every node answers over SSH with docker and containerd active (one deadline for all:
    the hosts boot in parallel; containerd 2 and docker 28 take a few seconds more)."""
    from nodecfg import ssh
    from nodecfg.inventory import Host, SshSettings

    settings = SshSettings(key=paths.key, known_hosts=paths.known_hosts, connect_timeout=5)
    deadline = time.monotonic() + timeout
    for name, address in hosts:
        wait_for_ssh(address, deadline)
        host = Host(name=name, address=address, ssh=settings)
        c = ssh.connect(host)
        try:
            while True:
                res = ssh.run(c, "systemctl is-active docker containerd", timeout=30)
                if res.ok:
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"{name}: docker/containerd not active after {timeout:.0f} s: "
                                   f"{res.stdout.split()}")
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


def check_minimal(minimal: Collection[str], hosts: Collection[str]) -> None:
    unknown = [n for n in minimal if n not in hosts]
    if unknown:
        raise UsageError(f"lab up: --minimal names no lab host: {', '.join(unknown)} "
                         f"(the hosts are master, node1..node{len(hosts) - 1})")


def lab_up(count: int, say: Say = _noop, *, pull: bool = False, rebuild: bool = False,
           flavors: Sequence[str] = (DEFAULT_FLAVOR,), minimal: Collection[str] = ()) -> Path:
    """Start (or restart) the lab with a master and `count` nodes; returns the inventory path.

    node1, node2, ... take `flavors` in turn; `minimal` names hosts that get neither curl nor
    wget. Only the flavors in use are built. The master is always MASTER_FLAVOR: it runs the
    registry container, and docker 28 cannot start a bridge-networked container inside a lab host
    (it fails to disable IPv6 on the container's interface: /proc/sys is read-only here)."""
    from docker.types import IPAMConfig, IPAMPool

    if count < 1:
        raise LabError("--nodes must be at least 1")
    node_flavors = assign_flavors(count, flavors)
    plan = {"master": MASTER_FLAVOR, **{f"node{i + 1}": f for i, f in enumerate(node_flavors)}}
    check_minimal(minimal, plan)
    paths = lab_paths()
    client = _client()
    # bases before the flavors made from them, so a --rebuild derives from the fresh base
    for flavor in sorted(dict.fromkeys(plan.values()), key=lambda f: FLAVORS[f].base is not None):
        ensure_node_image(paths, say, rebuild=rebuild, flavor=flavor)
    ensure_operator_images(say, pull=pull)
    _ensure_key(paths)
    _raise_kernel_limits(count + 1, say)
    if _containers(client):
        say("removing the previous lab")
        lab_down(say=_noop)
    net = lab_subnet()
    pool = IPAMPool(subnet=str(net), gateway=str(next(net.hosts())))
    # internal: the nodes reach each other and this machine, never the outside world
    client.networks.create(lab_name(), driver="bridge", internal=True, labels={LABEL: lab_name()},
                           ipam=IPAMConfig(pool_configs=[pool]))
    master, node_addrs = _addresses(count)
    hosts = [("master", master)] + [(f"node{i + 1}", a) for i, a in enumerate(node_addrs)]
    say(f"starting {len(hosts)} lab hosts on {net}")
    for name, address in hosts:
        _run_node(client, name, address, paths, flavor=plan[name], minimal=name in minimal)
    if paths.known_hosts.exists():
        paths.known_hosts.unlink()
    _wait_for_runtimes(paths, hosts)
    for name in plan:
        if name in minimal:
            _strip_fetchers(client, name)
    paths.inventory.write_text(inventory_text(paths, master, hosts[1:], flavors=plan, minimal=minimal))
    return paths.inventory


def lab_down(say: Say = _noop) -> int:
    """Remove every lab container, its volumes and the lab network; returns how many hosts."""
    client = _client()
    containers = _containers(client)
    for c in containers:
        say(f"removing {c.name}")
        c.remove(force=True, v=True)
    for vol in client.volumes.list(filters=_mine()):
        vol.remove(force=True)
    for net in client.networks.list(names=[lab_name()]):
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
        address = nets.get(lab_name(), {}).get("IPAddress", "") or "-"
        out.append(LabNode(c.labels.get(f"{LABEL}.name", c.name), c.name, address, c.status,
                           c.labels.get(f"{LABEL}.flavor", DEFAULT_FLAVOR),
                           c.labels.get(f"{LABEL}.minimal") == "1"))
    order = {"master": -1}
    return sorted(out, key=lambda n: order.get(n.name, int(n.name[4:]) if n.name[4:].isdigit() else 0))


def lab_flavors() -> dict[str, str]:
    """Host name -> flavor of the running lab (from the containers' labels)."""
    return {n.name: n.flavor for n in lab_status()}


def stop_node(name: str) -> None:
    """Stop one lab host (to make it unreachable in tests)."""
    _client().containers.get(_container(name)).stop(timeout=5)


def start_node(name: str) -> None:
    _client().containers.get(_container(name)).start()
