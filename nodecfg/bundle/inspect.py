"""`bundle inspect` (what a bundle holds) and `bundle verify` (every blob hashed, every reference
present), with their text and JSON forms."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodecfg.bundle.layout import IndexEntry
from nodecfg.bundle.manifests import Descriptor, config_platform, references
from nodecfg.bundle.progress import human
from nodecfg.bundle.reader import Bundle, Reference
from nodecfg.errors import BundleError


@dataclass(frozen=True)
class ManifestInfo:
    digest: str
    media_type: str
    platform: str  # os/arch[/variant], "" when unknown
    size: int  # the manifest, its config and its layers
    attestation: bool = False


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    digest: str
    media_type: str
    size: int  # every blob of the image, each once
    manifests: tuple[ManifestInfo, ...]
    original_digest: str | None = None  # upstream's, when --platform rewrote the index
    kept_platforms: tuple[str, ...] = ()

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.platform for m in self.manifests if m.platform and not m.attestation))


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    file_size: int
    blobs: int
    blob_bytes: int
    images: tuple[ImageInfo, ...]

    @property
    def rewritten(self) -> tuple[ImageInfo, ...]:
        return tuple(i for i in self.images if i.original_digest)


@dataclass(frozen=True)
class VerifyResult:
    path: Path
    images: int
    blobs: int
    blob_bytes: int


def inspect_bundle(path: str | Path) -> BundleInfo:
    with Bundle.open(path) as bundle:
        images = tuple(_image(bundle, entry) for entry in bundle.entries)
        sizes = [info.size for _, info in bundle.blob_members()]
        return BundleInfo(bundle.path, bundle.path.stat().st_size, len(sizes), sum(sizes), images)


def _image(bundle: Bundle, entry: IndexEntry) -> ImageInfo:
    refs = list(bundle.walk_from(entry.ref, entry.descriptor))
    unique = {r.descriptor.digest: r.descriptor.size for r in refs}
    return ImageInfo(entry.ref, entry.descriptor.digest, entry.descriptor.media_type, sum(unique.values()),
                     tuple(_manifests(bundle, entry.ref, entry.descriptor)), entry.original_digest,
                     entry.platforms)


def _manifests(bundle: Bundle, ref: str, desc: Descriptor) -> Iterator[ManifestInfo]:
    """The image manifests under `desc` with their platforms: as the index lists them, else as
    the image's config names it."""
    if desc.is_index:
        body = bundle.read_small(desc, f"index of {ref}")
        for child in references(desc.media_type, body):
            yield from _manifests(bundle, ref, child)
        return
    refs = list(bundle.walk_from(ref, desc))
    platform = desc.platform
    config = next((r.descriptor for r in refs if r.kind == "config"), None)
    if platform is None and config is not None:
        platform = config_platform(bundle.read_small(config, f"config of {ref}"))
    size = sum({r.descriptor.digest: r.descriptor.size for r in refs}.values())
    yield ManifestInfo(desc.digest, desc.media_type, str(platform) if platform else "", size,
                       desc.is_attestation)


def verify_bundle(path: str | Path, on_bytes: Callable[[int], None] = lambda _n: None,
                  on_total: Callable[[int], None] = lambda _n: None) -> VerifyResult:
    """Every reference from index.json present with its size, then every blob hashed. The first
    problem raises a one-line BundleError naming the blob and the image that uses it."""
    with Bundle.open(path) as bundle:
        users: dict[str, Reference] = {}
        for r in bundle.walk():
            users.setdefault(r.descriptor.digest, r)
        members = list(bundle.blob_members())
        on_total(sum(info.size for _, info in members))
        total = 0
        for digest, info in members:
            sha = hashlib.sha256()
            with bundle.open_blob(digest) as f:
                while block := f.read(1 << 20):
                    sha.update(block)
                    on_bytes(len(block))
            total += info.size
            if "sha256:" + sha.hexdigest() != digest:
                user = users.get(digest)
                what = f"{user.kind} of {user.ref}" if user else "unreferenced blob"
                raise BundleError(f"{bundle.path}: blob {digest} ({what}) is corrupt: its bytes hash to "
                                  f"sha256:{sha.hexdigest()}")
        return VerifyResult(bundle.path, len(bundle.entries), len(members), total)


def render(info: BundleInfo) -> str:
    lines = [f"{info.path}: {len(info.images)} image(s), {info.blobs} blobs, {human(info.file_size)}"]
    rows = [("IMAGE", "PLATFORMS", "SIZE", "DIGEST")]
    rows += [(i.ref, ",".join(i.platforms) or "-", human(i.size), i.digest) for i in info.images]
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines += [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    if info.rewritten:
        lines.append("rewritten by --platform (upstream digest -> digest in this bundle; pull by tag, "
                     "or by these digests):")
        lines += [f"  {i.ref} [{','.join(i.kept_platforms)}]: {i.original_digest} -> {i.digest}"
                  for i in info.rewritten]
    return "\n".join(lines)


def to_json(info: BundleInfo) -> dict[str, Any]:
    return {
        "file": str(info.path), "size": info.file_size, "blobs": info.blobs, "blob_bytes": info.blob_bytes,
        "images": [{
            "ref": i.ref, "digest": i.digest, "media_type": i.media_type, "size": i.size,
            "platforms": list(i.platforms), "original_digest": i.original_digest,
            "manifests": [{"digest": m.digest, "media_type": m.media_type, "platform": m.platform,
                           "size": m.size, "attestation": m.attestation} for m in i.manifests],
        } for i in info.images],
        "rewritten": [{"ref": i.ref, "original_digest": i.original_digest, "digest": i.digest,
                       "platforms": list(i.kept_platforms)} for i in info.rewritten],
    }
