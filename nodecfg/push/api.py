"""The registry's HTTP API (distribution v2), as the push and registry-up ask it.

`RegistryAPI` keeps one keep-alive HTTP connection per thread, each made by a `Connect` factory
(`channels.py`: an SSH channel to the master, or TCP with `--direct`); every request is bounded by
the connection's timeout. Errors are `PushError`s that name the request, never a credential.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from nodecfg.bundle.manifests import ACCEPT
from nodecfg.errors import HostError

if TYPE_CHECKING:
    import http.client

    from nodecfg.credentials import Credentials
    from nodecfg.images import ImageRef

# http.client is imported where a request is made, not with this module: registry-up imports it
# before its first SSH connection starts, and http.client (email, ssl) is ~15 ms of that
Connect = Callable[[], "http.client.HTTPConnection"]
Answer = tuple[int, "http.client.HTTPMessage", bytes]
WIDTH = 8  # requests in flight (one SSH channel each): bench/registry_push.py found 8 ahead of 4 (docs/benchmarks.md)


class PushError(HostError):
    """The registry refused or broke off a request; the message names the request, never a secret."""


class NoSpaceError(PushError):
    """The registry's storage is full: it answered a write with ENOSPC (its filesystem driver's 500
    carries `"Err":28`, the errno, or the words "no space left on device")."""


@dataclass(frozen=True)
class Target:
    """A registry to push to: how to reach it, and its login."""

    name: str  # for messages: the master's name
    connect: Connect
    auth: Credentials | None = None

    def api(self) -> RegistryAPI:
        return RegistryAPI(self.connect, self.auth.authorization() if self.auth is not None else None)


@dataclass(frozen=True)
class TagState:
    """What a tag points at now: the manifest's digest and, for an image manifest, its config's
    digest (an engine image's id); both "" when the tag is not there."""

    digest: str = ""
    config: str = ""


class RegistryAPI:
    """Thread-local keep-alive HTTP connections to the registry (one SSH channel each)."""

    def __init__(self, connect: Connect, authorization: str | None) -> None:
        self._connect, self._auth = connect, authorization
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[http.client.HTTPConnection] = []

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        h = dict(extra or {})
        if self._auth:
            h["Authorization"] = self._auth
        return h

    def _answer(self, conn: http.client.HTTPConnection) -> Answer:
        """The response to the request just sent; a connection the registry closes is let go."""
        resp = conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self._drop()
        return resp.status, resp.headers, data

    def call(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Answer:
        """One request; a dropped keep-alive connection is retried once on a new channel."""
        import http.client

        for attempt in (0, 1):
            try:
                conn = self._conn()
                conn.request(method, path, body=body or None, headers=self._headers(headers))
                return self._answer(conn)
            except (http.client.HTTPException, OSError) as exc:
                self._drop()
                if attempt:
                    raise broke(method, path, exc) from None
        raise AssertionError("unreachable")

    def put_stream(self, path: str, size: int, chunks: Iterable[bytes]) -> Answer:
        """PUT a body of `size` bytes from `chunks` (an iterable of bytes). If `chunks` raises (a
        corrupt blob), the connection is dropped before the body is complete: the registry commits
        nothing."""
        import http.client

        conn = self._conn()
        try:
            conn.putrequest("PUT", path, skip_accept_encoding=True)
            for k, v in self._headers({"Content-Type": "application/octet-stream",
                                        "Content-Length": str(size)}).items():
                conn.putheader(k, v)
            conn.endheaders()
            try:
                for chunk in chunks:
                    conn.send(chunk)
            except OSError as exc:  # the registry stopped reading: it may have said why (a full disk)
                early = self._early_answer(conn)
                if early is None:
                    raise broke("PUT", path, exc) from None
                return early
            return self._answer(conn)
        except PushError:
            self._drop()
            raise
        except (http.client.HTTPException, OSError) as exc:
            self._drop()
            raise broke("PUT", path, exc) from None
        except BaseException:
            self._drop()
            raise

    def _early_answer(self, conn: http.client.HTTPConnection) -> Answer | None:
        """The answer a registry sent before it closed a request whose body it would not read (a
        write that failed: distribution answers 500 with the error, then closes); None if none."""
        import http.client

        try:
            resp = conn.getresponse()
            data = resp.read()
        except (http.client.HTTPException, OSError):
            return None
        finally:
            self._drop()
        return resp.status, resp.headers, data

    # the questions the push asks

    def _found(self, method: str, path: str, ok: int,
               headers: dict[str, str] | None = None) -> tuple[http.client.HTTPMessage, bytes] | None:
        """One request whose answer is `ok` (its headers and body) or 404 (None: not there); any
        other answer is the registry refusing it."""
        status, got, body = self.call(method, path, headers=headers)
        if status == 404:
            return None
        if status != ok:
            raise refused(method, path, status, body)
        return got, body

    def tag_state(self, ref: ImageRef) -> TagState:
        found = self.manifest(ref.path, ref.tag)
        return TagState(found[0], config_digest(found[1])) if found is not None else TagState()

    def manifest(self, repo: str, reference: str) -> tuple[str, bytes] | None:
        """The manifest a tag or digest names: (its digest, its bytes); None when there is none."""
        found = self._found("GET", f"/v2/{repo}/manifests/{reference}", 200, {"Accept": ACCEPT})
        return (found[0].get("Docker-Content-Digest") or "", found[1]) if found is not None else None

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """DELETE a manifest by digest (the registry untags every tag of it in `repo`): False when
        it was gone already. Needs a registry that allows deletes (REGISTRY_STORAGE_DELETE_ENABLED)."""
        return self._found("DELETE", f"/v2/{repo}/manifests/{digest}", 202) is not None

    def blob_size(self, repo: str, digest: str) -> int | None:
        """The blob's size in `repo`, None when the repository lacks it."""
        found = self._found("HEAD", f"/v2/{repo}/blobs/{digest}", 200)
        return int(found[0].get("Content-Length") or 0) if found is not None else None

    def catalog(self, width: int = WIDTH) -> dict[str, list[str]]:
        """The registry's repositories and their tags."""
        status, _, body = self.call("GET", "/v2/_catalog?n=1000")
        if status != 200:
            raise refused("GET", "/v2/_catalog", status, body)
        try:
            repos = [str(r) for r in json.loads(body).get("repositories") or []]
        except (ValueError, AttributeError):
            return {}

        def tags(repo: str) -> list[str]:
            status, _, body = self.call("GET", f"/v2/{repo}/tags/list")
            try:
                return sorted(json.loads(body).get("tags") or []) if status == 200 else []
            except (ValueError, AttributeError):
                return []

        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="catalog") as pool:
            return dict(zip(repos, pool.map(tags, repos), strict=True))


def tag_states(api: RegistryAPI, refs: Sequence[ImageRef], width: int = WIDTH) -> list[TagState]:
    """What each target's tag points at now, asked `width` at a time."""
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="tags") as pool:
        return list(pool.map(api.tag_state, refs))


def config_digest(body: bytes) -> str:
    """The config digest of a manifest the registry served ("" if it is not an image manifest)."""
    try:
        digest = json.loads(body)["config"]["digest"]
    except (ValueError, KeyError, TypeError):
        return ""
    return digest if isinstance(digest, str) else ""


def broke(method: str, path: str, exc: BaseException) -> PushError:
    return PushError(f"{method} {_short(path)}: the connection to the registry broke "
                     f"({exc or type(exc).__name__})")


def _short(path: str) -> str:
    return path.partition("?")[0]


def refused(method: str, path: str, status: int, body: bytes) -> PushError:
    if status >= 500 and no_space(body):
        return NoSpaceError(f"no space left on the registry's storage ({method} {_short(path)} answered "
                            f"{status}: ENOSPC)")
    if status == 401:
        return PushError(f"the registry refused the credentials (401 on {method} {_short(path)}); "
                         "check registry.auth")
    detail = body.decode("utf-8", "replace").strip().replace("\n", " ")[:300]
    return PushError(f"the registry answered {status} to {method} {_short(path)}: {detail}")


def no_space(body: bytes) -> bool:
    """Is this error body the registry's ENOSPC? (distribution's filesystem driver puts the errno in
    its JSON: `"Err":28`; other drivers say the words.)"""
    text = body.decode("utf-8", "replace")
    return '"Err":28' in text.replace(" ", "") or "no space left on device" in text.lower()


def location(headers: http.client.HTTPMessage, what: str) -> str:
    loc = headers.get("Location") or ""
    parts = urlsplit(loc)
    if not parts.path.startswith("/v2/"):
        raise PushError(f"{what}: the registry gave no usable upload location ({loc!r})")
    return parts.path + (f"?{parts.query}" if parts.query else "")
