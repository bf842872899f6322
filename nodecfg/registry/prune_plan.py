"""registry-prune's decision, pure: what the registry holds (`View`, read over its API by
`read_view`), the record of what nodecfg pushed, and the tags the inventory lists in; the tags and
manifests that go, and the bytes only they use, out (`plan_prune`). prune.py's docstring says the
rules; tests/unit/test_prune.py holds them as fixture tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nodecfg.images import plan_targets
from nodecfg.inventory import Inventory
from nodecfg.push.api import WIDTH, RegistryAPI
from nodecfg.registry.container import SUPERSEDED
from nodecfg.registry.results import PrunedTag

Key = tuple[str, str]  # (repository, tag) or (repository, digest)


# ---------------------------------------------------------------------------------------------
# pure: what the registry holds, and what goes


@dataclass(frozen=True)
class Manifest:
    digest: str
    size: int
    blobs: tuple[tuple[str, int], ...] = ()  # an image manifest's config and layers: (digest, size)
    children: tuple[str, ...] = ()  # an index's (manifest list's) manifests


@dataclass(frozen=True)
class View:
    """What one registry holds, as its API tells: each tag's manifest, and the manifests tags reach."""

    tags: Mapping[Key, str]  # (repository, tag) -> manifest digest
    manifests: Mapping[Key, Manifest]  # (repository, digest) -> the manifest


@dataclass(frozen=True)
class PrunePlan:
    removed: tuple[PrunedTag, ...]
    kept: tuple[PrunedTag, ...]  # unlisted tags that stay, and why
    manifests: tuple[Key, ...]  # (repository, digest) to delete
    bytes: int  # what only the deleted manifests use: their blobs and themselves
    forget: tuple[Key, ...]  # record entries to drop (removed, gone, or changed by hand)
    repositories: int = 0  # repositories with something removed


def parse_manifest(digest: str, body: bytes) -> Manifest:
    """An image manifest (its config and layers) or an index (its children), from its bytes."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    if isinstance(doc.get("manifests"), list):
        return Manifest(digest, len(body), children=tuple(str(m.get("digest")) for m in doc["manifests"]
                                                          if isinstance(m, dict) and m.get("digest")))
    refs = [doc.get("config"), *(doc.get("layers") or [])]
    return Manifest(digest, len(body), blobs=tuple((str(d["digest"]), int(d.get("size") or 0)) for d in refs
                                                    if isinstance(d, dict) and d.get("digest")))


def _closure(view: View, repo: str, digest: str) -> set[str]:
    """A manifest and every manifest it reaches (an index's children), in `repo`."""
    out, todo = set(), [digest]
    while todo:
        d = todo.pop()
        if d in out:
            continue
        out.add(d)
        m = view.manifests.get((repo, d))
        todo += list(m.children) if m else []
    return out


def plan_prune(view: View, listed: Iterable[Key], record: Mapping[Key, str], *,
               all_unlisted: bool = False) -> PrunePlan:
    """Which tags go and which manifests are deleted (the module docstring)."""
    listed = set(listed)
    revisions = {k: d for k, d in record.items() if k[1].startswith(SUPERSEDED)}
    record = {k: d for k, d in record.items() if k not in revisions}
    candidates: dict[Key, str] = {}
    kept: list[PrunedTag] = []
    for key, digest in sorted(view.tags.items()):
        if key in listed:
            continue
        pushed = record.get(key)
        target = f"{key[0]}:{key[1]}"
        if all_unlisted or pushed == digest:
            candidates[key] = digest
        elif pushed is None:
            kept.append(PrunedTag(target, digest, "not pushed by nodecfg (--all-unlisted removes it too)"))
        else:
            kept.append(PrunedTag(target, digest, f"changed since nodecfg pushed it ({pushed[:19]}); "
                                  "not nodecfg's any more (--all-unlisted removes it too)"))
    staying = {k: d for k, d in view.tags.items() if k not in candidates}
    keep = {(repo, d) for (repo, _), digest in staying.items() for d in _closure(view, repo, digest)}
    removed: list[PrunedTag] = []
    doomed: dict[Key, None] = {}
    for (repo, tag), digest in candidates.items():
        if (repo, digest) in keep:
            users = sorted(f"{repo}:{t}" for (r, t), d in staying.items() if r == repo and digest in
                           _closure(view, r, d))
            kept.append(PrunedTag(f"{repo}:{tag}", digest, f"its manifest is also used by {', '.join(users)}, "
                                  "which stays (the registry deletes a tag only with its manifest)"))
            continue
        removed.append(PrunedTag(f"{repo}:{tag}", digest))
        for d in sorted(_closure(view, repo, digest)):
            if (repo, d) not in keep:
                doomed[(repo, d)] = None
    for (repo, _), digest in sorted(revisions.items()):
        # an older revision nodecfg pushed, untagged by a later push of its tag: it goes once no
        # kept tag uses it (one still used stays in the record, for a later prune)
        if (repo, digest) not in view.manifests or (repo, digest) in keep or (repo, digest) in doomed:
            continue
        removed.append(PrunedTag(f"{repo}@{digest}", digest, "an older revision of a tag nodecfg pushed again"))
        for d in sorted(_closure(view, repo, digest)):
            if (repo, d) not in keep:
                doomed[(repo, d)] = None
    kept_digests = {d for key in keep for d in (key[1], *_blob_digests(view.manifests.get(key)))}
    freed: dict[str, int] = {}
    for key in doomed:
        m = view.manifests.get(key)
        if m is None:
            continue
        for d, size in ((m.digest, m.size), *m.blobs):
            if d not in kept_digests:
                freed[d] = size
    gone = {t.target for t in removed}
    forget = sorted(k for k, d in record.items() if f"{k[0]}:{k[1]}" in gone or view.tags.get(k) != d)
    forget += sorted(k for k, d in revisions.items() if (k[0], d) in doomed or (k[0], d) not in view.manifests)
    return PrunePlan(tuple(removed), tuple(sorted(kept, key=lambda t: t.target)), tuple(doomed),
                     sum(freed.values()), tuple(forget), len({repo for repo, _ in doomed}))


def _blob_digests(m: Manifest | None) -> tuple[str, ...]:
    return tuple(d for d, _ in m.blobs) if m else ()


# ---------------------------------------------------------------------------------------------
# facts: the registry's view


def read_view(api: RegistryAPI, width: int = WIDTH, revisions: Iterable[Key] = ()) -> View:
    """Every tag's manifest and every manifest they reach (an index's children), over the API; and
    the `revisions` ((repository, digest): older revisions nodecfg pushed) the registry still has."""
    catalog = api.catalog(width)
    keys = [(repo, tag) for repo, tags in sorted(catalog.items()) for tag in tags]
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="prune") as pool:
        answers = list(pool.map(lambda k: api.manifest(*k), keys))
        tags: dict[Key, str] = {}
        manifests: dict[Key, Manifest] = {}
        for (repo, tag), got in zip(keys, answers, strict=True):
            if got is None or not got[0]:
                continue  # untagged meanwhile
            tags[(repo, tag)] = got[0]
            manifests[(repo, got[0])] = parse_manifest(*got)
        extra = sorted(set(revisions) - set(manifests))
        for key, got in zip(extra, pool.map(lambda k: api.manifest(*k), extra), strict=True):
            if got is not None:
                manifests[key] = parse_manifest(key[1], got[1])
        while True:
            todo = sorted({(repo, c) for (repo, _), m in manifests.items() for c in m.children} - set(manifests))
            if not todo:
                break
            for key, got in zip(todo, pool.map(lambda k: api.manifest(*k), todo), strict=True):
                manifests[key] = parse_manifest(key[1], got[1]) if got else Manifest(key[1], 0)
    return View(tags, manifests)


def listed_targets(inv: Inventory, bundle: Path | None) -> set[Key]:
    """The tags the inventory lists (or, with `bundle`, the bundle's images): what stays."""
    if bundle is not None:
        from nodecfg.push.bundle_source import BundleSource

        source = BundleSource(bundle, [], inv.registry.image)
        try:
            return {(r.path, r.tag) for r in source.targets()}
        finally:
            source.close()
    return {(r.path, r.tag) for r in plan_targets(list(inv.images))}
