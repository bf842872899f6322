"""The bundle file: one uncompressed tar holding an OCI image layout.

    oci-layout                 {"imageLayoutVersion": "1.0.0"}
    index.json                 one entry per image: its top manifest or index, annotated with
                               org.opencontainers.image.ref.name = the upstream reference
    blobs/sha256/<hex>         every index, manifest, config and layer, byte-identical to upstream
                               (indexes and manifests first, then configs and layers, in image
                               order; each blob once)

The tar is deterministic (fixed order, mtime 0, root-owned, 0644), so the same images give the same
file. `create` builds it in a sibling work directory, `<FILE>.partial/` (an OCI layout itself:
blobs land there only once verified, so an interrupted run resumes), and writes the tar to a temp
file renamed over FILE at the end; each blob is hashed again while it is copied into the tar.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nodecfg.bundle.manifests import (
    CONTAINERD_NAME,
    KEPT_PLATFORMS,
    OCI_INDEX,
    ORIGINAL_DIGEST,
    REF_NAME,
    ROLE,
    Descriptor,
    digest_hex,
    sha256_digest,
)
from nodecfg.errors import BundleError, UsageError

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BLOB_DIR = "blobs/sha256"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'


def blob_name(digest: str) -> str:
    return f"{BLOB_DIR}/{digest_hex(digest)}"


@dataclass(frozen=True)
class IndexEntry:
    """One image of the bundle: its upstream reference and top-level descriptor; when --platform
    rewrote its index, upstream's digest and the platforms kept."""

    ref: str
    descriptor: Descriptor
    original_digest: str | None = None
    platforms: tuple[str, ...] = ()
    role: str = ""  # "" (an image to push), "registry" (only the registry's image), "image,registry"

    @property
    def is_registry(self) -> bool:
        return "registry" in self.role.split(",")

    @property
    def pushed(self) -> bool:
        """Does `registry-up --bundle` push it into the registry? Everything but an image that is
        only there to run the registry."""
        return self.role != "registry"


def index_document(entries: Sequence[IndexEntry]) -> bytes:
    """index.json for the entries, in their order."""
    manifests: list[dict[str, Any]] = []
    for e in entries:
        notes = {REF_NAME: e.ref, CONTAINERD_NAME: e.ref}
        if e.original_digest:
            notes[ORIGINAL_DIGEST] = e.original_digest
            notes[KEPT_PLATFORMS] = ",".join(e.platforms)
        if e.role:
            notes[ROLE] = e.role
        d = e.descriptor
        manifests.append({"mediaType": d.media_type, "digest": d.digest, "size": d.size, "annotations": notes})
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return json.dumps(doc, indent=2).encode() + b"\n"


def entry_from(raw: Descriptor) -> IndexEntry:
    """Read an index.json descriptor back as an entry (ValueError without a reference name)."""
    ref = raw.annotations.get(REF_NAME)
    if not ref:
        raise ValueError(f"index.json: {raw.digest} has no {REF_NAME} annotation")
    platforms = raw.annotations.get(KEPT_PLATFORMS, "")
    return IndexEntry(ref, Descriptor(raw.media_type, raw.digest, raw.size),
                      raw.annotations.get(ORIGINAL_DIGEST), tuple(p for p in platforms.split(",") if p),
                      raw.annotations.get(ROLE, ""))


class WorkDir:
    """`<FILE>.partial/`: verified blobs of an unfinished create, locked against a second writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blobs = path / BLOB_DIR
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            self._lock = (path / "lock").open("a")
        except OSError as exc:
            raise UsageError(f"{path}: cannot create the work directory: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise UsageError(f"{path}: another `nodecfg bundle create` is writing this bundle") from None
        (path / LAYOUT_FILE).write_bytes(LAYOUT_VERSION)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, digest: str) -> threading.Lock:
        """One writer per blob: two images may share a manifest or config, resolved at once."""
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())

    def blob(self, digest: str) -> Path:
        return self.blobs / digest_hex(digest)

    def has(self, desc: Descriptor) -> bool:
        """A blob with its final name was verified when it got that name; the size is checked."""
        try:
            return self.blob(desc.digest).stat().st_size == desc.size
        except FileNotFoundError:
            return False

    def put(self, data: bytes) -> Path:
        """Store bytes under their own digest (written, synced, renamed)."""
        digest = sha256_digest(data)
        dest = self.blob(digest)
        with self.lock(digest):
            if self.has(Descriptor("", digest, len(data))):
                return dest
            tmp = dest.with_name(dest.name + ".tmp")
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(dest)
        return dest

    def read(self, desc: Descriptor) -> bytes | None:
        """A stored small blob (a manifest), only if intact."""
        try:
            data = self.blob(desc.digest).read_bytes()
        except FileNotFoundError:
            return None
        return data if sha256_digest(data) == desc.digest else None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._lock.close()


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through (tarfile copies from it)."""

    def __init__(self, f: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self._f, self._on_bytes, self.sha = f, on_bytes, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.sha.update(data)
        self._on_bytes(len(data))
        return data


def _info(name: str, size: int, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0, 0, 0, "", ""
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info


def write_bundle(out: Path, work: WorkDir, index: bytes, blobs: Sequence[Descriptor],
                 on_bytes: Callable[[int], None] = lambda _n: None) -> int:
    """Write the tar (temp file in the work dir, then renamed over `out`); returns its size.
    A work-dir blob that no longer hashes to its name is deleted and reported, so a re-run
    fetches it again."""
    tmp = work.path / "bundle.tar.tmp"
    with tmp.open("wb") as raw, tarfile.TarFile(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT,
                                                copybufsize=1 << 20) as tar:
        tar.addfile(_info(LAYOUT_FILE, len(LAYOUT_VERSION)), io.BytesIO(LAYOUT_VERSION))
        tar.addfile(_info(INDEX_FILE, len(index)), io.BytesIO(index))
        tar.addfile(_info("blobs", 0, directory=True))
        tar.addfile(_info(BLOB_DIR, 0, directory=True))
        for desc in blobs:
            path = work.blob(desc.digest)
            try:
                with path.open("rb") as f:
                    reader = _Hashing(f, on_bytes)
                    tar.addfile(_info(blob_name(desc.digest), desc.size), reader)
                intact = "sha256:" + reader.sha.hexdigest() == desc.digest
            except OSError:  # shorter than its size: tarfile's "unexpected end of data"
                intact = False
            if not intact:
                path.unlink(missing_ok=True)
                raise BundleError(f"{path}: changed on disk since it was verified (deleted; run the same "
                                  "command again to fetch it anew)")
        tar.close()
        raw.flush()
        os.fsync(raw.fileno())
    tmp.replace(out)
    with contextlib.suppress(OSError):
        fd = os.open(out.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return out.stat().st_size
