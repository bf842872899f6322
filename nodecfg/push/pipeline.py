"""The one push: a source's images into a registry over its HTTP API (distribution v2).

Facts -> plan -> apply, as everywhere in nodecfg; the same for every source (`source.py`):
1. facts: each image's tag (is it this image already? then nothing of it is sent: an unchanged
   re-run asks only this, often before the push even starts: `tags`); for the others, HEAD each of
   their blobs in each repository they go to;
2. plan (pure, `plan_blobs`): per blob, nothing (every repository has it), a cross-repository mount
   (another repository has it: no bytes move), or one upload of bytes the source gives, then mounts;
3. apply: the mounts at once and each upload as soon as the source yields its bytes, `width` in
   flight. When the last blob of an image is in, its manifests go up by digest (children before
   the index) and its tag last: a half-pushed image is never tagged. An interrupted run leaves whole
   blobs, which the next run's HEADs skip.
A blob the registry refuses fails the images that need it, not the run; a source that breaks (a
corrupt bundle, docker save failing) stops what is queued, lets what is in flight end, and is raised.

Space: before anything is sent, `fits(bytes)` is told what the uploads will write (the source's
`sizes` of the blobs the registry lacks everywhere; mounts and blobs it has cost nothing) and may
refuse (registry/up.py compares it with the free space under the data directory). A registry
that still runs out (another writer) answers ENOSPC: the push stops there and fails in one line,
"no space left on <where>", and every upload this run opened and did not finish is cancelled
(DELETE on its location: distribution removes its `_uploads/` directory), so the partial uploads
go and the disk holds only whole blobs.

With a `copier` (registry replicas on their own disks: registry/up.py), the blobs to upload are not
read from the source here: the copier has the target's host copy them from another registry inside
the site, and says per blob what it copied; mounts, manifests and tags go as above, so the bytes
never cross the operator's link twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

from nodecfg.bundle.manifests import Descriptor
from nodecfg.bundle.progress import human
from nodecfg.errors import HostError
from nodecfg.push.api import WIDTH, NoSpaceError, PushError, RegistryAPI, TagState, Target, location, refused
from nodecfg.push.source import Blob, Source, SourceImage

CHUNK = 1 << 20
Outcome = Literal["pushed", "skipped", "failed"]
Progress = Callable[[str], None]
Copier = Callable[[Sequence["BlobJob"]], Mapping[str, "int | str"]]  # digest -> its size, or why not copied


@dataclass(frozen=True)
class BlobJob:
    """One blob: into `first` (by mounting it from `mount_from`, else uploading the source's bytes),
    then mounted into each of `mount_to`."""

    digest: str
    first: str
    mount_from: str | None
    mount_to: tuple[str, ...]


def plan_blobs(images: Sequence[SourceImage], have: Mapping[tuple[str, str], int | None]) -> list[BlobJob]:
    """From the registry's answers (`have[(repo, digest)]`: the blob's size there, None when absent),
    what each blob needs: nothing, mounts, or an upload then mounts. Mounts first (no bytes)."""
    needs: dict[str, list[str]] = {}
    for img in images:
        for digest in img.blobs:
            repos = needs.setdefault(digest, [])
            if img.repo not in repos:
                repos.append(img.repo)
    jobs = []
    for digest, repos in needs.items():
        missing = [r for r in repos if have.get((r, digest)) is None]
        if missing:
            source = next((r for r in repos if have.get((r, digest)) is not None), None)
            jobs.append(BlobJob(digest, missing[0], source, tuple(missing[1:])))
    return sorted(jobs, key=lambda j: j.mount_from is None)


@dataclass
class PushStats:
    uploaded: list[str] = field(default_factory=list)  # digests sent over the wire
    uploaded_bytes: int = 0
    mounted: int = 0
    present: int = 0  # (repo, blob) pairs the registry had
    needed: int = 0  # bytes the uploads were expected to write (the source's sizes)
    cancelled: int = 0  # unfinished uploads cancelled at the end (a full disk, a broken source)
    stuck: list[tuple[str, str]] = field(default_factory=list)  # (repository, upload id) the registry kept
    copied: list[str] = field(default_factory=list)  # digests a copier copied inside the site
    copied_bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ImageResult:
    image: SourceImage
    outcome: Outcome
    seconds: float
    error: str = ""
    digest: str = ""  # pushed: the tagged manifest's digest


def push(source: Source, target: Target, *, progress: Progress, width: int = WIDTH,
         tags: Sequence[TagState] | None = None, copier: Copier | None = None,
         fits: Callable[[int], None] | None = None, space: str = "") -> tuple[list[ImageResult], PushStats]:
    """Push the source's images into `target`; `tags`: what each image's tag points at, when
    already asked (`api.tag_states`); `copier`: the blobs come from elsewhere; `fits`: told the
    bytes the uploads will write before any is sent, may raise; `space`: where the registry's
    storage is, for the message of a full disk (the docstring above)."""
    images = source.images()
    started = time.monotonic()
    api = target.api()
    pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="push")
    run = _Run(source, api, pool, progress, started, copier, space)
    try:
        if tags is None:
            tags = list(pool.map(api.tag_state, [img.ref for img in images]))
        todo = []
        for img, tag in zip(images, tags, strict=True):
            if img.current(tag):
                run.results[img.ref.target] = ImageResult(img, "skipped", 0.0)
            else:
                todo.append(img)
        if todo and copier is None:
            source.prepare(todo)
        if todo:
            pairs = list(dict.fromkeys((img.repo, d) for img in todo for d in img.blobs))
            have = dict(zip(pairs, pool.map(lambda p: api.blob_size(*p), pairs), strict=True))
            run.stats.present = sum(s is not None for s in have.values())
            jobs = plan_blobs(todo, have)
            sizes = source.sizes(todo)
            run.stats.needed = upload_bytes(jobs, sizes)
            if fits is not None:
                fits(run.stats.needed)
            run.go(todo, jobs, have)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        api.close()
    run.stats.seconds = time.monotonic() - started
    return [run.results[img.ref.target] for img in images], run.stats


def needed(source: Source, api: RegistryAPI | None, width: int = WIDTH) -> int:
    """What a push of the source's images into the registry behind `api` would write (registry-up
    --check): the blobs of the images whose tag is not them yet, less those the registry has (None:
    a registry that is not up yet has none)."""
    images = source.images()
    if api is None:
        todo, have = list(images), {}
    else:
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="needed") as pool:
            tags = list(pool.map(api.tag_state, [img.ref for img in images]))
            todo = [img for img, tag in zip(images, tags, strict=True) if not img.current(tag)]
            pairs = list(dict.fromkeys((img.repo, d) for img in todo for d in img.blobs))
            have = dict(zip(pairs, pool.map(lambda p: api.blob_size(*p), pairs), strict=True))
    return upload_bytes(plan_blobs(todo, have), source.sizes(todo)) if todo else 0


class NoSpaceLeft(HostError):
    """The push stopped on a full disk: `cancelled` uploads were cancelled, `stuck` ones (repository,
    upload id) the registry would not cancel, for its host to remove; `repos`: the repositories the
    push wrote to (an upload whose opening failed on the full disk left a directory there without
    telling its id)."""

    def __init__(self, message: str, cancelled: int, stuck: tuple[tuple[str, str], ...],
                 repos: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.cancelled, self.stuck, self.repos = cancelled, stuck, repos


def upload_of(loc: str) -> tuple[str, str] | None:
    """(repository, upload id) of an upload location `/v2/<repo>/blobs/uploads/<id>?...`."""
    path = loc.partition("?")[0]
    head, sep, upload = path.rpartition("/blobs/uploads/")
    if not sep or not head.startswith("/v2/") or not upload or "/" in upload:
        return None
    return head[len("/v2/"):], upload


BLOB_OVERHEAD = 8 << 10  # bytes a blob costs the registry's filesystem beyond its own: link files, blocks


def upload_bytes(jobs: Sequence[BlobJob], sizes: Mapping[str, int]) -> int:
    """What the uploads of `jobs` write into the registry's storage: each blob to upload once (its
    source size and BLOB_OVERHEAD); a mount writes only a link."""
    return sum(sizes.get(j.digest, 0) + BLOB_OVERHEAD for j in jobs if j.mount_from is None)


class _Run:
    """One push's apply: jobs, which images wait for which blobs, and what failed."""

    def __init__(self, source: Source, api: RegistryAPI, pool: ThreadPoolExecutor, progress: Progress,
                 started: float, copier: Copier | None = None, space: str = "") -> None:
        self.source, self.api, self.pool, self.progress, self.started = source, api, pool, progress, started
        self.copier, self.space = copier, space
        self.opened: set[str] = set()  # upload locations this run opened and has not finished
        self.stats = PushStats()
        self.results: dict[str, ImageResult] = {}
        self.lock = threading.Lock()
        self.sizes: dict[str, int] = {}
        self.waiting: dict[str, set[str]] = {}  # image target -> blobs not in yet
        self.images: dict[str, SourceImage] = {}
        self.failed_blobs: dict[str, str] = {}
        self.fatal: BaseException | None = None
        self.outstanding = 0
        self.feeding = True
        self.idle = threading.Event()

    # scheduling

    def _submit(self, fn: object, *args: object) -> None:
        with self.lock:
            if self.fatal is not None:
                return
            self.outstanding += 1
            self.idle.clear()
        fut: Future[None] = self.pool.submit(fn, *args)  # type: ignore[arg-type]
        fut.add_done_callback(self._done)

    def _done(self, _fut: Future[None]) -> None:
        with self.lock:
            self.outstanding -= 1
            if self.outstanding == 0 and not self.feeding:
                self.idle.set()

    def _stop(self, exc: BaseException) -> None:
        """A source that broke, a full disk, an interrupt or a bug: nothing more is started."""
        with self.lock:
            if self.fatal is None:
                self.fatal = exc

    def _cancel_open(self) -> None:
        """Every upload this run opened and did not finish, cancelled: the registry removes its
        partial data (`_uploads/`). One it refuses to cancel (distribution does, once part of the
        body was written: the upload's state no longer matches its size) is left in `stuck`, for
        the registry's host to remove (registry/up.py)."""
        with self.lock:
            left, self.opened = sorted(self.opened), set()
        for loc in left:
            try:
                status, _, body = self.api.call("DELETE", loc)
            except HostError:
                status, body = 0, b""
            if status in (202, 204) or (status == 404 and b"BLOB_UPLOAD_UNKNOWN" in body):
                self.stats.cancelled += 1
            elif (stuck := upload_of(loc)) is not None:
                self.stats.stuck.append(stuck)

    def _no_space(self) -> NoSpaceLeft:
        where = self.space or "the registry's storage"
        return NoSpaceLeft(f"no space left on {where} (the registry answered ENOSPC); the push stopped",
                           self.stats.cancelled, tuple(self.stats.stuck),
                           tuple(sorted({img.repo for img in self.images.values()})))

    def _blob_done(self, digest: str, error: str) -> None:
        ready = []
        with self.lock:
            if error:
                self.failed_blobs.setdefault(digest, error)
            for target, left in list(self.waiting.items()):
                left.discard(digest)
                if not left:
                    del self.waiting[target]
                    ready.append(self.images[target])
        for img in ready:
            self._release(img)

    def _release(self, img: SourceImage) -> None:
        bad = next((self.failed_blobs[d] for d in img.blobs if d in self.failed_blobs), None)
        if bad is not None:
            self._result(img, "failed", bad)
        else:
            self._submit(self._finish, img)

    def _result(self, img: SourceImage, outcome: Outcome, error: str = "", digest: str = "") -> None:
        with self.lock:
            self.results[img.ref.target] = ImageResult(img, outcome, time.monotonic() - self.started, error, digest)

    def go(self, todo: Sequence[SourceImage], jobs: Sequence[BlobJob], have: Mapping[tuple[str, str], int | None]
           ) -> None:
        self.sizes = {d: s for (_, d), s in have.items() if s is not None}
        planned = {j.digest for j in jobs}
        for img in todo:
            self.images[img.ref.target] = img
            self.waiting[img.ref.target] = set(img.blobs) & planned
        uploads = {j.digest: j for j in jobs if j.mount_from is None}
        if jobs:
            how = "to copy inside the site" if self.copier is not None else "to send"
            self.progress(f"{len(todo)} image(s) to push: {len(jobs)} blob(s) the registry lacks, "
                          f"{len(uploads)} {how}, {len(jobs) - len(uploads)} to mount")
        for j in jobs:
            if j.mount_from is not None:
                self._submit(self._blob_job, j, None)
        for target in [t for t, left in self.waiting.items() if not left]:
            del self.waiting[target]
            self._release(self.images[target])
        if self.copier is not None:
            self._copy(uploads)
            uploads = {}
        given: set[str] = set()
        try:
            for blob in self.source.blobs(todo, set(uploads)) if uploads else ():
                if self.fatal is not None:
                    break
                if blob.digest in uploads and blob.digest not in given:
                    given.add(blob.digest)
                    self._submit(self._blob_job, uploads[blob.digest], blob)
        except BaseException as exc:  # noqa: BLE001 -- re-raised below, once what is in flight has ended
            self._stop(exc)
        if self.fatal is None:
            for digest in set(uploads) - given:
                self._blob_done(digest, self.source.missing(digest))
        with self.lock:
            self.feeding = False
            if self.outstanding == 0:
                self.idle.set()
        self.idle.wait()
        if self.opened:
            self._cancel_open()
        if isinstance(self.fatal, NoSpaceError):
            raise self._no_space()
        if self.fatal is not None:
            raise self.fatal
        for target, img in self.images.items():
            if target not in self.results:
                self._result(img, "failed", "not pushed")

    def _copy(self, uploads: Mapping[str, BlobJob]) -> None:
        """The copier's run (one step on the target's host), then each copied blob mounted where else it goes."""
        if not uploads:
            return
        assert self.copier is not None
        try:
            copied = self.copier(list(uploads.values()))
        except HostError as exc:
            copied = {d: str(exc) for d in uploads}
        for digest, job in uploads.items():
            got = copied.get(digest, "not copied")
            if isinstance(got, str):
                self._blob_done(digest, got)
                continue
            with self.lock:
                self.sizes[digest] = got
                self.stats.copied.append(digest)
                self.stats.copied_bytes += got
            self._submit(self._spread, job)

    def _spread(self, job: BlobJob) -> None:
        """A blob in its first repository: mounted into the others."""
        try:
            for repo in job.mount_to:
                if self._mount(repo, job.digest, job.first) is not None:
                    raise PushError(f"{repo}: the registry would not mount {job.digest} from {job.first}")
        except HostError as exc:
            self._blob_done(job.digest, str(exc))
            return
        self._blob_done(job.digest, "")

    # jobs (in the pool)

    def _blob_job(self, job: BlobJob, blob: Blob | None) -> None:
        try:
            self._blob(job, blob)
        except NoSpaceError as exc:  # a full disk: nothing more can go in
            self._stop(exc)
            self._blob_done(job.digest, str(exc))
            return
        except HostError as exc:
            self._blob_done(job.digest, str(exc))
            return
        except BaseException as exc:  # noqa: BLE001 -- a corrupt source or a bug: go() raises it
            self._stop(exc)
            self._blob_done(job.digest, str(exc) or type(exc).__name__)
            return
        self._blob_done(job.digest, "")

    def _blob(self, job: BlobJob, blob: Blob | None) -> None:
        if job.mount_from is not None:
            loc = self._mount(job.first, job.digest, job.mount_from)
            if loc is not None:  # the registry opened an upload instead: a mount needs the bytes
                raise PushError(f"{job.first}: the registry would not mount {job.digest} from {job.mount_from}")
        else:
            assert blob is not None
            self._upload(job.first, blob, None)
        for repo in job.mount_to:
            loc = self._mount(repo, job.digest, job.first)
            if loc is not None and blob is not None:
                self._upload(repo, blob, loc)
            elif loc is not None:
                raise PushError(f"{repo}: the registry would not mount {job.digest} from {job.first}")

    def _mount(self, repo: str, digest: str, source: str) -> str | None:
        """None when mounted; else the upload location the registry opened instead."""
        path = f"/v2/{repo}/blobs/uploads/?mount={quote(digest)}&from={quote(source)}"
        status, headers, body = self.api.call("POST", path)
        if status == 201:
            with self.lock:
                self.stats.mounted += 1
            return None
        if status != 202:
            raise refused("POST", path, status, body)
        loc = location(headers, f"{repo}: {digest}")
        with self.lock:
            self.opened.add(loc)
        return loc

    def _upload(self, repo: str, blob: Blob, loc: str | None) -> None:
        if loc is None:
            path = f"/v2/{repo}/blobs/uploads/"
            status, headers, body = self.api.call("POST", path)
            if status != 202:
                raise refused("POST", path, status, body)
            loc = location(headers, f"{repo}: {blob.digest}")
            with self.lock:
                self.opened.add(loc)
        url = f"{loc}{'&' if '?' in loc else '?'}digest={quote(blob.digest)}"
        if blob.size >= CHUNK:
            self.progress(f"uploading {blob.digest} ({human(blob.size)}) to {repo}")
        status, _, body = self.api.put_stream(url, blob.size, blob.chunks())
        if status != 201:
            raise refused("PUT", url, status, body)
        with self.lock:
            self.opened.discard(loc)
            self.stats.uploaded.append(blob.digest)
            self.stats.uploaded_bytes += blob.size
            self.sizes[blob.digest] = blob.size
        if blob.size >= CHUNK:
            self.progress(f"sent {blob.digest} to {repo}")

    def _finish(self, img: SourceImage) -> None:
        """The image's manifests (children by digest, when the registry lacks them), then its tag."""
        try:
            with self.lock:
                sizes = dict(self.sizes)
            manifests = self.source.manifests(img, sizes)
            *children, (top, top_body) = manifests
            for d, body in children:
                status, _, _ = self.api.call("HEAD", f"/v2/{img.repo}/manifests/{d.digest}",
                                             headers={"Accept": d.media_type})
                if status != 200:
                    self._put_manifest(img.repo, d.digest, d, body)
            self._put_manifest(img.repo, img.ref.tag, top, top_body)
        except NoSpaceError as exc:
            self._stop(exc)
            self._result(img, "failed", str(exc))
            return
        except HostError as exc:
            self._result(img, "failed", str(exc))
            return
        except BaseException as exc:  # noqa: BLE001 -- a bug: go() raises it
            self._stop(exc)
            self._result(img, "failed", str(exc) or type(exc).__name__)
            return
        self._result(img, "pushed", digest=top.digest)
        self.progress(f"tagged {img.ref.target} ({top.digest})")

    def _put_manifest(self, repo: str, reference: str, d: Descriptor, body: bytes) -> None:
        path = f"/v2/{repo}/manifests/{reference}"
        status, headers, text = self.api.call("PUT", path, body, {"Content-Type": d.media_type})
        if status != 201:
            raise refused("PUT", path, status, text)
        got = headers.get("Docker-Content-Digest")
        if got and got != d.digest:
            raise PushError(f"PUT {path}: the registry stored it as {got}, not {d.digest}")
