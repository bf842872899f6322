"""A small registry v2 HTTP API client: manifests and blobs, pull only.

- One keep-alive connection per host and thread; a connection the server closed is reopened once.
- Auth on demand: a 401 is answered (anonymous or ~/.docker/config.json bearer token, or Basic),
  the authorization cached per host and repository, and the request retried; an expired token
  (a 401 later on) is renewed the same way.
- Redirects (blob GETs land on CDNs and object stores) are followed; Authorization is never sent
  to another host.
- Blobs stream to `<digest>.part` files, sha256-checked before they take their final name; a
  `.part` left by an interrupted run is continued with a Range request.
- HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured (`proxy_for`), with the proxy's credentials
  from its URL; loopback never goes through a proxy.
- One TLS context for every https connection; `abort()` shuts down every connection in flight.

Why http.client and not urllib3 (installed with the docker SDK): the same client on urllib3 (its
pool, proxy tunnel and retry; branch history of issue 21) made `bundle create` 3-7% slower, over
HTTP and HTTPS alike, by urllib3's import and its per-request work (docs/benchmarks.md, "bundle
create: http.client or urllib3"). What is hand-written here is the part above; the proxy, keep-alive
and TLS mechanics are http.client's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import socket
import ssl
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from nodecfg import __version__
from nodecfg.bundle import auth
from nodecfg.bundle.manifests import ACCEPT, MAX_MANIFEST, Descriptor, media_type_of, sha256_digest
from nodecfg.bundle.sources import DOCKER_HUB_API, Endpoint, is_loopback
from nodecfg.errors import FetchError

CHUNK = 256 << 10
_RETRIES = 3
_REDIRECTS = 5
_TRANSIENT = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as served: the digest is the sha256 of `body`."""

    media_type: str
    body: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.body)

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.body))


class RegistryClient:
    def __init__(self, *, timeout: float = 60.0,
                 auths: Callable[[], Mapping[str, auth.Credentials]] = auth.load_docker_auths) -> None:
        self._timeout = timeout
        self._load_auths = auths
        self._auths: Mapping[str, auth.Credentials] | None = None
        self._authz: dict[tuple[str, str], str] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self._aborted = threading.Event()
        self._context: ssl.SSLContext | None = None

    # -- public -------------------------------------------------------------------------------

    def get_manifest(self, ep: Endpoint, repo: str, reference: str, *, what: str) -> Manifest:
        """The manifest or index for a tag or digest; a digest reference is checked against the
        bytes served."""
        url = ep.url(ep.repository(repo), "manifests", reference)
        resp = self._request(url, {"Accept": ACCEPT}, ep, repo, what)
        try:
            self._expect(resp, (200,), ep, what)
            body = resp.read(MAX_MANIFEST + 1)
        except _TRANSIENT as exc:
            raise FetchError(f"{what}: reading the manifest from {ep} failed: {_reason(exc)}") from None
        finally:
            self._release(resp)
        if len(body) > MAX_MANIFEST:
            raise FetchError(f"{what}: the manifest from {ep} is larger than {MAX_MANIFEST >> 20} MiB")
        try:
            media_type = media_type_of(body, resp.getheader("Content-Type") or "")
        except ValueError as exc:
            raise FetchError(f"{what}: {ep} served {exc}") from None
        manifest = Manifest(media_type, body)
        if reference.startswith("sha256:") and manifest.digest != reference:
            raise FetchError(f"{what}: {ep} served a manifest whose digest is {manifest.digest}, not {reference}")
        return manifest

    def fetch_blob(self, ep: Endpoint, repo: str, desc: Descriptor, dest: Path,
                   on_bytes: Callable[[int], None], *, what: str) -> int:
        """Download a blob to `dest` (atomically, verified); returns the bytes sent over the
        network. A `.part` file from an earlier run is continued; a dropped connection resumes.
        `on_bytes(n)` advances a progress count (negative when a transfer starts over)."""
        part = dest.with_name(dest.name + ".part")
        shown = 0

        def at(position: int) -> None:
            nonlocal shown
            on_bytes(position - shown)
            shown = position

        fetched = [0]  # over the network, in every attempt
        for attempt in range(1, _RETRIES + 1):
            try:
                self._fetch_blob_once(ep, repo, desc, dest, part, at, fetched, what)
                return fetched[0]
            except _TRANSIENT as exc:
                if self._aborted.is_set():
                    raise FetchError(f"{what}: interrupted") from None
                if attempt == _RETRIES:
                    raise FetchError(f"{what}: download from {ep} failed {_RETRIES} times: {_reason(exc)}") from None
        raise AssertionError("unreachable")

    def abort(self) -> None:
        """Unblock every transfer in flight (Ctrl-C): their sockets are shut down."""
        self._aborted.set()
        with self._lock:
            for conn in list(self._open):
                if conn.sock is not None:
                    with contextlib.suppress(OSError):
                        conn.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()

    # -- blobs --------------------------------------------------------------------------------

    def _fetch_blob_once(self, ep: Endpoint, repo: str, desc: Descriptor, dest: Path, part: Path,
                         at: Callable[[int], None], fetched: list[int], what: str) -> None:
        sha, have = hashlib.sha256(), 0
        if part.exists():
            with part.open("rb") as f:
                while have <= desc.size and (block := f.read(1 << 20)):
                    sha.update(block)
                    have += len(block)
            if have >= desc.size:  # complete (a crash before the rename) or too long: check, or start over
                if have == desc.size and "sha256:" + sha.hexdigest() == desc.digest:
                    part.replace(dest)
                    at(have)
                    return
                sha, have = hashlib.sha256(), 0
        at(have)
        headers = {"Range": f"bytes={have}-"} if have else {}
        resp = self._request(ep.url(ep.repository(repo), "blobs", desc.digest), headers, ep, repo, what)
        try:
            self._expect(resp, (200, 206), ep, what)
            if resp.status == 200 or not _range_starts_at(resp.getheader("Content-Range"), have):
                sha, have = hashlib.sha256(), 0
                at(0)
            with part.open("r+b" if have else "wb", buffering=0) as out:
                out.seek(have)
                out.truncate()
                while chunk := resp.read1(CHUNK):
                    if have + len(chunk) > desc.size:
                        raise FetchError(f"{what}: {ep} sent more than the {desc.size} bytes of {desc.digest}")
                    out.write(chunk)
                    sha.update(chunk)
                    have += len(chunk)
                    fetched[0] += len(chunk)
                    at(have)
                if have < desc.size:
                    raise http.client.IncompleteRead(b"", desc.size - have)
                os.fsync(out.fileno())
        finally:
            self._release(resp)
        if "sha256:" + sha.hexdigest() != desc.digest:
            part.unlink()
            raise FetchError(f"{what}: blob {desc.digest} from {ep} does not match its digest "
                             f"(the bytes hash to sha256:{sha.hexdigest()})")
        part.replace(dest)

    # -- HTTP ---------------------------------------------------------------------------------

    def _request(self, url: str, headers: Mapping[str, str], ep: Endpoint, repo: str,
                 what: str) -> http.client.HTTPResponse:
        """GET with redirects and auth: each host met (registry.k8s.io redirects to regional
        registries that challenge again) gets one 401 answered per request; its authorization is
        cached per host and repository and sent to that host only."""
        renewed: set[str] = set()
        for _ in range(_REDIRECTS + 3):
            parts = urlsplit(url)
            key = (parts.netloc, repo)
            sent = dict(headers)
            with self._lock:
                authz = self._authz.get(key)
            if authz:
                sent["Authorization"] = authz
            resp = self._get(url, sent, what)
            if resp.status == 401 and parts.netloc not in renewed:
                challenge = auth.parse_challenge(resp.getheader("WWW-Authenticate") or "")
                resp.read(1 << 16)
                self._release(resp)
                where = str(ep) if parts.netloc == ep.netloc else f"{parts.scheme}://{parts.netloc}"
                authz = self._authorize(challenge, parts.netloc, where, ep.repository(repo), what)
                with self._lock:
                    self._authz[key] = authz
                renewed.add(parts.netloc)
                continue
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                resp.read(1 << 16)
                self._release(resp)
                url = urljoin(url, resp.getheader("Location") or "")
                continue
            return resp
        raise FetchError(f"{what}: too many redirects from {ep}")

    def _authorize(self, challenge: auth.Challenge | None, netloc: str, where: str, repository: str,
                   what: str) -> str:
        """The Authorization for a host that answered 401: Basic credentials, or a bearer token
        from its token server (asked with the host's credentials when there are some)."""
        creds = self._credentials(netloc)
        if challenge is None or challenge.scheme not in ("bearer", "basic"):
            raise FetchError(f"{what}: {where} answered 401 without a Bearer or Basic challenge")
        if challenge.scheme == "basic":
            if creds is None:
                raise FetchError(f"{what}: {where} asks for a login (401, Basic); run `docker login {netloc}`")
            return creds.basic()
        try:
            url = auth.token_url(challenge, repository)
        except ValueError as exc:
            raise FetchError(f"{what}: {exc}") from None
        headers = {"Authorization": creds.basic()} if creds else {}
        resp = self._get(url, headers, what)
        try:
            body = resp.read(1 << 20)
        finally:
            self._release(resp)
        if resp.status != 200:
            who = f"the credentials for {netloc} from {auth.docker_config_path()}" if creds else "an anonymous token"
            raise FetchError(f"{what}: the token server {urlsplit(url).netloc} refused {who} "
                             f"(HTTP {resp.status}{_error_code(body)})")
        try:
            return "Bearer " + auth.token_from(body)
        except ValueError as exc:
            raise FetchError(f"{what}: {exc} ({urlsplit(url).netloc})") from None

    def _credentials(self, netloc: str) -> auth.Credentials | None:
        with self._lock:
            if self._auths is None:
                self._auths = self._load_auths()
            return auth.credentials_for(self._auths, netloc)

    def _get(self, url: str, headers: Mapping[str, str], what: str) -> http.client.HTTPResponse:
        """One GET on this thread's connection to the URL's host; a stale keep-alive connection
        is reopened once."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sent = {"User-Agent": f"nodecfg/{__version__}", **headers}
        for attempt in (1, 2):
            conn, forward = self._connection(parts.scheme, parts.netloc)
            reused = getattr(conn, "_nodecfg_used", False)
            try:
                if forward is None:
                    conn.request("GET", target, headers=sent)
                else:  # plain HTTP through a proxy: the absolute URL, and the proxy's credentials
                    conn.request("GET", url, headers={**sent, **forward})
                resp = conn.getresponse()
            except _TRANSIENT as exc:
                self._drop(parts.scheme, parts.netloc)
                if self._aborted.is_set():
                    raise FetchError(f"{what}: interrupted") from None
                if attempt == 1 and reused:
                    continue
                proxy = proxy_for(parts.scheme, parts.netloc)
                via = f" through the proxy {proxy[0]}" if proxy else ""
                raise FetchError(f"{what}: cannot reach {parts.scheme}://{parts.netloc}{via}: "
                                 f"{_reason(exc)}") from None
            conn._nodecfg_used = True  # type: ignore[attr-defined]
            resp._nodecfg_key = (parts.scheme, parts.netloc)  # type: ignore[attr-defined]
            return resp
        raise AssertionError("unreachable")

    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, dict[str, str] | None]:
        """This thread's connection to the host, and the headers for a proxy that forwards plain
        HTTP (None when the request goes straight, or through a CONNECT tunnel)."""
        conns: dict[tuple[str, str], tuple[http.client.HTTPConnection, dict[str, str] | None]]
        conns = self._local.__dict__.setdefault("conns", {})
        if (scheme, netloc) in conns:
            return conns[(scheme, netloc)]
        proxy = proxy_for(scheme, netloc)
        forward = None
        if scheme == "https":
            if proxy:
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    proxy[0], timeout=self._timeout, context=self._tls())
                conn.set_tunnel(netloc, headers=proxy[1])
            else:
                conn = http.client.HTTPSConnection(netloc, timeout=self._timeout, context=self._tls())
        elif proxy:
            conn, forward = http.client.HTTPConnection(proxy[0], timeout=self._timeout), proxy[1]
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self._timeout)
        conns[(scheme, netloc)] = (conn, forward)
        with self._lock:
            self._open.add(conn)
        return conn, forward

    def _tls(self) -> ssl.SSLContext:
        """One TLS context for every https connection (loading the system's CAs is its cost)."""
        with self._lock:
            if self._context is None:
                self._context = ssl.create_default_context()
            return self._context

    def _release(self, resp: http.client.HTTPResponse) -> None:
        """Done with a response: a body read to its end leaves the connection reusable; any
        other is closed with its connection (the unread rest would be read as the next answer)."""
        if not resp.isclosed():
            resp.close()
            self._drop(*getattr(resp, "_nodecfg_key", ("", "")))

    def _drop(self, scheme: str, netloc: str) -> None:
        conns = self._local.__dict__.get("conns", {})
        found = conns.pop((scheme, netloc), None)
        if found:
            found[0].close()
            with self._lock:
                self._open.discard(found[0])

    @staticmethod
    def _expect(resp: http.client.HTTPResponse, ok: tuple[int, ...], ep: Endpoint, what: str) -> None:
        if resp.status in ok:
            return
        body = resp.read(1 << 16)
        code = _error_code(body)
        if resp.status in (401, 403):
            hint = " (Docker Hub also says this for a repository that does not exist)" \
                if ep.netloc == DOCKER_HUB_API else ""
            raise FetchError(f"{what}: access denied by {ep} (HTTP {resp.status}{code}){hint}")
        if resp.status == 404:
            raise FetchError(f"{what}: not found at {ep} (HTTP 404{code})")
        if resp.status == 429:
            raise FetchError(f"{what}: {ep} is rate-limiting pulls (HTTP 429{code}); "
                             "`docker login`, or fetch through a mirror (bundle.sources)")
        raise FetchError(f"{what}: {ep} answered HTTP {resp.status} {resp.reason}{code}")


def _range_starts_at(content_range: str | None, start: int) -> bool:
    """Does `Content-Range: bytes START-END/TOTAL` start where the .part file ends?"""
    if not content_range or not content_range.startswith("bytes "):
        return False
    first = content_range[6:].partition("-")[0]
    return first.isdigit() and int(first) == start


def _error_code(body: bytes) -> str:
    """`: CODE` from a registry's JSON error body ({"errors": [{"code": ...}]}), else ''."""
    try:
        errors = json.loads(body).get("errors") or []
        return f": {errors[0]['code']}" if errors else ""
    except (ValueError, AttributeError, LookupError, TypeError, UnicodeDecodeError):
        return ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); set SSL_CERT_FILE for a private CA"
    if isinstance(exc, socket.gaierror):
        return "unknown host name"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def proxy_for(scheme: str, netloc: str) -> tuple[str, dict[str, str]] | None:
    """(proxy host:port, its Proxy-Authorization header) from the *_PROXY environment for a
    request to scheme://netloc; None when NO_PROXY spares the host, and always for loopback."""
    url = urllib.request.getproxies().get(scheme)
    if not url or is_loopback(netloc) or urllib.request.proxy_bypass(netloc):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    headers: dict[str, str] = {}
    if parts.username is not None:
        raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
    host = parts.hostname or ""
    return f"{host}:{parts.port or 80}", headers
