"""Image references: where an upstream image lands in the local registry (pure functions).

Images are pushed under their upstream path *without* the registry host, so a node's mirror config
(docker `registry-mirrors`, containerd `hosts.toml`) resolves unchanged image names:

    docker.io/library/busybox:1.36 -> library/busybox:1.36
    busybox:1.36                   -> library/busybox:1.36
    registry.k8s.io/pause:3.9      -> pause:3.9
    quay.io/org/x:1                -> org/x:1

The grammars are the distribution project's reference grammar (distribution/reference), ASCII only:

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [ domain "/" ] component ( "/" component )*      (255 characters at most)
    domain      := host [ ":" port ]     host := DNS name | IPv4 | "[" IPv6 "]"
    component   := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag         := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest      := algorithm ":" hex     algorithm := [A-Za-z][A-Za-z0-9]* ( [+._-] [A-Za-z][A-Za-z0-9]* )*
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from nodecfg.errors import UsageError

DOCKER_HUB = "docker.io"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
NAME_MAX = 255


def is_dns_name(text: str) -> bool:
    """A DNS host name: dot-separated labels of ASCII letters, digits and inner hyphens."""
    return _DNS_NAME.fullmatch(text) is not None


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return "%" not in text  # a zone means nothing to another host


def is_registry_host(text: str) -> bool:
    """A registry host as image references and mirror configs name it: `host[:port]`, where host
    is a DNS name, an IPv4 address or a bracketed IPv6 address (no zone), port 1-65535."""
    if text.startswith("["):
        inner, bracket, rest = text[1:].partition("]")
        host_ok = bool(bracket) and _is_ipv6(inner)
        colon, port = rest[:1], rest[1:]
        if rest and colon != ":":
            return False
    else:
        host, colon, port = text.partition(":")
        host_ok = is_dns_name(host)
    return host_ok and (not colon or _is_port(port))


def _split_name(name: str) -> tuple[str | None, list[str]]:
    """(domain or None, path components), docker's way: the first part is a domain when it holds
    a '.' or ':' or is `localhost`."""
    parts = name.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        return first, parts[1:]
    return None, parts


def reference_error(ref: str) -> str | None:
    """Why `ref` is not an image reference by the distribution grammar (tag and digest both
    optional), or None when it is one."""
    if not ref or not ref.isascii() or not ref.isprintable() or " " in ref:
        return "not a valid image reference"
    name, at, digest = ref.partition("@")
    tag = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    domain, path = _split_name(name)
    bad_component = next((comp for comp in path if not _COMPONENT.fullmatch(comp)), None)
    problems = [
        (at and not _DIGEST.fullmatch(digest), f"invalid digest {digest!r}"),
        (tag is not None and not _TAG.fullmatch(tag), f"invalid tag {tag!r}"),
        (len(name) > NAME_MAX, f"the name is longer than {NAME_MAX} characters"),
        (domain is not None and not is_registry_host(domain), f"invalid registry host {domain!r}"),
        (bad_component is not None, f"invalid repository name component {bad_component!r}"),
    ]
    return next((message for failed, message in problems if failed), None)


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
    if "@" in text:
        raise UsageError(f"image {ref!r}: pin images by tag, not by digest")
    problem = reference_error(text)
    if problem:
        raise UsageError(f"image {ref!r}: {problem}")
    name, tag = text, "latest"
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        name, tag = text[:colon], text[colon + 1:]
    domain, path_parts = _split_name(name)
    registry = domain or DOCKER_HUB
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if len(path_parts) == 1:
            path_parts = ["library", *path_parts]
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
