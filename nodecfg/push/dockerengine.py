"""This machine's Docker engine, asked straight over its socket when that is all a run needs.

The docker SDK costs ~0.15 s to import (requests, urllib3) — most of an unchanged `registry-up`'s
own time. Inspecting the inventory's images is one `GET /images/<ref>/json` each, which
`http.client` does over the engine's unix socket in a few milliseconds; the SDK is imported only
when there is real work (a pull, a `docker save`): `engine_source.EngineSource.client()`.

The socket is the one the docker CLI would use by default: `$DOCKER_HOST` when it is `unix://…`,
else /var/run/docker.sock. With another `DOCKER_HOST` (tcp, ssh) or a `DOCKER_CONTEXT`, everything
goes through the SDK as before.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any
from urllib.parse import quote

DEFAULT_SOCKET = "/var/run/docker.sock"
TIMEOUT = 30.0


class EngineUnavailable(Exception):
    """The socket can't be used: the caller falls back to the docker SDK."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def socket_path() -> str | None:
    """The engine's unix socket the docker CLI would use, or None when it would use something else."""
    if os.environ.get("DOCKER_CONTEXT"):
        return None
    host = os.environ.get("DOCKER_HOST", "")
    if host:
        return host[len("unix://"):] if host.startswith("unix://") else None
    return DEFAULT_SOCKET


def inspect_image(ref: str) -> dict[str, Any] | None:
    """`docker image inspect REF` over the socket: the document, or None when the engine has no such
    image. EngineUnavailable when the socket can't answer (then the SDK is asked instead)."""
    doc = _get(f"/images/{quote(ref, safe='/:@')}/json")
    if doc is not None and not isinstance(doc, dict):
        raise EngineUnavailable("the engine's answer is no object")
    return doc


def image_history(ref: str) -> list[dict[str, Any]] | None:
    """`docker image history REF` over the socket (newest first), or None when there is no such image."""
    doc = _get(f"/images/{quote(ref, safe='/:@')}/history")
    if doc is not None and not isinstance(doc, list):
        raise EngineUnavailable("the engine's answer is no list")
    return doc


def _get(path: str) -> Any:
    """The engine's JSON answer to GET `path`; None for a 404."""
    sock = socket_path()
    if sock is None:
        raise EngineUnavailable("DOCKER_HOST or DOCKER_CONTEXT names another engine")
    conn = _UnixConnection(sock)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    except OSError as exc:
        raise EngineUnavailable(str(exc)) from None
    finally:
        conn.close()
    if resp.status == 404:
        return None
    if resp.status != 200:
        raise EngineUnavailable(f"HTTP {resp.status} from the engine")
    try:
        return json.loads(body)
    except ValueError:
        raise EngineUnavailable("the engine's answer is no JSON") from None
