"""Image references: where an upstream image lands in the local registry (pure functions).

Images are pushed under their upstream path *without* the registry host, so a node's mirror config
(docker `registry-mirrors`, containerd `hosts.toml`) resolves unchanged image names:

    docker.io/library/busybox:1.36 -> library/busybox:1.36
    busybox:1.36                   -> library/busybox:1.36
    registry.k8s.io/pause:3.9      -> pause:3.9
    quay.io/org/x:1                -> org/x:1
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from nodecfg.errors import UsageError

DOCKER_HUB = "docker.io"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


@dataclass(frozen=True)
class ImageRef:
    """A parsed reference: registry host, repository path and tag."""

    registry: str
    path: str
    tag: str

    @property
    def upstream(self) -> str:
        """The full upstream name, e.g. docker.io/library/busybox:1.36."""
        return f"{self.registry}/{self.path}:{self.tag}"

    @property
    def target(self) -> str:
        """Where it lives in the local registry: the path and tag without the host."""
        return f"{self.path}:{self.tag}"


def parse_ref(ref: str) -> ImageRef:
    """Parse an image reference the way docker does (docker.io and library/ implied)."""
    text = ref.strip()
    if not text or any(ch.isspace() for ch in text):
        raise UsageError(f"image {ref!r}: not a valid image reference")
    if "@" in text:
        raise UsageError(f"image {ref!r}: pin images by tag, not by digest")
    name, tag = text, "latest"
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        name, tag = text[:colon], text[colon + 1:]
    if not _TAG.match(tag):
        raise UsageError(f"image {ref!r}: invalid tag {tag!r}")
    parts = name.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        registry, path_parts = first, parts[1:]
    else:
        registry, path_parts = DOCKER_HUB, parts
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if len(path_parts) == 1:
            path_parts = ["library", *path_parts]
    for comp in path_parts:
        if not _COMPONENT.match(comp):
            raise UsageError(f"image {ref!r}: invalid repository name component {comp!r}")
    return ImageRef(registry=registry, path="/".join(path_parts), tag=tag)


def plan_targets(refs: Iterable[str]) -> list[ImageRef]:
    """Parse every reference; two that land on the same target are an error before any push."""
    seen: dict[str, str] = {}
    out: list[ImageRef] = []
    for ref in refs:
        parsed = parse_ref(ref)
        if parsed.target in seen:
            if parse_ref(seen[parsed.target]).upstream == parsed.upstream:
                continue  # the same image written twice, e.g. busybox:1.36 and docker.io/...
            raise UsageError(f"images: {seen[parsed.target]!r} and {ref!r} would both be pushed "
                             f"as {parsed.target}; the registry can hold only one of them")
        seen[parsed.target] = ref
        out.append(parsed)
    return out
