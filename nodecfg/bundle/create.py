"""`bundle create`: fetch every image's manifests and blobs from its upstream (or its source) into
`<FILE>.partial/`, then write the bundle file.

Order of work: every image is resolved first (top manifest by tag; with --platform an index is
slimmed; child manifests by digest), several images at once; then the configs and layers that the
work directory lacks are downloaded, several at once, behind one progress bar; then the tar.
Blobs shared by several images are fetched once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from nodecfg.bundle.client import Manifest, RegistryClient
from nodecfg.bundle.layout import IndexEntry, WorkDir, index_document, write_bundle
from nodecfg.bundle.manifests import INDEX_TYPES, Descriptor, Platform, config_platform, filter_index, references
from nodecfg.bundle.progress import Bar, human
from nodecfg.bundle.sources import Endpoint, endpoint_for
from nodecfg.errors import BundleError, FetchError
from nodecfg.images import ImageRef

WORKERS = 4
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class ImagePlan:
    """One resolved image: its index.json entry, its manifests (stored already) and the configs
    and layers it needs."""

    ref: ImageRef
    endpoint: Endpoint
    entry: IndexEntry
    manifests: tuple[Descriptor, ...]
    blobs: tuple[Descriptor, ...]


@dataclass(frozen=True)
class CreateResult:
    path: Path
    images: tuple[IndexEntry, ...]
    blobs: int
    size: int  # of the bundle file
    fetched_bytes: int  # over the network, this run
    reused_blobs: int  # found verified in <FILE>.partial/ from an interrupted run
    reused_bytes: int
    seconds: float


def work_dir_for(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def create_bundle(refs: Sequence[ImageRef], out: Path, *, platforms: Sequence[Platform] = (),
                  sources: Mapping[str, Endpoint] | None = None, client: RegistryClient | None = None,
                  show_progress: bool = True, workers: int = WORKERS,
                  roles: Mapping[str, str] | None = None) -> CreateResult:
    """`roles`: upstream reference -> index.json role annotation (the registry's own image)."""
    started = time.monotonic()
    client = client or RegistryClient()
    work = WorkDir(work_dir_for(out))
    try:
        with Bar(show_progress) as bar:
            plans = _resolve_all(client, work, refs, platforms, sources or {}, bar, workers)
            plans = [replace(p, entry=replace(p.entry, role=(roles or {}).get(p.ref.upstream, "")))
                     for p in plans]
            manifests: dict[str, Descriptor] = {}
            wanted: dict[str, tuple[ImagePlan, Descriptor]] = {}
            for plan in plans:
                for d in plan.manifests:
                    manifests.setdefault(d.digest, d)
                for blob in plan.blobs:
                    wanted.setdefault(blob.digest, (plan, blob))
            todo = [(p, d) for p, d in wanted.values() if not work.has(d)]
            reused = [d for _, d in wanted.values() if work.has(d)]
            fetched = _download(client, work, todo, bar, workers)
            blobs = [*manifests.values(), *(d for _, d in wanted.values() if d.digest not in manifests)]
            bar.phase("writing", sum(d.size for d in blobs))
            try:
                size = write_bundle(out, work, index_document([p.entry for p in plans]), blobs, bar.advance)
            except OSError as exc:
                raise BundleError(f"{out}: cannot write the bundle: {exc.strerror or exc}") from None
    finally:
        client.close()
        work.close()
    work.remove()
    return CreateResult(out, tuple(p.entry for p in plans), len(blobs), size, fetched, len(reused),
                        sum(d.size for d in reused), time.monotonic() - started)


# -- resolving ----------------------------------------------------------------------------------


def _resolve_all(client: RegistryClient, work: WorkDir, refs: Sequence[ImageRef], platforms: Sequence[Platform],
                 sources: Mapping[str, Endpoint], bar: Bar, workers: int) -> list[ImagePlan]:
    bar.phase(f"resolving {len(refs)} image(s)", len(refs), unit="images")

    def one(ref: ImageRef) -> ImagePlan:
        plan = _resolve(client, work, ref, endpoint_for(ref.registry, sources), platforms)
        bar.advance(1)
        return plan

    return _run_all(client, one, refs, workers)


def _resolve(client: RegistryClient, work: WorkDir, ref: ImageRef, ep: Endpoint,
             platforms: Sequence[Platform]) -> ImagePlan:
    what = ref.upstream
    top = client.get_manifest(ep, ref.path, ref.tag, what=what)
    stored, original = top, None
    kept: tuple[str, ...] = ()
    if top.media_type in INDEX_TYPES and platforms:
        try:
            slim = filter_index(top.body, platforms)
        except ValueError as exc:
            raise FetchError(f"{what}: the index {top.digest} {exc}") from None
        if slim is not None:
            stored, original, kept = Manifest(top.media_type, slim), top.digest, tuple(map(str, platforms))
    work.put(stored.body)
    manifests: list[Descriptor] = [stored.descriptor()]
    blobs: list[Descriptor] = []
    _collect(client, work, ref, ep, stored, manifests, blobs, 0)
    if platforms and stored.media_type not in INDEX_TYPES:
        _check_platform(client, work, ref, ep, blobs[0], platforms)
    entry = IndexEntry(ref.upstream, stored.descriptor(), original, kept)
    return ImagePlan(ref, ep, entry, tuple(manifests), tuple(blobs))


def _collect(client: RegistryClient, work: WorkDir, ref: ImageRef, ep: Endpoint, manifest: Manifest,
             manifests: list[Descriptor], blobs: list[Descriptor], depth: int) -> None:
    """Child manifests (fetched by digest unless the work dir has them) into `manifests`; the
    configs and layers they need into `blobs`; foreign layers left out."""
    try:
        children = references(manifest.media_type, manifest.body)
    except ValueError as exc:
        raise FetchError(f"{ref.upstream}: manifest {manifest.digest}: {exc}") from None
    if manifest.media_type not in INDEX_TYPES:
        blobs.extend(c for c in children if not c.nondistributable)
        return
    if depth >= 2:
        raise FetchError(f"{ref.upstream}: indexes nested too deep")
    for child in children:
        if not child.is_manifest:
            raise FetchError(f"{ref.upstream}: index {manifest.digest} lists a {child.media_type}")
        body = work.read(child)
        if body is not None:
            found = Manifest(child.media_type, body)
        else:
            found = client.get_manifest(ep, ref.path, child.digest,
                                        what=f"{ref.upstream} ({child.platform or 'manifest'} {child.digest})")
            work.put(found.body)
        manifests.append(child)
        _collect(client, work, ref, ep, found, manifests, blobs, depth + 1)


def _check_platform(client: RegistryClient, work: WorkDir, ref: ImageRef, ep: Endpoint, config: Descriptor,
                    platforms: Sequence[Platform]) -> None:
    """A single-platform image with --platform: its config must name one of the platforms."""
    with work.lock(config.digest):
        if not work.has(config):
            client.fetch_blob(ep, ref.path, config, work.blob(config.digest), lambda _n: None,
                              what=f"{ref.upstream}: config {config.digest}")
    platform = config_platform(work.blob(config.digest).read_bytes())
    if platform is not None and not any(p.covers(platform) for p in platforms):
        raise FetchError(f"{ref.upstream}: a single-platform image for {platform}, not for "
                         f"{', '.join(map(str, platforms))} (--platform)")


# -- downloading --------------------------------------------------------------------------------


def _download(client: RegistryClient, work: WorkDir, todo: Sequence[tuple[ImagePlan, Descriptor]], bar: Bar,
              workers: int) -> int:
    bar.phase(f"fetching {len(todo)} blob(s)", sum(d.size for _, d in todo))

    def one(item: tuple[ImagePlan, Descriptor]) -> int:
        plan, desc = item
        kind = "config" if desc.media_type.endswith(("config.v1+json", "container.image.v1+json")) else "layer"
        return client.fetch_blob(plan.endpoint, plan.ref.path, desc, work.blob(desc.digest), bar.advance,
                                 what=f"{plan.ref.upstream}: {kind} {desc.digest}")

    return sum(_run_all(client, one, todo, workers))


def _run_all(client: RegistryClient, fn: Callable[[_T], _R], items: Sequence[_T], workers: int) -> list[_R]:
    """fn over items, `workers` at a time, results in order. The first failure (or Ctrl-C) stops
    the rest at once: queued work is dropped, transfers in flight are cut (their .part files stay
    for the next run), and that failure is raised."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bundle")
    futures = [pool.submit(fn, item) for item in items]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            raise failed.exception()  # type: ignore[misc]
        return [f.result() for f in futures]
    except BaseException:
        client.abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def summary(result: CreateResult) -> str:
    """What `bundle create` prints when done."""
    reused = (f"; reused {result.reused_blobs} blob(s), {human(result.reused_bytes)}, from an interrupted run"
              if result.reused_blobs else "")
    lines = [f"wrote {result.path}: {len(result.images)} image(s), {result.blobs} blobs, {human(result.size)} "
             f"in {result.seconds:.1f} s (fetched {human(result.fetched_bytes)}{reused})"]
    lines += [f"  {e.ref}: --platform {','.join(e.platforms)} rewrote its index {e.original_digest} "
              f"as {e.descriptor.digest}" for e in result.images if e.original_digest]
    return "\n".join(lines)
