"""`registry-up --bundle`: a bundle's images into the registry over its HTTP API (distribution v2).

Facts -> plan -> apply, as everywhere in nodecfg:
1. facts: HEAD each image's tag (is it upstream's digest already? then the image is done: a second
   run sends nothing but these HEADs); for the others, HEAD each blob in each repository it goes to;
2. plan (pure, `plan_blobs`): per blob, nothing (every repository has it), a cross-repository mount
   (another of our repositories has it) or one upload then mounts;
3. apply: blob jobs `width` at a time, largest first, each streamed from the bundle file in place
   (`os.pread` at the member's offset, nothing unpacked) and sha256-checked while it streams: the
   last chunk is held back until the digest matches, so a corrupt blob never completes an upload
   (and the registry checks the digest of the PUT again). When the last blob of an image is in, its
   manifests go up by digest (children before the index), and its tag last: a half-pushed image is
   never tagged. An interrupted run leaves whole blobs, which the next run's HEADs skip.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

from nodecfg.bundle.layout import IndexEntry
from nodecfg.bundle.manifests import ACCEPT, Descriptor
from nodecfg.bundle.progress import human
from nodecfg.bundle.reader import Bundle
from nodecfg.bundle.remote import Connect
from nodecfg.errors import BundleError, HostError
from nodecfg.images import ImageRef, parse_ref
from nodecfg.inventory import Secret

WIDTH = 8  # blobs in flight (one SSH channel each): bench/registry_push.py found 8 ahead of 4 (docs/benchmarks.md)
CHUNK = 1 << 20
SMALL = 4 << 20
Progress = Callable[[str], None]


class PushError(HostError):
    """The registry refused or broke off a request; the message names the request, never a secret."""


class BlobSource(Protocol):
    """Where blob bytes are read from, in place: a bundle file, or the engine path's spool file."""

    path: Path

    def offset(self, digest: str) -> tuple[int, int]:
        """(offset, size) of the blob in the file at `path`."""
        ...


# ---------------------------------------------------------------------------------------------
# what to push (read from the bundle; pure once read)


@dataclass(frozen=True)
class ImagePush:
    entry: IndexEntry
    ref: ImageRef
    manifests: tuple[tuple[Descriptor, bytes], ...]  # children before their index; the top one last
    blobs: tuple[Descriptor, ...]  # configs and layers, each once

    @property
    def repo(self) -> str:
        return self.ref.path

    @property
    def top(self) -> Descriptor:
        return self.entry.descriptor

    @property
    def size(self) -> int:
        return sum(d.size for d in self.blobs) + sum(len(b) for _, b in self.manifests)


def images_to_push(bundle: Bundle, entries: Sequence[IndexEntry]) -> list[ImagePush]:
    """Each entry's manifests (read and digest-checked) and blobs (present, sizes checked)."""
    out = []
    for entry in entries:
        manifests: list[tuple[Descriptor, bytes]] = []
        blobs: dict[str, Descriptor] = {}
        for r in bundle.walk_from(entry.ref, entry.descriptor):
            if r.kind in ("index", "manifest"):
                manifests.append((r.descriptor, bundle.read_small(r.descriptor, f"{r.kind} of {r.ref}")))
            else:
                blobs.setdefault(r.descriptor.digest, r.descriptor)
        seen: set[str] = set()
        ordered = []
        for d, body in reversed(manifests):  # the walk is pre-order: reversed, children come first
            if d.digest not in seen:
                seen.add(d.digest)
                ordered.append((d, body))
        out.append(ImagePush(entry, parse_ref(entry.ref), tuple(ordered), tuple(blobs.values())))
    return out


@dataclass(frozen=True)
class BlobJob:
    """One blob: upload it to `upload_to` (unless `mount_from` has it: then mount it there), then
    mount it into each of `mount_to`."""

    descriptor: Descriptor
    first: str
    mount_from: str | None
    mount_to: tuple[str, ...]


def plan_blobs(images: Sequence[ImagePush], have: dict[tuple[str, str], bool]) -> list[BlobJob]:
    """`have[(repo, digest)]`: the registry's HEAD answers. Small blobs first (configs, small layers:
    milliseconds, and the small images are whole and tagged at once), then the largest first (they
    set the pace)."""
    needs: dict[str, list[str]] = {}
    descs: dict[str, Descriptor] = {}
    for img in images:
        for d in img.blobs:
            descs[d.digest] = d
            repos = needs.setdefault(d.digest, [])
            if img.repo not in repos:
                repos.append(img.repo)
    jobs = []
    for digest, repos in needs.items():
        missing = [r for r in repos if not have.get((r, digest))]
        if not missing:
            continue
        source = next((r for r in repos if have.get((r, digest))), None)
        jobs.append(BlobJob(descs[digest], missing[0], source, tuple(missing[1:])))
    return sorted(jobs, key=lambda j: (j.descriptor.size >= SMALL, -j.descriptor.size))


# ---------------------------------------------------------------------------------------------
# the HTTP side


def basic_auth(creds: tuple[str, Secret] | None) -> str | None:
    if creds is None:
        return None
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1].reveal()}".encode()).decode()


class RegistryAPI:
    """Thread-local keep-alive HTTP connections (one SSH channel each) to the registry."""

    def __init__(self, connect: Connect, auth: str | None) -> None:
        self._connect, self._auth = connect, auth
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

    def _answer(self, conn: http.client.HTTPConnection) -> tuple[int, http.client.HTTPMessage, bytes]:
        """The response to the request just sent; a connection the registry closes is let go."""
        resp = conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self._drop()
        return resp.status, resp.headers, data

    def call(self, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request; a dropped keep-alive connection is retried once on a new channel."""
        for attempt in (0, 1):
            try:
                conn = self._conn()
                conn.request(method, path, body=body or None, headers=self._headers(headers))
                return self._answer(conn)
            except (http.client.HTTPException, OSError) as exc:
                self._drop()
                if attempt:
                    raise _broke(method, path, exc) from None
        raise AssertionError("unreachable")

    def put_stream(self, path: str, size: int, chunks: Iterator[bytes]
                   ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """PUT a body of `size` bytes from `chunks`. If `chunks` raises (a corrupt blob), the channel
        is closed before the body is complete: the registry commits nothing."""
        conn = self._conn()
        try:
            conn.putrequest("PUT", path, skip_accept_encoding=True)
            for k, v in self._headers({"Content-Type": "application/octet-stream",
                                        "Content-Length": str(size)}).items():
                conn.putheader(k, v)
            conn.endheaders()
            for chunk in chunks:
                conn.send(chunk)
            return self._answer(conn)
        except (http.client.HTTPException, OSError) as exc:
            self._drop()
            raise _broke("PUT", path, exc) from None
        except BaseException:
            self._drop()
            raise


def _broke(method: str, path: str, exc: BaseException) -> PushError:
    return PushError(f"{method} {_short(path)}: the connection to the registry broke "
                     f"({exc or type(exc).__name__})")


def _short(path: str) -> str:
    return path.partition("?")[0]


def _refused(method: str, path: str, status: int, body: bytes) -> PushError:
    if status == 401:
        return PushError(f"the registry refused the credentials (401 on {method} {_short(path)}); "
                         "check registry.auth")
    detail = body.decode("utf-8", "replace").strip().replace("\n", " ")[:300]
    return PushError(f"the registry answered {status} to {method} {_short(path)}: {detail}")


def _location(headers: http.client.HTTPMessage, what: str) -> str:
    loc = headers.get("Location") or ""
    parts = urlsplit(loc)
    if not parts.path.startswith("/v2/"):
        raise PushError(f"{what}: the registry gave no usable upload location ({loc!r})")
    return parts.path + (f"?{parts.query}" if parts.query else "")


def verified_chunks(fd: int, offset: int, size: int, digest: str, what: str, path: Path,
                    on_bytes: Callable[[int], None]) -> Iterator[bytes]:
    """The blob's bytes from the bundle file, hashed as they go; the last chunk is only given out
    once the whole blob hashed to its digest (else a one-line BundleError)."""
    sha = hashlib.sha256()
    pos, held = 0, b""
    while pos < size:
        n = min(CHUNK, size - pos)
        data = os.pread(fd, n, offset + pos)
        if len(data) != n:
            raise BundleError(f"{path}: truncated: blob {digest} ({what}) ends early")
        sha.update(data)
        pos += n
        if held:
            yield held
            on_bytes(len(held))
        held = data
    got = "sha256:" + sha.hexdigest()
    if got != digest:
        raise BundleError(f"{path}: blob {digest} ({what}) is corrupt: its bytes hash to {got}; "
                          "nothing of it was committed to the registry")
    if held:
        yield held
        on_bytes(len(held))


# ---------------------------------------------------------------------------------------------
# apply


@dataclass
class PushStats:
    uploaded: list[str] = field(default_factory=list)  # digests sent over the wire
    uploaded_bytes: int = 0
    mounted: int = 0
    present: int = 0  # (repo, blob) pairs the registry had
    seconds: float = 0.0


@dataclass(frozen=True)
class ImageResult:
    push: ImagePush
    action: str  # pushed | skipped | failed
    seconds: float
    error: str = ""


class _Pusher:
    def __init__(self, bundle: BlobSource, api: RegistryAPI, progress: Progress, fd: int) -> None:
        self.bundle, self.api, self.progress, self.fd = bundle, api, progress, fd
        self.stats = PushStats()
        self.lock = threading.Lock()

    # facts
    def tag_digest(self, img: ImagePush) -> str:
        path = f"/v2/{img.repo}/manifests/{img.ref.tag}"
        status, headers, body = self.api.call("HEAD", path, headers={"Accept": ACCEPT})
        if status == 404:
            return ""
        if status != 200:
            raise _refused("HEAD", path, status, body)
        return headers.get("Docker-Content-Digest") or ""

    def has_blob(self, repo: str, digest: str) -> bool:
        path = f"/v2/{repo}/blobs/{digest}"
        status, _, body = self.api.call("HEAD", path)
        if status not in (200, 404):
            raise _refused("HEAD", path, status, body)
        return status == 200

    # blobs
    def run_job(self, job: BlobJob) -> None:
        d = job.descriptor
        where = job.first
        if job.mount_from is not None:
            loc = self._mount(job.first, d.digest, job.mount_from)
            if loc is not None:
                self._upload(job.first, d, loc)
        else:
            self._upload(job.first, d, None)
        for repo in job.mount_to:
            loc = self._mount(repo, d.digest, where)
            if loc is not None:
                self._upload(repo, d, loc)

    def _mount(self, repo: str, digest: str, source: str) -> str | None:
        """None when mounted; else the upload location the registry opened instead."""
        path = f"/v2/{repo}/blobs/uploads/?mount={quote(digest)}&from={quote(source)}"
        status, headers, body = self.api.call("POST", path)
        if status == 201:
            with self.lock:
                self.stats.mounted += 1
            return None
        if status != 202:
            raise _refused("POST", path, status, body)
        return _location(headers, f"{repo}: {digest}")

    def _upload(self, repo: str, d: Descriptor, loc: str | None) -> None:
        if loc is None:
            path = f"/v2/{repo}/blobs/uploads/"
            status, headers, body = self.api.call("POST", path)
            if status != 202:
                raise _refused("POST", path, status, body)
            loc = _location(headers, f"{repo}: {d.digest}")
        url = f"{loc}{'&' if '?' in loc else '?'}digest={quote(d.digest)}"
        offset, size = self.bundle.offset(d.digest)
        if size != d.size:
            raise BundleError(f"{self.bundle.path}: blob {d.digest} is {size} bytes, its manifest says {d.size}")
        if d.size >= CHUNK:
            self.progress(f"uploading {d.digest} ({human(d.size)}) to {repo}")
        chunks = verified_chunks(self.fd, offset, size, d.digest, f"in {repo}", self.bundle.path, lambda _n: None)
        status, _, body = self.api.put_stream(url, size, chunks)
        if status != 201:
            raise _refused("PUT", url, status, body)
        with self.lock:
            self.stats.uploaded.append(d.digest)
            self.stats.uploaded_bytes += d.size
        if d.size >= CHUNK:
            self.progress(f"sent {d.digest} to {repo}")

    # manifests, then the tag
    def finish(self, img: ImagePush) -> None:
        for d, body in img.manifests:
            if d.digest == img.top.digest:
                continue
            head = f"/v2/{img.repo}/manifests/{d.digest}"
            status, _, _ = self.api.call("HEAD", head, headers={"Accept": d.media_type})
            if status == 200:
                continue
            self._put_manifest(img.repo, d.digest, d, body)
        top_body = next(b for d, b in img.manifests if d.digest == img.top.digest)
        self._put_manifest(img.repo, img.ref.tag, img.top, top_body)
        self.progress(f"tagged {img.ref.target} ({img.top.digest})")

    def _put_manifest(self, repo: str, reference: str, d: Descriptor, body: bytes) -> None:
        path = f"/v2/{repo}/manifests/{reference}"
        status, headers, text = self.api.call("PUT", path, body, {"Content-Type": d.media_type})
        if status != 201:
            raise _refused("PUT", path, status, text)
        got = headers.get("Docker-Content-Digest")
        if got and got != d.digest:
            raise PushError(f"PUT {path}: the registry stored it as {got}, not {d.digest}")


def catalog(connect: Connect, creds: tuple[str, Secret] | None, width: int = WIDTH) -> dict[str, list[str]]:
    """The registry's repositories and their tags, over the same HTTP path (no extra SSH command)."""
    api = RegistryAPI(connect, basic_auth(creds))
    try:
        return catalog_of(api, width)
    finally:
        api.close()


def catalog_of(api: RegistryAPI, width: int = WIDTH) -> dict[str, list[str]]:
    status, _, body = api.call("GET", "/v2/_catalog?n=1000")
    if status != 200:
        raise _refused("GET", "/v2/_catalog", status, body)
    try:
        repos = [str(r) for r in json.loads(body).get("repositories") or []]
    except (ValueError, AttributeError):
        return {}

    def tags(repo: str) -> list[str]:
        status, _, body = api.call("GET", f"/v2/{repo}/tags/list")
        try:
            return sorted(json.loads(body).get("tags") or []) if status == 200 else []
        except (ValueError, AttributeError):
            return []

    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="catalog") as pool:
        return dict(zip(repos, pool.map(tags, repos), strict=True))


def tag_digests(api: RegistryAPI, images: Sequence[ImagePush], width: int = WIDTH) -> list[str]:
    """What each image's tag points at now ("" when it is not there)."""
    pusher = _Pusher(_NoBlobs(), api, lambda _m: None, -1)
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="tags") as pool:
        return list(pool.map(pusher.tag_digest, images))


class _NoBlobs:
    path = Path("-")

    def offset(self, digest: str) -> tuple[int, int]:
        raise AssertionError(f"no blob source for {digest}")


def _parallel(pool: ThreadPoolExecutor, fn: Callable[..., object], items: Sequence[object]) -> list[object]:
    return [f.result() for f in [pool.submit(fn, *(i if isinstance(i, tuple) else (i,))) for i in items]]


def push_bundle(bundle: Bundle, images: Sequence[ImagePush], connect: Connect,
                creds: tuple[str, Secret] | None, *, progress: Progress,
                width: int = WIDTH, tags: Sequence[str] | None = None) -> tuple[list[ImageResult], PushStats]:
    """Push `images` from `bundle`; a corrupt blob raises BundleError (after the jobs in flight end;
    images completed until then stay, tagged; none is tagged half-pushed). `tags`: what each
    image's tag points at, when already asked (`tag_digests`)."""
    started = time.monotonic()
    api = RegistryAPI(connect, basic_auth(creds))
    fd = os.open(bundle.path, os.O_RDONLY)
    pusher = _Pusher(bundle, api, progress, fd)
    pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="push")
    results: dict[str, ImageResult] = {}
    try:
        if tags is None:
            tags = [str(t) for t in _parallel(pool, pusher.tag_digest, images)]
        todo = []
        for img, tag in zip(images, tags, strict=True):
            if tag == img.top.digest:
                results[img.ref.target] = ImageResult(img, "skipped", 0.0)
            else:
                todo.append(img)
        pairs = list(dict.fromkeys((img.repo, d.digest) for img in todo for d in img.blobs))
        answers = _parallel(pool, pusher.has_blob, pairs)
        have = {p: bool(a) for p, a in zip(pairs, answers, strict=True)}
        pusher.stats.present = sum(have.values())
        jobs = plan_blobs(todo, have)
        if todo:
            progress(f"{len(todo)} image(s) to push: {len(jobs)} blob(s) the registry lacks, "
                     f"{human(sum(j.descriptor.size for j in jobs if j.mount_from is None))} to send")
        _run(pusher, pool, todo, jobs, results, started)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        api.close()
        os.close(fd)
    pusher.stats.seconds = time.monotonic() - started
    return [results[img.ref.target] for img in images], pusher.stats


def _run(pusher: _Pusher, pool: ThreadPoolExecutor, todo: Sequence[ImagePush], jobs: Sequence[BlobJob],
         results: dict[str, ImageResult], started: float) -> None:
    waiting = {img.ref.target: {d.digest for d in img.blobs} & {j.descriptor.digest for j in jobs}
               for img in todo}
    by_target = {img.ref.target: img for img in todo}
    running: dict[Future[None], tuple[str, str]] = {}  # future -> ("blob", digest) | ("image", target)
    failed_blobs: dict[str, str] = {}
    fatal: BaseException | None = None

    def submit_ready() -> None:
        for target, left in list(waiting.items()):
            if left:
                continue
            del waiting[target]
            bad = next((failed_blobs[d.digest] for d in by_target[target].blobs if d.digest in failed_blobs), None)
            if bad is not None:
                results[target] = ImageResult(by_target[target], "failed", time.monotonic() - started, bad)
            elif fatal is None:
                running[pool.submit(pusher.finish, by_target[target])] = ("image", target)

    for job in jobs:
        running[pool.submit(pusher.run_job, job)] = ("blob", job.descriptor.digest)
    submit_ready()
    while running:
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for fut in done:
            kind, key = running.pop(fut)
            exc = fut.exception()
            if exc is not None and not isinstance(exc, HostError) and fatal is None:
                fatal = exc  # a corrupt bundle (BundleError), an interrupt or a bug: stop queued work
                for other in running:
                    other.cancel()
            if kind == "blob":
                if exc is not None:
                    failed_blobs[key] = str(exc)
                for left in waiting.values():
                    left.discard(key)
            else:
                img = by_target[key]
                results[key] = ImageResult(img, "failed" if exc else "pushed", time.monotonic() - started,
                                           str(exc) if exc else "")
        running = {f: v for f, v in running.items() if not f.cancelled()}
        submit_ready()
    if fatal is not None:
        raise fatal
    for target, img in by_target.items():
        results.setdefault(target, ImageResult(img, "failed", time.monotonic() - started, "not pushed"))
