"""`registry-up` from this machine's Docker engine: `docker save` read as a stream, its blobs sent
straight to the registry's HTTP API through the master's SSH connection (the same upload as
`registry-up --bundle`, nodecfg/bundle/push.py). Nothing is loaded, tagged or pushed by the
master's docker.

What the engine knows without a save decides almost everything:
- an image's id IS its config blob's digest, and its `RootFS.Layers` (diff ids) ARE the digests of
  the layers as `docker save` writes them (uncompressed tars: the sha256 of the tar is the diff id);
- so the registry is asked first (facts): each tag's manifest (its config digest equal to the
  image id: the image is there, nothing else is asked), then each blob of the others by HEAD;
- only images with a blob the registry lacks everywhere are saved, all in ONE `docker save` call
  (shared layers once), read as a tar stream; each wanted blob is spooled to a temp file while it
  is hashed and its upload starts at once, `width` at a time, while the stream goes on;
- the manifest (docker schema 2, layers uncompressed: `application/vnd.docker.image.rootfs.diff.tar`,
  which docker 20.10+, containerd 1.6+ and podman pull) goes up when its blobs are in, by tag: a
  half-pushed image is never tagged.

Layers go up as the engine holds them, uncompressed: the engine keeps no compressed copy, so
upstream digests are lost on this path (the bundle path keeps them), and compressing here would
cost more CPU time than the bytes it saves take on the wire (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodecfg.bundle.layout import IndexEntry
from nodecfg.bundle.manifests import DOCKER_MANIFEST, OCI_MANIFEST, Descriptor
from nodecfg.bundle.push import (
    CHUNK,
    WIDTH,
    BlobJob,
    ImagePush,
    PushError,
    PushStats,
    RegistryAPI,
    _Pusher,
    _refused,
    basic_auth,
)
from nodecfg.bundle.remote import Connect
from nodecfg.errors import HostError, UsageError
from nodecfg.images import ImageRef
from nodecfg.inventory import Secret

if TYPE_CHECKING:
    import docker

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class LocalImage:
    """An inventory image as this machine's engine holds it."""

    ref: ImageRef
    source: str
    image_id: str  # sha256:<hex> of its config
    diff_ids: tuple[str, ...]
    size: int

    @property
    def repo(self) -> str:
        return self.ref.path

    @property
    def blobs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.image_id, *self.diff_ids)))


@dataclass(frozen=True)
class EngineResult:
    image: LocalImage
    action: str  # pushed | skipped | failed
    seconds: float
    error: str = ""


def local_images(client: docker.DockerClient, refs: Sequence[ImageRef], sources: dict[str, str],
                 progress: Progress) -> list[LocalImage]:
    """Each target's image in the engine (pulled here when this machine lacks it)."""
    import docker

    out = []
    for ref in refs:
        source = sources[ref.target]
        try:
            img = client.images.get(ref.upstream)
        except docker.errors.ImageNotFound:
            progress(f"{source}: not on this machine; pulling it")
            try:
                img = client.images.pull(ref.upstream)
            except docker.errors.APIError as exc:
                raise UsageError(f"image {source} is not on this machine and could not be pulled "
                                 f"({exc.explanation or exc})") from None
        layers = tuple(str(d) for d in (img.attrs.get("RootFS") or {}).get("Layers") or ())
        out.append(LocalImage(ref, source, img.id, layers, int(img.attrs.get("Size") or 0)))
    return out


# ---------------------------------------------------------------------------------------------
# pure


def manifest(config: Descriptor, layers: Sequence[Descriptor]) -> bytes:
    """The image's docker schema 2 manifest, as docker writes one (3-space indent): the same image
    always gives the same bytes, so the same digest."""
    return json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                       "config": {"mediaType": config.media_type, "size": config.size, "digest": config.digest},
                       "layers": [{"mediaType": d.media_type, "size": d.size, "digest": d.digest}
                                  for d in layers]}, indent=3).encode()


def config_digest(body: bytes) -> str:
    """The config digest of a manifest the registry served ("" if it is not an image manifest)."""
    try:
        doc = json.loads(body)
        digest = doc["config"]["digest"]
    except (ValueError, KeyError, TypeError):
        return ""
    return digest if isinstance(digest, str) else ""


def plan(images: Sequence[LocalImage], have: dict[tuple[str, str], int | None]
         ) -> tuple[list[BlobJob], set[str]]:
    """From the registry's answers (`have[(repo, digest)]`: its size, None when absent): the mounts
    that need no bytes (a blob one repository has and another lacks), and the digests that must
    come from `docker save` (no repository has them). Jobs for the latter are made as the save
    stream yields them (their sizes are known then)."""
    needs: dict[str, list[str]] = {}
    for img in images:
        for digest in img.blobs:
            repos = needs.setdefault(digest, [])
            if img.repo not in repos:
                repos.append(img.repo)
    mounts, from_save = [], set()
    for digest, repos in needs.items():
        missing = [r for r in repos if have.get((r, digest)) is None]
        if not missing:
            continue
        source = next((r for r in repos if have.get((r, digest)) is not None), None)
        if source is None:
            from_save.add(digest)
        else:
            size = have[(source, digest)] or 0
            mounts.append(BlobJob(Descriptor(_media_type(images, digest), digest, size),
                                  missing[0], source, tuple(missing[1:])))
    return mounts, from_save


def _media_type(images: Sequence[LocalImage], digest: str) -> str:
    return DOCKER_CONFIG if any(img.image_id == digest for img in images) else LAYER_TAR


# ---------------------------------------------------------------------------------------------
# the save stream


class Spool:
    """The wanted blobs of a save stream, one after another in an unlinked temp file (the page
    cache, mostly): a `BlobSource` for the uploads, read in place by `os.pread`."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="nodecfg-save-")  # noqa: SIM115 -- closed by close()
        self.path = Path(f"docker save (spooled in {tempfile.gettempdir()})")
        self._blobs: dict[str, tuple[int, int]] = {}
        self._end = 0

    def fileno(self) -> int:
        return self.file.fileno()

    def offset(self, digest: str) -> tuple[int, int]:
        try:
            return self._blobs[digest]
        except KeyError:
            raise PushError(f"blob {digest} is not in this run's docker save; run registry-up again") from None

    def sizes(self) -> dict[str, int]:
        return {d: size for d, (_, size) in self._blobs.items()}

    def add(self, read: Callable[[int], bytes], size: int, wanted: set[str]) -> str | None:
        """Spool `size` bytes from `read`, hashing them; keep them if their digest is wanted (and
        not kept yet): then return the digest. Unwanted bytes are overwritten by the next blob."""
        sha = hashlib.sha256()
        start, left = self._end, size
        self.file.seek(start)
        while left:
            data = read(min(CHUNK, left))
            if not data:
                raise PushError(f"docker save ended early ({size - left} of {size} bytes of a file)")
            sha.update(data)
            self.file.write(data)
            left -= len(data)
        self.file.flush()
        digest = "sha256:" + sha.hexdigest()
        if digest not in wanted or digest in self._blobs:
            return None
        self._blobs[digest] = (start, size)
        self._end = start + size
        return digest

    def close(self) -> None:
        self.file.close()


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of byte chunks (the engine's response), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def read_save(chunks: Iterator[bytes], wanted: set[str], spool: Spool, on_blob: Callable[[str, int], None]) -> None:
    """Walk a `docker save` tar stream (docker's legacy layout or the OCI one of docker 25+): every
    regular file is hashed; a wanted one is spooled and `on_blob(digest, size)` called at once."""
    stream = io.BufferedReader(_ChunkReader(chunks), CHUNK)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile() or member.size == 0:
                    continue  # directories; a layer docker links to its first copy (a symlink)
                f = tar.extractfile(member)
                if f is None:
                    continue
                digest = spool.add(f.read, member.size, wanted)
                if digest is not None:
                    on_blob(digest, member.size)
    except tarfile.TarError as exc:
        raise PushError(f"docker save gave no readable tar ({exc})") from None


def save_stream(client: docker.DockerClient, image_ids: Sequence[str]) -> Iterator[bytes]:
    """One `docker save` of all these images (GET /images/get?names=...; the SDK saves one image a
    call), streamed."""
    return _stream(client, lambda: _open_save(client, image_ids))


def _open_save(client: docker.DockerClient, image_ids: Sequence[str]) -> Any:
    """The engine's response to the save request; it answers once its export is done."""
    api = client.api
    return api._get(api._url("/images/get"), params={"names": list(image_ids)}, stream=True)


def _stream(client: docker.DockerClient, opened: Callable[[], Any]) -> Iterator[bytes]:
    import docker
    import requests

    try:
        yield from client.api._stream_raw_result(opened(), CHUNK, False)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise PushError(f"docker save on this machine failed ({exc})") from None


class Presave:
    """A `docker save` asked early, as soon as the registry's tags show which images it lacks: the
    engine exports them (seconds, before its first byte) while the master gathers its facts and the
    registry is asked for blobs. Used if it covers the images the push needs, else closed."""

    def __init__(self, client: docker.DockerClient, image_ids: Sequence[str]) -> None:
        self.client, self.ids = client, tuple(dict.fromkeys(image_ids))
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="presave")
        self._response: Future[Any] = pool.submit(_open_save, client, self.ids)
        pool.shutdown(wait=False)

    def stream(self, image_ids: Sequence[str]) -> Iterator[bytes] | None:
        """The save's bytes when it holds every one of `image_ids`, else None."""
        if not set(image_ids) <= set(self.ids):
            return None
        return _stream(self.client, self._response.result)

    def close(self) -> None:
        def close(fut: Future[Any]) -> None:
            if fut.exception() is None:
                fut.result().close()

        self._response.add_done_callback(close)


# ---------------------------------------------------------------------------------------------
# apply


class _Facts:
    """The registry's answers, asked `width` at a time."""

    def __init__(self, api: RegistryAPI) -> None:
        self.api = api

    def tagged_config(self, ref: ImageRef) -> str:
        path = f"/v2/{ref.path}/manifests/{ref.tag}"
        status, _, body = self.api.call("GET", path, headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"})
        if status == 404:
            return ""
        if status != 200:
            raise _refused("GET", path, status, body)
        return config_digest(body)

    def blob_size(self, repo: str, digest: str) -> int | None:
        path = f"/v2/{repo}/blobs/{digest}"
        status, headers, body = self.api.call("HEAD", path)
        if status == 404:
            return None
        if status != 200:
            raise _refused("HEAD", path, status, body)
        return int(headers.get("Content-Length") or 0)


def tagged_configs(api: RegistryAPI, refs: Sequence[ImageRef], width: int = WIDTH) -> list[str]:
    """The config digest (an image id) each target's tag points at now ("" when not there)."""
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="tags") as pool:
        return list(pool.map(_Facts(api).tagged_config, refs))


def push_engine(client: docker.DockerClient, images: Sequence[LocalImage], connect: Connect,
                creds: tuple[str, Secret] | None, *, progress: Progress,
                width: int = WIDTH, tagged: Sequence[str] | None = None,
                presave: Presave | None = None) -> tuple[list[EngineResult], PushStats]:
    """Push the engine's `images` into the registry; only what it lacks is saved and sent.
    `tagged`: `tagged_configs`, when already asked; `presave`: a save asked early."""
    started = time.monotonic()
    api = RegistryAPI(connect, basic_auth(creds))
    pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="push")
    spool = Spool()
    pusher = _Pusher(spool, api, progress, spool.fileno())
    results: dict[str, EngineResult] = {}
    try:
        facts = _Facts(api)
        if tagged is None:
            tagged = list(pool.map(facts.tagged_config, [img.ref for img in images]))
        todo = []
        for img, config in zip(images, tagged, strict=True):
            if config == img.image_id:
                results[img.ref.target] = EngineResult(img, "skipped", 0.0)
            else:
                todo.append(img)
        if todo:
            pairs = list(dict.fromkeys((img.repo, d) for img in todo for d in img.blobs))
            sizes = list(pool.map(lambda p: facts.blob_size(*p), pairs))
            have = dict(zip(pairs, sizes, strict=True))
            pusher.stats.present = sum(s is not None for s in sizes)
            _apply(client, pusher, pool, todo, have, results, started, presave)
    finally:
        if presave is not None:
            presave.close()
        pool.shutdown(wait=True, cancel_futures=True)
        api.close()
        spool.close()
    pusher.stats.seconds = time.monotonic() - started
    return [results[img.ref.target] for img in images], pusher.stats


def _apply(client: docker.DockerClient, pusher: _Pusher, pool: ThreadPoolExecutor,
           todo: Sequence[LocalImage], have: dict[tuple[str, str], int | None], results: dict[str, EngineResult],
           started: float, presave: Presave | None) -> None:
    mounts, from_save = plan(todo, have)
    spool = pusher.bundle
    assert isinstance(spool, Spool)
    jobs: dict[str, Future[None]] = {j.descriptor.digest: pool.submit(pusher.run_job, j) for j in mounts}
    if from_save:
        saved = [img for img in todo if set(img.blobs) & from_save]
        pusher.progress(f"{len(todo)} image(s) to push; reading docker save of {len(saved)} for "
                        f"{len(from_save)} blob(s) the registry lacks")
        repos: dict[str, list[str]] = {}
        for img in todo:
            for d in img.blobs:
                if d in from_save and img.repo not in repos.setdefault(d, []):
                    repos[d].append(img.repo)
        lock = threading.Lock()

        def on_blob(digest: str, size: int) -> None:
            job = BlobJob(Descriptor(_media_type(todo, digest), digest, size), repos[digest][0], None,
                          tuple(repos[digest][1:]))
            with lock:
                jobs[digest] = pool.submit(pusher.run_job, job)

        ids = list(dict.fromkeys(img.image_id for img in saved))  # two targets may be one image
        stream = presave.stream(ids) if presave is not None else None
        read_save(stream or save_stream(client, ids), set(from_save), spool, on_blob)
    sizes = {**{d: s for (_, d), s in have.items() if s is not None}, **spool.sizes()}
    errors: dict[str, str] = {}
    for digest, fut in jobs.items():
        exc = fut.exception()
        if exc is not None and not isinstance(exc, HostError):
            raise exc  # an interrupt or a bug: nothing is tagged
        if exc is not None:
            errors[digest] = str(exc)
    for digest in from_save - set(jobs):
        errors[digest] = (f"docker save gave no blob {digest} (an image store that keeps compressed "
                          "layers? push from a bundle instead)")

    def finish(img: LocalImage) -> EngineResult:
        bad = next((errors[d] for d in img.blobs if d in errors), None)
        if bad is not None:
            return EngineResult(img, "failed", time.monotonic() - started, bad)
        config = Descriptor(DOCKER_CONFIG, img.image_id, sizes[img.image_id])
        body = manifest(config, [Descriptor(LAYER_TAR, d, sizes[d]) for d in img.diff_ids])
        top = Descriptor(DOCKER_MANIFEST, "sha256:" + hashlib.sha256(body).hexdigest(), len(body))
        push = ImagePush(IndexEntry(img.source, top), img.ref, ((top, body),),
                         (config, *(Descriptor(LAYER_TAR, d, sizes[d]) for d in img.diff_ids)))
        try:
            pusher.finish(push)
        except HostError as exc:
            return EngineResult(img, "failed", time.monotonic() - started, str(exc))
        return EngineResult(img, "pushed", time.monotonic() - started)

    for img, result in zip(todo, pool.map(finish, todo), strict=True):
        results[img.ref.target] = result

