"""Where the push's images come from: a `Source` (a bundle file, this machine's docker engine).

The pipeline (`pipeline.py`) asks a source four things, and nothing else differs between sources:
- `targets()` and `images()`: each image as `SourceImage` — where it goes, its blobs' digests, and how to tell that
  the registry's tag already is this image (`current`);
- `prepare(lacking)`: a hint, as soon as the registry's tags are known, of the images it lacks (the
  engine starts its `docker save` then, while the rest of registry-up goes on);
- `blobs(images, digests)`: the bytes of the blobs the registry lacks everywhere, yielded as they
  become available (a bundle: at once, read in place; the engine: as its save streams), each
  checked against its digest as it is read, so a corrupt blob never completes an upload;
- `manifests(image, sizes)`: the manifests to put, children before their index, the tagged one last;
- `sizes(images)`: each blob's size before it is read, so the push knows what it will write (it is
  refused before it sends when the registry's disk cannot hold it: pipeline.py).
A third source (an OCI layout directory, say) is one module implementing these.

A source also ships the registry's own image to a master that lacks it (`registry_image`): a
docker archive stream for `docker load`, from the engine's `docker save` or from the bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from nodecfg.bundle.manifests import Descriptor
from nodecfg.images import ImageRef
from nodecfg.push.api import TagState

Chunks = Callable[[], Iterator[bytes]]


@dataclass(frozen=True)
class SourceImage:
    source: str  # the reference the operator named
    ref: ImageRef  # where it goes in the registry
    blobs: tuple[str, ...]  # its configs' and layers' digests, each once
    size: int
    top: str = ""  # the tagged manifest's digest, when known before the push (a bundle)
    config: str = ""  # else the config's digest (an engine image's id)

    @property
    def repo(self) -> str:
        return self.ref.path

    def current(self, tag: TagState) -> bool:
        """Is the registry's tag already this image? (Then nothing of it is sent.)"""
        if self.top:
            return tag.digest == self.top
        return bool(self.config) and tag.config == self.config


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    chunks: Chunks  # its bytes; raises (a one-line NodecfgError) before the last chunk if they are not `digest`


class Source(Protocol):
    def targets(self) -> Sequence[ImageRef]:
        """Where each image goes, in `images()`'s order, known without asking anything (the
        registry's tags are asked by these while the source reads its images)."""
        ...

    def images(self) -> Sequence[SourceImage]: ...

    def prepare(self, lacking: Sequence[SourceImage], /) -> None: ...

    def blobs(self, images: Sequence[SourceImage], digests: set[str], /) -> Iterable[Blob]: ...

    def sizes(self, images: Sequence[SourceImage], /) -> Mapping[str, int]:
        """Each blob's size in bytes, before any is read (a bundle: exact; the engine: from its image
        history, an estimate): what the push will write into the registry's storage (its fit check)."""
        ...

    def missing(self, digest: str, /) -> str:
        """Why `blobs()` gave no `digest` it was asked for (the images needing it fail with this)."""
        ...

    def manifests(self, image: SourceImage, sizes: Mapping[str, int], /) -> Sequence[tuple[Descriptor, bytes]]: ...

    def registry_image(self, name: str, platform: str, /) -> Iterator[bytes]: ...

    def registry_image_id(self, name: str, /) -> str:
        """The registry image's id where the source has it ("" when it is known on the master only, once loaded)."""
        ...

    def close(self) -> None: ...
