"""`registry-up` from this machine's Docker engine: the push's images as the engine holds them.

What the engine knows without a save decides almost everything:
- an image's id IS its config blob's digest, and its `RootFS.Layers` (diff ids) ARE the digests of
  the layers as `docker save` writes them (uncompressed tars: the sha256 of the tar is the diff id);
- so the pipeline asks the registry first (each tag's manifest: its config digest equal to the
  image id means the image is there), then each blob of the others by HEAD;
- only images with a blob the registry lacks everywhere are saved, all in ONE `docker save` call
  (shared layers once; started by `prepare` as soon as the registry's tags are known, while the
  master gathers its facts), read as a tar stream (dockersave.py); each wanted blob is spooled to a
  temp file while it is hashed and yielded at once, so its upload starts while the stream goes on;
- the manifest (docker schema 2, layers uncompressed: `application/vnd.docker.image.rootfs.diff.tar`,
  which docker 20.10+, containerd 1.6+ and podman pull) is made from the blobs' sizes.

Layers go up as the engine holds them, uncompressed: the engine keeps no compressed copy, so
upstream digests are lost on this path (the bundle path keeps them), and compressing here would
cost more CPU time than the bytes it saves take on the wire (docs/benchmarks.md).

The docker SDK is imported only for real work (a pull, a save): an unchanged run inspects the
images over the engine's socket (`dockerengine.py`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from nodecfg.bundle.manifests import DOCKER_MANIFEST, Descriptor
from nodecfg.bundle.reader import verified_chunks
from nodecfg.errors import UsageError
from nodecfg.images import ImageRef
from nodecfg.push import dockerengine
from nodecfg.push.dockersave import Presave, Spool, save_stream, saved_blobs
from nodecfg.push.source import Blob, SourceImage

if TYPE_CHECKING:
    import docker

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
Progress = Callable[[str], None]
CONFIG_ESTIMATE = 16 << 10  # bytes counted for an image's config before the save gives its size


def layer_sizes(history: Sequence[Mapping[str, Any]], layers: int) -> list[int] | None:
    """The sizes of an image's layers, oldest first, from `docker history` (newest first: the entries
    with a size are the layers); None when they do not match the layers one to one."""
    sized = [int(h.get("Size") or 0) for h in reversed(history) if int(h.get("Size") or 0) > 0]
    return sized if len(sized) == layers else None


def manifest(config: Descriptor, layers: Sequence[Descriptor]) -> bytes:
    """The image's docker schema 2 manifest, as docker writes one (3-space indent): the same image
    always gives the same bytes, so the same digest."""
    return json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                       "config": {"mediaType": config.media_type, "size": config.size, "digest": config.digest},
                       "layers": [{"mediaType": d.media_type, "size": d.size, "digest": d.digest}
                                  for d in layers]}, indent=3).encode()


def connect_engine() -> docker.DockerClient:
    """The docker SDK's client for this machine's engine; a UsageError when none answers."""
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # noqa: BLE001 -- the SDK raises several unrelated types for "no engine"
        raise UsageError(f"no Docker engine answers on this machine ({exc}); images are pushed "
                         "from this machine's engine, so start dockerd first") from None
    return client


class EngineSource:
    """The inventory's images in this machine's engine (pulled here when it lacks one)."""

    def __init__(self, refs: Sequence[ImageRef], sources: Mapping[str, str], progress: Progress) -> None:
        self._refs, self._sources, self._progress = list(refs), dict(sources), progress
        self._lock = threading.Lock()
        self._inspecting = threading.Lock()
        self._client: docker.DockerClient | None = None
        self._images: list[SourceImage] | None = None
        self._diff_ids: dict[str, tuple[str, ...]] = {}  # image id -> its layers
        self._presave: Presave | None = None
        self._spool: Spool | None = None

    def __str__(self) -> str:
        return "this machine's Docker engine"

    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                self._client = connect_engine()
            return self._client

    # the Source protocol (push/source.py)

    def targets(self) -> list[ImageRef]:
        return list(self._refs)

    def images(self) -> list[SourceImage]:
        """Inspected over the engine's socket where it can (no SDK import), else through the SDK;
        once (threads may ask at the same time)."""
        with self._inspecting:
            return self._inspect_all()

    def _inspect_all(self) -> list[SourceImage]:
        if self._images is None:
            images = []
            for ref in self._refs:
                doc = self._inspect(ref.upstream) or self._pull(ref)
                image_id = str(doc["Id"])
                layers = tuple(str(d) for d in (doc.get("RootFS") or {}).get("Layers") or ())
                self._diff_ids[image_id] = layers
                images.append(SourceImage(self._sources[ref.target], ref, tuple(dict.fromkeys((image_id, *layers))),
                                          int(doc.get("Size") or 0), config=image_id))
            self._images = images
        return self._images

    def _inspect(self, ref: str) -> dict[str, Any] | None:
        try:
            return dockerengine.inspect_image(ref)
        except dockerengine.EngineUnavailable:
            import docker

            try:
                return dict(self.client().images.get(ref).attrs)
            except docker.errors.ImageNotFound:
                return None

    def _pull(self, ref: ImageRef) -> dict[str, Any]:
        import docker

        source = self._sources[ref.target]
        self._progress(f"{source}: not on this machine; pulling it")
        try:
            return dict(self.client().images.pull(ref.upstream).attrs)
        except docker.errors.APIError as exc:
            raise UsageError(f"image {source} is not on this machine and could not be pulled "
                             f"({exc.explanation or exc})") from None

    def prepare(self, lacking: Sequence[SourceImage]) -> None:
        """Start the `docker save` of the images the registry lacks now: the engine exports them
        (seconds before its first byte) while the rest of registry-up goes on."""
        ids = list(dict.fromkeys(img.config for img in lacking))
        with self._lock:
            if self._presave is not None or not ids:
                return
        presave = Presave(self.client(), ids)
        with self._lock:
            if self._presave is None:
                self._presave = presave
                return
        presave.close()

    def blobs(self, images: Sequence[SourceImage], digests: set[str]) -> Iterator[Blob]:
        if not digests:
            return
        saved = list(dict.fromkeys(img.config for img in images if set(img.blobs) & digests))
        self._progress(f"reading docker save of {len(saved)} image(s) for {len(digests)} blob(s) the registry lacks")
        with self._lock:
            presave = self._presave
            if self._spool is None:
                self._spool = Spool()
            spool = self._spool
        stream = presave.stream(saved) if presave is not None else None
        for digest, size in saved_blobs(stream or save_stream(self.client(), saved), digests, spool):
            offset, _ = spool.offset(digest)
            yield Blob(digest, size, partial(verified_chunks, spool.fileno(), offset, size, digest, "spooled",
                                             spool.path))

    def sizes(self, images: Sequence[SourceImage]) -> dict[str, int]:
        """Each blob's size before the save: a layer's from the image's history (its entries with a
        size, oldest first, are its layers), else the image's size shared evenly among its layers;
        the config, CONFIG_ESTIMATE (an estimate, as `docker save`'s tar of a layer is a little
        larger than its files)."""
        out: dict[str, int] = {}
        for img in images:
            layers = self._diff_ids.get(img.config, ())
            out[img.config] = CONFIG_ESTIMATE
            sized = layer_sizes(self._history(img.config), len(layers))
            if sized is None:
                sized = [img.size // max(1, len(layers))] * len(layers)
            for digest, size in zip(layers, sized, strict=True):
                out[digest] = max(out.get(digest, 0), size)
        return out

    def _history(self, image_id: str) -> list[dict[str, Any]]:
        try:
            return dockerengine.image_history(image_id) or []
        except dockerengine.EngineUnavailable:
            return [dict(h) for h in self.client().api.history(image_id)]

    def missing(self, digest: str) -> str:
        return (f"docker save gave no blob {digest} (an image store that keeps compressed layers? "
                "push from a bundle instead)")

    def manifests(self, image: SourceImage, sizes: Mapping[str, int]) -> tuple[tuple[Descriptor, bytes], ...]:
        config = Descriptor(DOCKER_CONFIG, image.config, sizes[image.config])
        body = manifest(config, [Descriptor(LAYER_TAR, d, sizes[d]) for d in self._diff_ids[image.config]])
        return ((Descriptor(DOCKER_MANIFEST, "sha256:" + hashlib.sha256(body).hexdigest(), len(body)), body),)

    def registry_image_id(self, name: str) -> str:
        """The registry image's id here ("" when this machine has none: only needed if the master
        lacks it and a container must be created)."""
        doc = self._inspect(name)
        return str(doc["Id"]) if doc else ""

    def registry_image(self, name: str, _platform: str) -> Iterator[bytes]:
        """`docker save NAME` as a stream, saved by the inventory's name: the archive names exactly that
        reference, whatever other tags the image has here (the SDK's `save(named=True)` would name it
        by its *first* tag)."""
        if not self.registry_image_id(name):
            raise UsageError(f"{name} is neither on the master nor on this machine; "
                             "load it here first (nodecfg never pulls on the master)")
        return iter(self.client().api.get_image(name, chunk_size=1 << 20))

    def close(self) -> None:
        with self._lock:
            presave, spool = self._presave, self._spool
        if presave is not None:
            presave.close()
        if spool is not None:
            spool.close()
