"""The images the lab needs in this machine's Docker engine, none of them pulled (unless `--pull`
finds them in a reachable registry):

- node images, `nodecfg-lab-node:<flavor>`, imported from the flavor's cached rootfs tarball
  (`rootfs.build_rootfs` makes it when missing);
- the operator-side images: `registry:2` from Debian's docker-registry binary (the real distribution
  registry) and small test images named like upstream ones (TEST_IMAGES) from busybox-static, each
  built only when the engine lacks it.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from nodecfg_lab.errors import LabError
from nodecfg_lab.flavors import DEFAULT_FLAVOR, FLAVORS, NODE_REPO, node_image
from nodecfg_lab.rootfs import build_rootfs
from nodecfg_lab.settings import LabPaths, Say, client, has_image, noop

TEST_IMAGES = ("docker.io/library/busybox:1.36", "registry.k8s.io/pause:3.9",
               "quay.io/prometheus/busybox:latest")
REGISTRY_IMAGE = "registry:2"


def ensure_node_image(paths: LabPaths, say: Say = noop, *, rebuild: bool = False,
                      flavor: str = DEFAULT_FLAVOR) -> str:
    """The flavor's node image, imported from its (cached or freshly built) rootfs tarball.
    `rebuild` builds this flavor's rootfs again; a derived flavor reuses its base's tarball."""
    import docker

    engine = client()
    image = node_image(flavor)
    old = engine.images.get(image).id if has_image(engine, image) else None
    if old and not rebuild:
        return image
    if rebuild and paths.rootfs(flavor).exists():
        paths.rootfs(flavor).unlink()
    tarball = build_rootfs(paths, flavor, say)
    say(f"importing {image}")
    changes = ['CMD ["/sbin/init"]', "ENV container=docker"]
    engine.api.import_image_from_file(str(tarball), repository=NODE_REPO, tag=flavor, changes=changes)
    if old and engine.images.get(image).id != old:
        with contextlib.suppress(docker.errors.APIError):  # still used by a container: docker keeps it
            engine.images.remove(old)
    return image


def built_flavors() -> set[str]:
    """The flavors whose node image this machine's engine has."""
    engine = client()
    return {name for name in FLAVORS if has_image(engine, node_image(name))}


def tar_add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o644,
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
            tar_add(tar, d, directory=True)
        tar_add(tar, "bin/registry", data=Path(binary).read_bytes(), mode=0o755)
        for lib in _shared_libs(binary):
            parts = Path(lib).parts[1:]
            for i in range(1, len(parts)):
                tar_add(tar, "/".join(parts[:i]), directory=True)
            tar_add(tar, "/".join(parts), data=Path(lib).resolve().read_bytes(), mode=0o755)
        tar_add(tar, "etc/docker/registry/config.yml", data=REGISTRY_CONFIG.encode())
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
            tar_add(tar, d, directory=True)
        tar_add(tar, "bin/busybox", data=Path(binary).read_bytes(), mode=0o755)
        for applet in applets:
            if applet != "bin/busybox" and applet.split("/")[0] in ("bin", "sbin", "usr"):
                tar_add(tar, applet, link="/bin/busybox")
        tar_add(tar, "etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
    return buf.getvalue()


def ensure_operator_images(say: Say = noop, *, pull: bool = False) -> list[str]:
    """Make sure this machine's engine has registry:2 and the lab's test images."""
    engine = client()
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
        if has_image(engine, ref):
            continue
        if pull:
            try:
                engine.images.pull(ref)
                made.append(ref)
                continue
            except Exception:  # noqa: BLE001 -- no registry reachable: build it instead
                say(f"could not pull {ref}; building it")
        say(f"building {ref}")
        repo, tag = ref.rsplit(":", 1)
        engine.api.import_image_from_data(build(), repository=repo, tag=tag, changes=changes)
        made.append(ref)
    return made
