"""Where images come from: images.list files, and the endpoint each upstream host is fetched from
(pure, apart from reading the images file).

Docker Hub refs (docker.io/...) are fetched from registry-1.docker.io; loopback hosts over http,
every other host over https. `bundle.sources` / `--source HOST=URL` replace an upstream host by
another place serving the same repositories (a corporate mirror, a pull-through cache, a stand-in
registry in tests); a path in the URL is a repository prefix (`https://harbor.corp/dockerhub`
fetches docker.io/library/busybox as dockerhub/library/busybox).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nodecfg.errors import UsageError
from nodecfg.images import DOCKER_HUB, is_registry_host, reference_error

DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_PREFIX_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


@dataclass(frozen=True)
class Endpoint:
    """A registry's v2 API root: scheme, host[:port] and an optional repository prefix."""

    scheme: str
    netloc: str
    prefix: str = ""

    def repository(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def url(self, repository: str, kind: str, reference: str) -> str:
        return f"{self.scheme}://{self.netloc}/v2/{repository}/{kind}/{reference}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{'/' + self.prefix if self.prefix else ''}"


def canonical_host(host: str) -> str:
    """Docker Hub's names all become docker.io, as image references name it."""
    return DOCKER_HUB if host in _HUB_ALIASES else host


def hostname(netloc: str) -> str:
    """The host part of host[:port] (IPv6 without brackets)."""
    if netloc.startswith("["):
        return netloc[1:].partition("]")[0]
    return netloc.rpartition(":")[0] if netloc.count(":") == 1 else netloc


def is_loopback(netloc: str) -> bool:
    host = hostname(netloc)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_for(registry: str, sources: Mapping[str, Endpoint]) -> Endpoint:
    """Where images of upstream `registry` are fetched from."""
    registry = canonical_host(registry)
    if registry in sources:
        return sources[registry]
    if registry == DOCKER_HUB:
        return Endpoint("https", DOCKER_HUB_API)
    return Endpoint("http" if is_loopback(registry) else "https", registry)


def source_problem(host: str, url: Any) -> str | None:
    """Why `host: url` is not a valid source, or None. The inventory check and --source share it."""
    if not isinstance(host, str) or not is_registry_host(host):
        return f"{host!r} is not a registry host (e.g. docker.io, registry.k8s.io, quay.io)"
    if not isinstance(url, str) or not url.strip():
        return "expected a URL such as https://mirror.example.com or http://127.0.0.1:5000"
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        return f"invalid URL {url!r}: {exc}"
    prefix = parts.path.strip("/")
    checks = [
        (parts.scheme not in ("http", "https") or not parts.netloc,
         "expected http://host[:port][/prefix] or https://host[:port][/prefix]"),
        (parts.username is not None or parts.password is not None,
         "credentials do not belong in the URL; nodecfg reads them from ~/.docker/config.json (docker login)"),
        (bool(parts.query or parts.fragment), "no query or fragment expected"),
        (not is_registry_host(parts.netloc), f"{parts.netloc!r} is not a host[:port]"),
        (prefix == "v2" or prefix.startswith("v2/"), "leave out /v2 (nodecfg adds it)"),
        (bool(prefix) and not all(_PREFIX_PART.fullmatch(p) for p in prefix.split("/")),
         f"the path {prefix!r} is not a repository prefix"),
    ]
    return next((f"invalid URL {url!r}: {message}" for bad, message in checks if bad), None)


def parse_source(host: str, url: str) -> tuple[str, Endpoint]:
    """(canonical upstream host, endpoint) for one valid source; ValueError otherwise."""
    problem = source_problem(host, url)
    if problem:
        raise ValueError(problem)
    parts = urlsplit(url.strip())
    return canonical_host(host), Endpoint(parts.scheme, parts.netloc, parts.path.strip("/"))


def parse_sources(raw: Mapping[str, Any], key: str = "bundle.sources") -> dict[str, Endpoint]:
    """The inventory's `bundle.sources` mapping {upstream-host: URL}, validated."""
    out: dict[str, Endpoint] = {}
    for host, url in raw.items():
        try:
            name, endpoint = parse_source(host, url)
        except ValueError as exc:
            raise UsageError(f"{key}.{host}: {exc}") from None
        out[name] = endpoint
    return out


def parse_source_option(text: str) -> tuple[str, Endpoint]:
    """`--source HOST=URL`."""
    host, eq, url = text.partition("=")
    if not eq:
        raise ValueError(f"expected HOST=URL (e.g. docker.io=https://mirror.example.com), got {text!r}")
    return parse_source(host.strip(), url)


def parse_images_list(text: str, path: str) -> list[str]:
    """kubespray's contrib/offline images.list: one reference per line; blank lines and `#`
    comments (whole-line or trailing) ignored. A bad reference names the file and line."""
    refs: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        ref = line.split("#", 1)[0].strip()
        if not ref:
            continue
        problem = "pin images by tag, not by digest" if "@" in ref else reference_error(ref)
        if problem:
            raise UsageError(f"{path}:{number}: image {ref!r}: {problem}")
        refs.append(ref)
    return refs


def read_images_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: images file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the images file: {exc}") from None
    return parse_images_list(text, path)
