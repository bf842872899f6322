"""`registry-up --bundle`: the push's images from a bundle file (nodecfg/bundle/), upstream digests kept.

Everything is read in place: a blob is a slice of the file (`os.pread` at the member's offset,
nothing unpacked), sha256-checked while it streams (`bundle.reader.verified_chunks`). The manifests
go up as the bundle holds them, byte for byte, so every tag's digest is upstream's (lists too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from nodecfg.bundle import dockerarchive
from nodecfg.bundle.layout import IndexEntry
from nodecfg.bundle.manifests import Descriptor, parse_platform
from nodecfg.bundle.reader import Bundle, verified_chunks
from nodecfg.errors import BundleError, HostError, UsageError
from nodecfg.images import ImageRef, parse_ref, plan_targets
from nodecfg.push.source import Blob, SourceImage

SMALL = 4 << 20  # configs and small layers go first: the small images are whole and tagged at once


@dataclass(frozen=True)
class _Entry:
    image: SourceImage
    manifests: tuple[tuple[Descriptor, bytes], ...]  # children before their index; the top one last
    blobs: tuple[Descriptor, ...]


class BundleSource:
    """A bundle's images (those the inventory lists must all be in it)."""

    def __init__(self, path: Path, wanted: Sequence[ImageRef], registry_image: str) -> None:
        self.path = path
        self._bundle = Bundle.open(path)
        try:
            self._registry_entry = next((e for e in self._bundle.entries
                                         if parse_ref(e.ref).upstream == parse_ref(registry_image).upstream), None)
            entries = [e for e in self._bundle.entries if e.pushed]
            have = {parse_ref(e.ref).upstream for e in entries}
            missing = [r.upstream for r in wanted if r.upstream not in have]
            if missing:
                raise UsageError(f"{path}: the inventory's image(s) {', '.join(missing)} are not in the bundle; "
                                 "run `nodecfg bundle create` with this inventory again")
            plan_targets([e.ref for e in entries])  # two bundle images on one registry path: refused here
            self._entries = [self._read(e) for e in entries]
            self._fd = os.open(path, os.O_RDONLY)
        except BaseException:
            self._bundle.close()
            raise
        self._descriptors = {d.digest: d for e in self._entries for d in e.blobs}
        self._by_target = {e.image.ref.target: e for e in self._entries}

    def __str__(self) -> str:
        return f"the bundle {self.path}"

    def _read(self, entry: IndexEntry) -> _Entry:
        """The entry's manifests (read and digest-checked) and blobs (present, sizes checked)."""
        manifests: list[tuple[Descriptor, bytes]] = []
        blobs: dict[str, Descriptor] = {}
        for r in self._bundle.walk_from(entry.ref, entry.descriptor):
            if r.kind in ("index", "manifest"):
                manifests.append((r.descriptor, self._bundle.read_small(r.descriptor, f"{r.kind} of {r.ref}")))
            else:
                blobs.setdefault(r.descriptor.digest, r.descriptor)
        seen: set[str] = set()
        ordered = []
        for d, body in reversed(manifests):  # the walk is pre-order: reversed, children come first
            if d.digest not in seen:
                seen.add(d.digest)
                ordered.append((d, body))
        size = sum(d.size for d in blobs.values()) + sum(len(b) for _, b in ordered)
        image = SourceImage(entry.ref, parse_ref(entry.ref), tuple(blobs), size, top=entry.descriptor.digest)
        return _Entry(image, tuple(ordered), tuple(blobs.values()))

    # the Source protocol (push/source.py)

    def targets(self) -> list[ImageRef]:
        return [e.image.ref for e in self._entries]

    def images(self) -> list[SourceImage]:
        return [e.image for e in self._entries]

    def prepare(self, _lacking: Sequence[SourceImage]) -> None:
        return None  # read in place: nothing to start early

    def blobs(self, _images: Sequence[SourceImage], digests: set[str]) -> Iterator[Blob]:
        wanted = [self._descriptors[d] for d in digests]
        for d in sorted(wanted, key=lambda d: (d.size >= SMALL, -d.size)):  # small first, then largest first
            offset, size = self._bundle.offset(d.digest)
            if size != d.size:
                raise BundleError(f"{self.path}: blob {d.digest} is {size} bytes, its manifest says {d.size}")
            yield Blob(d.digest, size, partial(verified_chunks, self._fd, offset, size, d.digest, "a blob to push",
                                               self.path))

    def sizes(self, images: Sequence[SourceImage]) -> dict[str, int]:
        return {d: self._descriptors[d].size for img in images for d in img.blobs if d in self._descriptors}

    def missing(self, digest: str) -> str:
        return f"{self.path}: no blob {digest}"

    def manifests(self, image: SourceImage, _sizes: Mapping[str, int]) -> tuple[tuple[Descriptor, bytes], ...]:
        return self._by_target[image.ref.target].manifests

    def registry_image(self, name: str, platform: str) -> Iterator[bytes]:
        """The registry's image for the master's platform, as a `docker load` stream."""
        if self._registry_entry is None:
            raise UsageError(f"{self.path}: the master has no {name} and the bundle does not hold it; make the "
                             "bundle with `nodecfg bundle create -i INVENTORY` (without --no-registry-image)")
        try:
            wanted = parse_platform(platform)
        except ValueError:
            raise HostError(f"cannot tell the master engine's platform ({platform!r})") from None
        return dockerarchive.load_stream(self._bundle, self._registry_entry, wanted, name)

    def registry_image_id(self, _name: str) -> str:
        return ""  # known on the master once loaded

    def close(self) -> None:
        os.close(self._fd)
        self._bundle.close()
