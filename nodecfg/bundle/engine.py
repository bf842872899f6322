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
  (shared layers once; asked early, from the tags' answers, while the master gathers its facts),
  read as a tar stream (dockersave.py); each wanted blob is spooled to a temp file while it is
  hashed and its upload starts at once, `width` at a time, while the stream goes on;
- the manifest (docker schema 2, layers uncompressed: `application/vnd.docker.image.rootfs.diff.tar`,
  which docker 20.10+, containerd 1.6+ and podman pull) goes up when its blobs are in, by tag: a
  half-pushed image is never tagged.

Layers go up as the engine holds them, uncompressed: the engine keeps no compressed copy, so
upstream digests are lost on this path (the bundle path keeps them), and compressing here would
cost more CPU time than the bytes it saves take on the wire (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nodecfg.bundle.dockersave import Presave, Spool, read_save, save_stream
from nodecfg.bundle.layout import IndexEntry
from nodecfg.bundle.manifests import DOCKER_MANIFEST, OCI_MANIFEST, Descriptor
from nodecfg.bundle.push import (
    WIDTH,
    BlobJob,
    ImagePush,
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
    """Each target's image in the engine (pulled here when this machine lacks it). Inspected over
    the engine's socket where it can (`nodecfg.dockerengine`: no docker SDK import for a run that
    only needs to know the images), else, and for a pull, through the SDK `client`."""
    from nodecfg import dockerengine

    out = []
    for ref in refs:
        source = sources[ref.target]
        try:
            doc = dockerengine.inspect_image(ref.upstream)
        except dockerengine.EngineUnavailable:
            doc = _sdk_inspect(client, ref.upstream)
        if doc is None:
            doc = _pull(client, ref.upstream, source, progress)
        layers = tuple(str(d) for d in (doc.get("RootFS") or {}).get("Layers") or ())
        out.append(LocalImage(ref, source, str(doc["Id"]), layers, int(doc.get("Size") or 0)))
    return out


def _sdk_inspect(client: docker.DockerClient, ref: str) -> dict[str, Any] | None:
    import docker

    try:
        return dict(client.images.get(ref).attrs)
    except docker.errors.ImageNotFound:
        return None


def _pull(client: docker.DockerClient, ref: str, source: str, progress: Progress) -> dict[str, Any]:
    import docker

    progress(f"{source}: not on this machine; pulling it")
    try:
        return dict(client.images.pull(ref).attrs)
    except docker.errors.APIError as exc:
        raise UsageError(f"image {source} is not on this machine and could not be pulled "
                         f"({exc.explanation or exc})") from None


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

