"""The kinds of lab node (`--flavors`; cache `rootfs-<flavor>.tar`, image `nodecfg-lab-node:<flavor>`):

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

The master, which runs the registry, is always MASTER_FLAVOR (see `fleet.lab_up`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nodecfg_lab.errors import LabUsageError

NODE_REPO = "nodecfg-lab-node"
DEFAULT_FLAVOR = "bookworm"
MASTER_FLAVOR = "bookworm"
NODE_IMAGE = f"{NODE_REPO}:{DEFAULT_FLAVOR}"  # the default flavor's image
# every flavor's debootstrap installs these (a derived flavor has them from its base)
PACKAGES = ("systemd", "systemd-sysv", "openssh-server", "docker.io", "containerd", "iproute2",
            "ca-certificates", "curl", "python3", "sudo")


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
        raise LabUsageError("up: --flavors needs at least one flavor")
    for name in flavors:
        if name not in FLAVORS:
            raise LabUsageError(f"up: unknown flavor {name!r} (known: {', '.join(FLAVORS)})")


def assign_flavors(count: int, flavors: Sequence[str]) -> list[str]:
    """The flavors of node1..node<count>: the listed ones in turn, wrapping around."""
    check_flavors(flavors)
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    return [flavors[i % len(flavors)] for i in range(count)]
