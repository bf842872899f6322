"""Manifests, indexes and descriptors as the registry API and the OCI layout carry them (pure).

A manifest is kept as the exact bytes the registry served: its digest is the sha256 of those bytes,
so nothing here ever re-serializes one, except `filter_index`, which writes a new, smaller index
(and the caller records the digest it replaces).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))
SCHEMA1_TYPES = ("application/vnd.docker.distribution.manifest.v1+json",
                 "application/vnd.docker.distribution.manifest.v1+prettyjws")
MAX_MANIFEST = 4 << 20  # containerd's limit; a bigger "manifest" is not one

# index.json annotations
REF_NAME = "org.opencontainers.image.ref.name"       # the upstream reference, e.g. docker.io/library/busybox:1.36
CONTAINERD_NAME = "io.containerd.image.name"         # the same, so `ctr image import` names it right
ORIGINAL_DIGEST = "io.nodecfg.bundle.original-digest"  # upstream's index digest, when --platform rewrote it
KEPT_PLATFORMS = "io.nodecfg.bundle.platforms"       # the --platform list that rewrote it, comma-separated
ROLE = "io.nodecfg.bundle.role"  # "registry": the registry's own image, not pushed; "image,registry": both
# buildx attestations: a manifest for platform unknown/unknown that points at the image it describes
_REFERENCE_TYPE = "vnd.docker.reference.type"
_REFERENCE_DIGEST = "vnd.docker.reference.digest"

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_PLATFORM_PART = re.compile(r"[a-z0-9][a-z0-9._-]*")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    """The hex part of a sha256 digest; ValueError for anything else (other algorithms included)."""
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"unsupported or malformed digest {digest!r} (expected sha256:<64 hex>)")
    return digest[7:]


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def covers(self, other: Platform) -> bool:
        """Does this wanted platform (from --platform) take `other` (from an index)? No variant
        asked means every variant; arm64 without a variant is arm64/v8."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if not self.variant:
            return True
        default = "v8" if self.architecture == "arm64" else ""
        return self.variant == (other.variant or default)


def parse_platform(text: str) -> Platform:
    """`os/arch[/variant]` as docker and containerd spell it, e.g. linux/amd64, linux/arm/v7."""
    parts = text.strip().split("/")
    if not 2 <= len(parts) <= 3 or not all(_PLATFORM_PART.fullmatch(p) for p in parts):
        raise ValueError(f"expected os/arch or os/arch/variant (e.g. linux/amd64), got {text!r}")
    return Platform(*parts)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def is_manifest(self) -> bool:
        return self.media_type in MANIFEST_TYPES or self.media_type in INDEX_TYPES

    @property
    def is_attestation(self) -> bool:
        return _REFERENCE_TYPE in self.annotations

    @property
    def nondistributable(self) -> bool:
        """Foreign / non-distributable layers (Windows base layers): registries need not hold
        them, so a bundle leaves them out, as docker and skopeo do."""
        return "foreign" in self.media_type or "nondistributable" in self.media_type

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            out["platform"] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


def descriptor(raw: Any, default_type: str = "") -> Descriptor:
    """A descriptor from its JSON form; ValueError naming what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError("a descriptor is not a JSON object")
    media_type = raw.get("mediaType", default_type)
    digest, size = raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ValueError("a descriptor has no mediaType")
    if not isinstance(digest, str):
        raise ValueError("a descriptor has no digest")
    digest_hex(digest)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"descriptor {digest} has no valid size")
    plat = raw.get("platform")
    platform = None
    if isinstance(plat, dict) and isinstance(plat.get("os"), str) and isinstance(plat.get("architecture"), str):
        platform = Platform(plat["os"], plat["architecture"], str(plat.get("variant") or ""))
    notes = raw.get("annotations") or {}
    annotations = {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}
    urls = raw.get("urls") or []
    return Descriptor(media_type, digest, size, platform, annotations,
                      tuple(str(u) for u in urls) if isinstance(urls, list) else ())


def media_type_of(body: bytes, content_type: str = "") -> str:
    """The manifest's media type: its own `mediaType` field, else the Content-Type it came with."""
    doc = parse_json(body)
    declared = doc.get("mediaType")
    media_type = declared if isinstance(declared, str) and declared else content_type.partition(";")[0].strip()
    if media_type in SCHEMA1_TYPES or doc.get("schemaVersion") == 1:
        raise ValueError("a docker schema 1 manifest (deprecated since 2019; not supported)")
    if not media_type:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST  # OCI allows leaving it out
    if media_type not in INDEX_TYPES + MANIFEST_TYPES:
        raise ValueError(f"unsupported manifest media type {media_type!r}")
    return media_type


def references(media_type: str, body: bytes) -> list[Descriptor]:
    """What a manifest points at: an index its manifests, an image manifest its config and layers."""
    doc = parse_json(body)
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ValueError("an index without a manifests list")
        return [descriptor(e) for e in entries]
    config, layers = doc.get("config"), doc.get("layers")
    if not isinstance(layers, list):
        raise ValueError("an image manifest without a layers list")
    return [descriptor(config), *(descriptor(layer) for layer in layers)]


def filter_index(body: bytes, wanted: Sequence[Platform]) -> bytes | None:
    """The index with only the children for `wanted` platforms (and the attestations of those),
    as new bytes; None when every child is kept, so the upstream bytes and digest stay. A
    ValueError when no child matches, naming the platforms the index has."""
    doc = parse_json(body)
    raw = doc.get("manifests")
    if not isinstance(raw, list):
        raise ValueError("an index without a manifests list")
    children = [descriptor(e) for e in raw]
    kept = {c.digest for c in children
            if not c.is_attestation and c.platform is not None and any(w.covers(c.platform) for w in wanted)}
    if not kept:
        have = sorted({str(c.platform) for c in children if c.platform and not c.is_attestation})
        raise ValueError(f"has no manifest for {', '.join(map(str, wanted))} (it has: {', '.join(have) or 'none'})")
    keep = [e for e, c in zip(raw, children, strict=True)
            if c.digest in kept or (c.is_attestation and c.annotations.get(_REFERENCE_DIGEST) in kept)]
    if len(keep) == len(raw):
        return None
    return json.dumps({**doc, "manifests": keep}, indent=3).encode()


def platforms_of(children: Sequence[Descriptor]) -> list[str]:
    """The platforms an index offers, in its order (attestations left out)."""
    return list(dict.fromkeys(str(c.platform) for c in children if c.platform and not c.is_attestation))


def config_platform(config: bytes) -> Platform | None:
    """The platform an image config names (os, architecture, variant), or None."""
    try:
        doc = parse_json(config)
    except ValueError:
        return None
    os_, arch = doc.get("os"), doc.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str):
        return None
    return Platform(os_, arch, str(doc.get("variant") or ""))
