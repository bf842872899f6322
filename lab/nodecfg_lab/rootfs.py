"""A flavor's node rootfs: debootstrapped (or derived from its base flavor's in a chroot), made
into a lab host (sshd for key-only root login, host keys made at first boot, the units a container
cannot run masked), checked against the flavor's expected package versions and cached as a tarball,
`rootfs-<flavor>.tar` under NODECFG_CACHE_DIR, so a second build takes seconds. Needs root
(debootstrap, chroot, a bind mount of /proc) and the Debian mirror NODECFG_LAB_MIRROR.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nodecfg_lab.errors import LabError
from nodecfg_lab.flavors import DEFAULT_FLAVOR, FLAVORS, PACKAGES, Flavor
from nodecfg_lab.settings import LabPaths, Say, mirror, noop


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
          flavor.suite, str(root), mirror()], "debootstrap")


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
    source.write_text(f"deb {mirror()} {flavor.suite} main\n")
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


def build_rootfs(paths: LabPaths, flavor: str = DEFAULT_FLAVOR, say: Say = noop) -> Path:
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
