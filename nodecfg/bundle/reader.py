"""Reading a bundle file in place: the tar's member table, index.json, blobs by digest.

Nothing is unpacked: a blob is a slice of the file (`Bundle.open_blob`, `Bundle.offset`), so the
push side can stream it straight from the tar. Every problem is a one-line BundleError naming the
file and what is wrong (missing, truncated, corrupt).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nodecfg.bundle.layout import INDEX_FILE, LAYOUT_FILE, IndexEntry, blob_name, entry_from
from nodecfg.bundle.manifests import MAX_MANIFEST, Descriptor, parse_json, references, sha256_digest
from nodecfg.bundle.manifests import descriptor as parse_descriptor
from nodecfg.errors import BundleError, UsageError

_BLOCK = tarfile.BLOCKSIZE
CHUNK = 1 << 20


def verified_chunks(fd: int, offset: int, size: int, digest: str, what: str, path: Path,
                    on_bytes: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """A blob's bytes read in place from a file (a bundle, the engine's spool), hashed as they go; the
    last chunk is only given out once the whole blob hashed to its digest (else a one-line
    BundleError): whatever the chunks go into (an upload, `docker load`) never gets a corrupt blob whole."""
    sha = hashlib.sha256()
    pos, held = 0, b""
    while pos < size:
        n = min(CHUNK, size - pos)
        data = os.pread(fd, n, offset + pos)
        if len(data) != n:
            raise BundleError(f"{path}: truncated: blob {digest} ({what}) ends early")
        sha.update(data)
        pos += n
        if held:
            yield held
            if on_bytes is not None:
                on_bytes(len(held))
        held = data
    got = "sha256:" + sha.hexdigest()
    if got != digest:
        raise BundleError(f"{path}: blob {digest} ({what}) is corrupt: its bytes hash to {got}; "
                          "nothing of it was committed to the registry")
    if held:
        yield held
        if on_bytes is not None:
            on_bytes(len(held))


@dataclass(frozen=True)
class Reference:
    """A blob as the walk from index.json meets it: which image, what kind, its descriptor."""

    ref: str
    kind: str  # index | manifest | config | layer
    descriptor: Descriptor


class Bundle:
    def __init__(self, path: Path, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo],
                 entries: tuple[IndexEntry, ...]) -> None:
        self.path, self._tar, self._members, self.entries = path, tar, members, entries

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        p = Path(path)
        if not p.exists():
            raise UsageError(f"{p}: no such bundle file")
        if p.is_dir():
            raise UsageError(f"{p}: is a directory, not a bundle file")
        try:
            tar = tarfile.open(p, mode="r:")  # noqa: SIM115 -- closed by Bundle.close
        except (tarfile.ReadError, OSError) as exc:
            raise BundleError(f"{p}: not a bundle (not an uncompressed tar: {exc})") from None
        try:
            members = {m.name: m for m in tar}
        except (tarfile.ReadError, OSError) as exc:
            tar.close()
            raise BundleError(f"{p}: truncated or damaged ({exc})") from None
        bundle = cls(p, tar, members, ())
        try:
            bundle._check_end()
            bundle.entries = bundle._read_index()
        except BundleError:
            tar.close()
            raise
        return bundle

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- blobs --------------------------------------------------------------------------------

    def member(self, digest: str) -> tarfile.TarInfo | None:
        try:
            return self._members.get(blob_name(digest))
        except ValueError:
            return None

    def blob_members(self) -> Iterator[tuple[str, tarfile.TarInfo]]:
        """(digest, member) for every blob in the file, in file order."""
        for name, info in self._members.items():
            if name.startswith("blobs/sha256/") and info.isfile():
                yield "sha256:" + name.rpartition("/")[2], info

    def offset(self, digest: str) -> tuple[int, int]:
        """(byte offset, size) of a blob's data inside the file."""
        info = self._require(digest)
        return info.offset_data, info.size

    def open_blob(self, digest: str) -> IO[bytes]:
        f = self._tar.extractfile(self._require(digest))
        assert f is not None
        return f

    def read_small(self, desc: Descriptor, what: str) -> bytes:
        """A manifest, index or config: read whole and checked against its digest and size."""
        info = self._require(desc.digest, what)
        if info.size != desc.size:
            raise BundleError(f"{self.path}: blob {desc.digest} ({what}) is {info.size} bytes, its "
                              f"descriptor says {desc.size}")
        if info.size > MAX_MANIFEST:
            raise BundleError(f"{self.path}: blob {desc.digest} ({what}) is too large for one ({info.size} bytes)")
        with self.open_blob(desc.digest) as f:
            data = f.read()
        if sha256_digest(data) != desc.digest:
            raise BundleError(f"{self.path}: blob {desc.digest} ({what}) is corrupt: its bytes hash to "
                              f"{sha256_digest(data)}")
        return data

    def walk(self) -> Iterator[Reference]:
        """Every blob index.json leads to, each image's in turn (shared blobs once per image),
        checking presence and size; foreign layers (not in bundles) are skipped."""
        for entry in self.entries:
            yield from self.walk_from(entry.ref, entry.descriptor)

    def walk_from(self, ref: str, desc: Descriptor) -> Iterator[Reference]:
        """The walk below one manifest or index."""
        return self._walk(ref, desc, 0)

    def _walk(self, ref: str, desc: Descriptor, depth: int) -> Iterator[Reference]:
        kind = "index" if desc.is_index else "manifest"
        yield Reference(ref, kind, desc)
        body = self.read_small(desc, f"{kind} of {ref}")
        try:
            children = references(desc.media_type, body)
        except ValueError as exc:
            raise BundleError(f"{self.path}: {kind} {desc.digest} of {ref}: {exc}") from None
        if desc.is_index:
            if depth > 2:
                raise BundleError(f"{self.path}: indexes of {ref} nest too deep")
            for child in children:
                if not child.is_manifest:
                    raise BundleError(f"{self.path}: index {desc.digest} of {ref} lists a {child.media_type}")
                yield from self._walk(ref, child, depth + 1)
            return
        for i, child in enumerate(children):
            if child.nondistributable:
                continue
            what = "config" if i == 0 else "layer"
            info = self._require(child.digest, f"{what} of {ref}")
            if info.size != child.size:
                raise BundleError(f"{self.path}: blob {child.digest} ({what} of {ref}) is {info.size} bytes, "
                                  f"its manifest says {child.size}")
            yield Reference(ref, what, child)

    # -- structure ----------------------------------------------------------------------------

    def _require(self, digest: str, what: str = "blob") -> tarfile.TarInfo:
        info = self.member(digest)
        if info is None or not info.isfile():
            raise BundleError(f"{self.path}: blob {digest} ({what}) is missing from the bundle")
        return info

    def _check_end(self) -> None:
        """A complete tar ends with two zero blocks after its last member; a file cut short at a
        member boundary reads as a smaller tar without them."""
        if not self._members:
            raise BundleError(f"{self.path}: not a bundle (an empty tar)")
        last = max(self._members.values(), key=lambda m: m.offset_data)
        end = last.offset_data + -(-last.size // _BLOCK) * _BLOCK
        fileobj = self._tar.fileobj
        assert fileobj is not None
        fileobj.seek(end)
        if fileobj.read(2 * _BLOCK) != bytes(2 * _BLOCK):
            raise BundleError(f"{self.path}: truncated or damaged: the tar stops at byte {end} without "
                              "its end-of-archive marker")

    def _read_index(self) -> tuple[IndexEntry, ...]:
        for name in (LAYOUT_FILE, INDEX_FILE):
            if name not in self._members:
                raise BundleError(f"{self.path}: not a bundle (no {name}; an OCI image layout has one)")
        try:
            layout = parse_json(self._file(LAYOUT_FILE))
            if layout.get("imageLayoutVersion") != "1.0.0":
                raise ValueError(f"imageLayoutVersion {layout.get('imageLayoutVersion')!r}, expected 1.0.0")
            index = parse_json(self._file(INDEX_FILE))
            raw = index.get("manifests")
            if not isinstance(raw, list):
                raise ValueError("index.json has no manifests list")
            entries = tuple(entry_from(parse_descriptor(d)) for d in raw)
        except ValueError as exc:
            raise BundleError(f"{self.path}: not a valid bundle: {exc}") from None
        for e in entries:
            if not e.descriptor.is_manifest:
                raise BundleError(f"{self.path}: index.json: {e.ref} is a {e.descriptor.media_type}, "
                                  "not a manifest or index")
        return entries

    def _file(self, name: str) -> bytes:
        f = self._tar.extractfile(self._members[name])
        if f is None:
            raise ValueError(f"{name} is not a file")
        with f:
            return f.read(MAX_MANIFEST)
