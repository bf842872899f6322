"""An image of a bundle as a `docker load` stream (the docker-archive format `docker save` writes),
built on the fly from the bundle's blobs: no Docker engine on this side, no temp file anywhere.

    manifest.json        [{"Config": "<hex>.json", "RepoTags": [tag], "Layers": ["<hex>.tar", ...]}]
    <hex>.json           the image config, byte for byte
    <hex>.tar            each layer as the registry holds it (gzip): docker load decompresses it

The platform is the master engine's (an index is resolved to its child for that platform). Every
blob is sha256-checked while it streams, its last chunk held back until it matches, so a corrupt
layer ends the stream early and `docker load` loads nothing.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator

from nodecfg.bundle.layout import IndexEntry
from nodecfg.bundle.manifests import Descriptor, Platform, references
from nodecfg.bundle.reader import Bundle, verified_chunks
from nodecfg.errors import BundleError

_BLOCK = tarfile.BLOCKSIZE


def image_for_platform(bundle: Bundle, entry: IndexEntry, platform: Platform) -> tuple[Descriptor, list[Descriptor]]:
    """(config, layers) of the entry's image for `platform`."""
    desc = entry.descriptor
    body = bundle.read_small(desc, f"manifest of {entry.ref}")
    for _ in range(3):
        if not desc.is_index:
            break
        children = [c for c in references(desc.media_type, body)
                    if c.is_manifest and not c.is_attestation and c.platform is not None]
        match = next((c for c in children if c.platform is not None and platform.covers(c.platform)), None)
        if match is None:
            have = ", ".join(str(c.platform) for c in children) or "none"
            raise BundleError(f"{bundle.path}: {entry.ref} has no image for the master's platform {platform} "
                              f"(it has: {have})")
        desc, body = match, bundle.read_small(match, f"{platform} manifest of {entry.ref}")
    refs = references(desc.media_type, body)
    return refs[0], [r for r in refs[1:] if not r.nondistributable]


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pad(size: int) -> bytes:
    return bytes(-size % _BLOCK)


def load_stream(bundle: Bundle, entry: IndexEntry, platform: Platform, tag: str) -> Iterator[bytes]:
    """The docker-archive bytes for `docker load`, tagged `tag`."""
    config, layers = image_for_platform(bundle, entry, platform)
    names = [f"{d.digest[7:]}.tar" for d in layers]
    manifest = json.dumps([{"Config": f"{config.digest[7:]}.json", "RepoTags": [tag], "Layers": names}]).encode()
    yield _header("manifest.json", len(manifest)) + manifest + _pad(len(manifest))
    fd = os.open(bundle.path, os.O_RDONLY)
    try:
        for desc, name in [(config, f"{config.digest[7:]}.json"), *zip(layers, names, strict=True)]:
            offset, size = bundle.offset(desc.digest)
            if size != desc.size:
                raise BundleError(f"{bundle.path}: blob {desc.digest} is {size} bytes, its manifest says {desc.size}")
            yield _header(name, size)
            yield from verified_chunks(fd, offset, size, desc.digest, f"of {entry.ref}", bundle.path,
                                       lambda _n: None)
            yield _pad(size)
    finally:
        os.close(fd)
    yield bytes(2 * _BLOCK)
