"""registry-up: the registry on the master (and on every host of `registry.replicas`), then the
images pushed into it.

One flow, whatever the images come from (push/source.py: this machine's Docker engine, or with
`--bundle` a bundle file), and however many replicas. Facts -> plan -> apply:
1. before any host is contacted: the inventory's images, the credentials, the S3 keys and the TLS
   material (a certificate per replica, each naming its own address; with `--renew-cert` issued
   again now; one that expires within 30 days warned about: expiry.py); a bundle is opened and checked;
2. facts, every replica side by side, each over one SSH connection (replica.py): its host's (engine,
   registry image, container, who holds the port, data directories, htpasswd, storage environment,
   TLS files, /v2/), and for the first the registry's tags and catalog, while this machine reads its
   source. On an unchanged re-run these answers are the whole run;
3. plan (pure): adopt.plan_container() for each replica (keep / start / create / recreate / adopt /
   refuse), the htpasswd, certificate and storage environment compared, which images the registry
   lacks. `--check` reports this and changes nothing; any refusal stops the run before a change;
4. apply: on every replica the registry image loaded if its host lacks it (never a pull there) and
   the container brought to the plan; then the images pushed (push/pipeline.py) to the first replica
   that is up, through its SSH connection or with `--direct` to its address. The others get them
   without the operator's link carrying a blob twice: with S3 storage they serve the same bucket;
   with their own disks each copies what it lacks from the first inside the site
   (scripts/master_copy.sh), then gets the manifests and tags.
   Before a byte is sent, a push that cannot fit is refused; a disk that fills meanwhile is one
   line and leaves no partial upload; the tags pushed are recorded on each registry host, what
   registry-prune may remove and only that (storage.py).
A replica that fails does not stop the others: the run reports it and exits 1. Every step on a
host runs under the step deadline (`--timeout`; master.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from dataclasses import replace as replace_fields
from pathlib import Path
from typing import TYPE_CHECKING

from nodecfg.credentials import Credentials
from nodecfg.errors import ConflictError, HostError
from nodecfg.images import ImageRef, parse_ref, plan_targets
from nodecfg.inventory import Host, Inventory, RegistrySettings, Secret
from nodecfg.push.api import WIDTH, TagState, tag_states
from nodecfg.push.source import Source
from nodecfg.registry import adopt, storage
from nodecfg.registry.container import (
    MasterFacts,
    Pushed,
    S3Spec,
    copy_script,
    http_secret_of,
    parse_copied,
    secret_env,
)
from nodecfg.registry.master import whole
from nodecfg.registry.replica import Replica, Setup, endpoint
from nodecfg.registry.results import ImageOutcome, RegistryCheck, RegistryUpResult, ReplicaUp

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from nodecfg.registry.tls import TlsFiles, TlsMaterial

DEFAULT_STEP = 60.0  # seconds a step on a registry host may take (--timeout), as configure-nodes' steps
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def registry_up(inv: Inventory | None, *, progress: Progress = _quiet, bundle: Path | None = None,
                check: bool = False, replace: bool = False, direct: bool = False,
                step: float = DEFAULT_STEP, renew_cert: bool = False) -> RegistryUpResult | RegistryCheck:
    """Start the registry on the master and its replicas (or, without an inventory, on this machine)
    and push the images: from this machine's Docker engine, or a bundle file. A registry nodecfg did
    not make is adopted where that is safe and refused otherwise (`adopt.plan_container`); `replace`
    recreates it as nodecfg's own. `check` reports what would be done and changes nothing.
    `renew_cert`: nodecfg's own server certificate issued again now (the caller refuses a brought one)."""
    settings = inv.registry if inv else RegistrySettings(address="127.0.0.1")
    creds = Credentials.of(settings.auth)
    refs = plan_targets(list(inv.images) if inv else [])  # usage errors before anything is contacted
    hosts: tuple[Host | None, ...] = inv.registry_hosts if inv else (None,)
    alone = len(hosts) == 1
    made = [_tls_files(settings, h, alone, progress, write=not check, renew=renew_cert) for h in hosts]
    tls = [m[0] if m is not None else None for m in made]
    warnings = _expiry_warnings(settings, [m[1] for m in made if m is not None])
    s3 = keys = None
    if settings.storage is not None:
        s3 = S3Spec(settings.storage.endpoint, settings.storage.bucket, settings.storage.region)
        keys = (settings.storage.access_key(), settings.storage.secret_key())
    setup = Setup(settings, creds, s3, direct, replace)
    # a bundle is read and checked before any host is contacted; the engine is asked once the
    # first host's connection is under way (its handshake is the critical path of an unchanged run)
    opened: Future[Source] = Future()
    if bundle is not None:
        opened.set_result(_open_source(inv, settings, refs, bundle, progress))
    # 2N+1 workers: every replica's connection and facts, the first's registry answers; the engine's
    # inspect waits for a free one, i.e. a finished handshake (the critical path of an unchanged run)
    with ThreadPoolExecutor(max_workers=2 * len(hosts) + 1, thread_name_prefix="registry-up") as pool:
        replicas = [Replica(h, setup, tls[i], opened, progress, pool, step, endpoint=endpoint(h, settings, alone=alone),
                            early=i == 0) for i, h in enumerate(hosts)]
        try:
            if not opened.done():
                replicas[0].master.settled()  # the engine's modules imported after the handshake (the GIL)
                opened.set_result(_open_source(inv, settings, refs, None, progress))
            pool.submit(opened.result().images)
            return replace_fields(_Up(replicas, setup, keys, progress, pool).go(check), warnings=warnings)
        finally:
            for r in replicas:
                r.close()
            if opened.done() and opened.exception() is None:
                opened.result().close()


def _tls_files(settings: RegistrySettings, host: Host | None, alone: bool, progress: Progress,
               write: bool, renew: bool = False) -> tuple[TlsFiles, TlsMaterial] | None:
    """The certificate, key and CA a replica serves with (registry.tls): one CA, each replica's
    certificate naming its own address (and registry.address, which may be a name in front of them
    all); `renew`: issued again now. None for plain HTTP."""
    if settings.tls is None or host is None:
        return None
    from nodecfg.registry.tls import master_files, server_file_stem  # cryptography: only for TLS

    stem = None if alone else server_file_stem(host.address, settings.port)
    return master_files(settings.tls, registry_address=settings.address, port=settings.port,
                        master_name=host.name, master_address=host.address, say=progress, write=write,
                        stem=stem, renew="asked for (--renew-cert)" if renew else "")


def _expiry_warnings(settings: RegistrySettings, materials: list[TlsMaterial]) -> tuple[str, ...]:
    """The certificates and CA the registry hosts serve with that expire within 30 days (expiry.py)."""
    if settings.tls is None or not materials:
        return ()
    import datetime as dt

    from nodecfg.registry.expiry import material_warnings

    return material_warnings(settings.tls, materials, dt.datetime.now(dt.UTC))


def _open_source(inv: Inventory | None, settings: RegistrySettings, refs: Sequence[ImageRef],
                 bundle: Path | None, progress: Progress) -> Source:
    if bundle is not None:
        from nodecfg.push.bundle_source import BundleSource

        return BundleSource(bundle, refs, settings.image)
    from nodecfg.push.engine_source import EngineSource

    sources: dict[str, str] = {}
    for src in inv.images if inv else ():
        sources.setdefault(parse_ref(src).target, src)
    return EngineSource(refs, sources, progress)


class _Up:
    """One registry-up over its replicas: facts, plans, then apply (the module docstring)."""

    def __init__(self, replicas: list[Replica], setup: Setup, keys: tuple[Secret, Secret] | None,
                 progress: Progress, pool: ThreadPoolExecutor) -> None:
        self.replicas, self.setup, self.keys, self.progress, self.pool = replicas, setup, keys, progress, pool
        self.alone = len(replicas) == 1
        self.failed: dict[int, str] = {}  # replica index -> why it is out of this run
        self.data_dirs: dict[int, str] = {}  # replica index -> the data directory its registry uses ("" S3)
        self.names: dict[int, str] = {}  # replica index -> its registry container's name

    @property
    def source(self) -> Source:
        return self.replicas[0].source

    def _out(self, i: int, exc: HostError) -> None:
        """A replica that failed: with others, said and left out; alone, the run's error."""
        if self.alone:
            raise exc
        where = self.replicas[i].where
        self.failed[i] = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
        self.progress(f"FAILED: {self.failed[i]}")

    def go(self, check: bool) -> RegistryUpResult | RegistryCheck:
        self.replicas[0].master.settled()  # the handshake first: the work below would share the GIL with it
        facts: dict[int, MasterFacts] = {}
        for i, r in enumerate(self.replicas):
            try:
                facts[i] = r.facts()
            except HostError as exc:
                self._out(i, exc)
        if not facts:
            raise HostError("no registry host answered: " + "; ".join(self.failed.values()))
        env_file = self._env_file(facts)
        shipped: dict[int, bool] = {}
        plans: dict[int, adopt.ContainerPlan] = {}
        image_ids: dict[int, str] = {}
        for i, f in facts.items():
            image_ids[i] = f.registry_image_id or self._local_image_id()
            plans[i] = self.replicas[i].plan(f, image_ids[i])
            shipped[i] = plans[i].needs_image and not f.registry_image_id
        if check:
            return self._check(facts, plans, shipped)
        refused = [(i, p) for i, p in plans.items() if p.action == "refuse"]
        if refused:
            raise ConflictError("; ".join(f"{self.replicas[i].where}: {p.refusal}" for i, p in refused))
        ups = self._bring_up(facts, plans, image_ids, shipped, env_file)
        return self._push(ups, facts)

    # plan

    def _env_file(self, facts: dict[int, MasterFacts]) -> Secret | None:
        """S3 storage: the keys and one http.secret for every replica — the one a replica already
        has (the first's first), else a new one."""
        if self.keys is None:
            return None
        import secrets

        kept = next((s for s in (http_secret_of(f.env_file) for _, f in sorted(facts.items())) if s), None)
        return secret_env(*self.keys, kept or Secret(secrets.token_urlsafe(32)))

    _local_id: str | None = None

    def _local_image_id(self) -> str:
        """The registry image's id in the source ("" when only a host has it): asked once."""
        if self._local_id is None:
            self._local_id = self.source.registry_image_id(self.setup.settings.image)
        return self._local_id

    def _check(self, facts: dict[int, MasterFacts], plans: dict[int, adopt.ContainerPlan],
               shipped: dict[int, bool]) -> RegistryCheck:
        first = self.replicas[0]
        early = first.early.result() if first.early is not None else None
        checks = [self.replicas[i].check(f, plans[i], shipped[i], early.tags if early and i == 0 else None)
                  for i, f in sorted(facts.items())]
        for i, why in sorted(self.failed.items()):
            r = self.replicas[i]
            checks.insert(i, RegistryCheck(r.where, r.endpoint, "refuse", (), "", "", f"cannot be checked: {why}",
                                           "", -1, False, ()))
        return replace_fields(checks[0], replicas=tuple(checks[1:]))

    # apply

    def _bring_up(self, facts: dict[int, MasterFacts], plans: dict[int, adopt.ContainerPlan],
                  image_ids: dict[int, str], shipped: dict[int, bool], env_file: Secret | None
                  ) -> dict[int, ReplicaUp]:
        """Every replica's container brought to its plan, side by side."""
        def one(i: int) -> tuple[ReplicaUp, MasterFacts]:
            return self.replicas[i].bring_up(facts[i], plans[i], image_ids[i], shipped[i], env_file)

        for i, plan in plans.items():
            self.data_dirs[i] = "" if self.setup.s3 is not None else (plan.data_dir or self.setup.settings.data_dir)
            self.names[i] = plan.name or self.setup.settings.container
        running = {i: self.pool.submit(one, i) for i in facts}
        ups: dict[int, ReplicaUp] = {}
        for i, fut in running.items():
            try:
                ups[i], facts[i] = fut.result()
            except HostError as exc:
                self._out(i, exc)
        if not ups:
            raise HostError("no registry could be brought up: " + "; ".join(self.failed.values()))
        return ups

    def _push(self, ups: dict[int, ReplicaUp], facts: dict[int, MasterFacts]) -> RegistryUpResult:
        from nodecfg.push import pipeline

        p = min(ups)  # the first replica that is up gets the images from this machine
        primary = self.replicas[p]
        early = primary.early.result() if primary.early is not None and ups[p].container_action == "keep" else None
        target = primary.target(facts[p])
        with self._full_disk(p):
            results, stats = pipeline.push(self.source, target, progress=self.progress, width=_push_width(),
                                           tags=early.tags if early else None, fits=self._fits(p, facts[p]),
                                           space=self._space(p))
        ups[p] = replace_fields(ups[p], sync="pushed")
        pushed = storage.pushed_of(results)
        self._record(p, pushed, facts[p].pushed)
        others = [i for i in ups if i != p]
        synced = {i: self.pool.submit(self._sync, i, primary, facts[i], pushed) for i in others}
        for i, fut in synced.items():
            try:
                ups[i] = fut.result()(ups[i])
            except HostError as exc:
                ups[i] = replace_fields(ups[i], sync="failed", error=str(exc))
                self.progress(f"{self.replicas[i].where}: FAILED: {exc}")
        if early is not None and all(r.outcome == "skipped" for r in results):
            catalog = early.catalog
        else:
            api = target.api()
            try:
                catalog = api.catalog()
            finally:
                api.close()
        top = ups[p]
        every = tuple(ups.get(i) or ReplicaUp(r.where, r.endpoint, "failed", error=self.failed.get(i, ""))
                      for i, r in enumerate(self.replicas))
        return RegistryUpResult(
            top.master, top.endpoint if not self.alone else self.setup.settings.endpoint, top.container_action
            if top.container_action != "failed" else "keep", top.container_reasons, top.container_id,
            top.shipped_registry_image,
            tuple(ImageOutcome(r.image.source, r.image.ref.target, r.image.size, r.outcome, r.seconds, r.error)
                  for r in results),
            catalog, self.setup.creds is not None, note=top.note, transfer=asdict(stats),
            replicas=() if self.alone else every)

    def _sync(self, i: int, primary: Replica, facts: MasterFacts, pushed: Pushed) -> Callable[[ReplicaUp], ReplicaUp]:
        """Replica `i` given the images the primary has: one S3 bucket serves them already (checked);
        its own disk gets the blobs it lacks copied from the primary inside the site."""
        from nodecfg.push import pipeline

        replica = self.replicas[i]
        images = self.source.images()
        if self.setup.s3 is not None:
            tags = _tag_states(replica, facts, [img.ref for img in images])
            behind = [img.ref.target for img, tag in zip(images, tags, strict=True) if not img.current(tag)]
            if behind:
                raise HostError(f"{replica.where}: serves the S3 bucket but not {', '.join(behind)} "
                                "(the same bucket as the first replica?)")
            self._record(i, pushed, facts.pushed)
            return lambda up: replace_fields(up, sync="shared")
        scheme = "https" if self.setup.settings.tls is not None else "http"

        def copier(jobs: Sequence[pipeline.BlobJob]) -> dict[str, int | str]:
            self.progress(f"{replica.where}: copying {len(jobs)} blob(s) from {primary.where}")
            res = replica.master.run(copy_script(self.setup.settings, replica.master.step,
                                                 f"{scheme}://{primary.endpoint}", [(j.first, j.digest) for j in jobs],
                                                 self.setup.creds), f"copying blobs from {primary.where}")
            if not res.ok:
                raise HostError(f"{replica.where}: copying blobs from {primary.where} failed: {whole(res)}")
            return parse_copied(res.stdout)

        with self._full_disk(i):
            results, stats = pipeline.push(self.source, replica.target(facts), width=_push_width(), copier=copier,
                                           progress=lambda m: self.progress(f"{replica.where}: {m}"),
                                           fits=self._fits(i, facts), space=self._space(i))
        self._record(i, storage.pushed_of(results), facts.pushed)
        bad = [r for r in results if r.outcome == "failed"]
        if bad:
            raise HostError(f"{replica.where}: {len(bad)} image(s) not copied: "
                            f"{bad[0].image.ref.target}: {bad[0].error}")
        done = all(r.outcome == "skipped" for r in results)
        return lambda up: replace_fields(up, sync="up to date" if done else "copied", copied=len(stats.copied),
                                         copied_bytes=stats.copied_bytes)


    # space, and the record of what was pushed (storage.py)

    def _space(self, i: int) -> str:
        """Where replica `i` keeps its data, for messages: "/mnt/registry on master"."""
        return f"{self.data_dirs.get(i) or 'the registry storage'} on {self.replicas[i].where}"

    def _fits(self, i: int, facts: MasterFacts) -> Callable[[int], None] | None:
        data_dir = self.data_dirs.get(i, "")
        return storage.fit_check(self.replicas[i].where, data_dir, facts.space.get(data_dir) if data_dir else None,
                                 self.progress)

    def _full_disk(self, i: int) -> AbstractContextManager[None]:
        return storage.full_disk(self.replicas[i], self.setup, self.names.get(i, self.setup.settings.container),
                                 own_disk=bool(self.data_dirs.get(i)))

    def _record(self, i: int, pushed: Pushed, before: Pushed) -> None:
        storage.record(self.replicas[i], pushed, before)


def _push_width() -> int:
    """Blobs in flight; NODECFG_PUSH_WIDTH overrides the default (bench/registry_push.py measures widths)."""
    raw = os.environ.get("NODECFG_PUSH_WIDTH", "")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 32 else WIDTH


def _tag_states(replica: Replica, facts: MasterFacts, refs: Sequence[ImageRef]) -> list[TagState]:
    api = replica.api(facts)
    try:
        return tag_states(api, refs)
    finally:
        api.close()
