"""registry-up: the registry container on the master, then the images pushed into it.

One flow, whatever the images come from (push/source.py: this machine's Docker engine, or with
`--bundle` a bundle file). Facts -> plan -> apply:
1. before any host is contacted: the inventory's images, the credentials and the TLS material; a
   bundle is opened and checked (every inventory image in it);
2. facts, side by side over one SSH connection (master.py): the master's (container.py
   `facts_script`: engine, registry image, container, who holds the port, data directories,
   htpasswd, TLS files, /v2/) and the registry's tags and catalog (`_Early`), while this machine
   reads its source. On an unchanged re-run these answers are the whole run;
3. plan (pure): adopt.plan_container() (keep / start / create / recreate / adopt / refuse), the
   htpasswd and certificate compared, which images the registry lacks. `--check` reports this and
   changes nothing;
4. apply: the registry image shipped if the master lacks it (`docker load` of the source's archive:
   never a pull on the master), the container brought to the plan (container.py `apply_script`),
   then the images (push/pipeline.py) through the master's SSH connection, or with `--direct` to
   the registry's own address.
Every step on the master runs under the step deadline (`--timeout`; master.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from dataclasses import replace as replace_fields
from pathlib import Path

from nodecfg.credentials import Credentials
from nodecfg.errors import ConflictError, HostError
from nodecfg.images import ImageRef, parse_ref, plan_targets
from nodecfg.inventory import Inventory, RegistrySettings
from nodecfg.push.api import WIDTH, RegistryAPI, TagState, Target, tag_states
from nodecfg.push.source import Source
from nodecfg.registry import adopt
from nodecfg.registry.auth import htpasswd_line, htpasswd_matches
from nodecfg.registry.container import (
    ApplyAction,
    ContainerSpec,
    MasterFacts,
    TlsFiles,
    apply_script,
    facts_script,
    parse_facts,
)
from nodecfg.registry.master import Master, whole
from nodecfg.registry.results import ImageOutcome, ImagePlan, RegistryCheck, RegistryUpResult

DEFAULT_STEP = 60.0  # seconds a step on the master may take (--timeout), as configure-nodes' steps
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def registry_up(inv: Inventory | None, *, progress: Progress = _quiet, bundle: Path | None = None,
                check: bool = False, replace: bool = False, direct: bool = False,
                step: float = DEFAULT_STEP) -> RegistryUpResult | RegistryCheck:
    """Start the registry on the master (or, without an inventory, on this machine) and push the
    images: from this machine's Docker engine, or a bundle file. A registry nodecfg did not make is
    adopted where that is safe and refused otherwise (`adopt.plan_container`); `replace` recreates
    it as nodecfg's own. `check` reports what would be done and changes nothing."""
    settings = inv.registry if inv else RegistrySettings(address="127.0.0.1")
    creds = Credentials.of(settings.auth)
    refs = plan_targets(list(inv.images) if inv else [])  # usage errors before anything is contacted
    tls_files = None
    if inv is not None and settings.tls is not None:
        from nodecfg.registry.tls import master_files  # cryptography: only for a TLS registry

        tls_files = master_files(settings.tls, registry_address=settings.address, port=settings.port,
                                 master_name=inv.master.name, master_address=inv.master.address,
                                 say=progress, write=not check)
    # a bundle is read and checked before any host is contacted; the engine is asked once the
    # master's connection is under way (its handshake is the critical path of an unchanged run)
    source = _open_source(inv, settings, refs, bundle, progress) if bundle is not None else None
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="registry-up") as pool:
        master = Master(inv, step, pool)
        try:
            source = source or _open_source(inv, settings, refs, None, progress)
            return _Run(master, settings, creds, tls_files, source, progress, pool, direct).go(check, replace)
        finally:
            master.close()
            if source is not None:
                source.close()


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


@dataclass(frozen=True)
class _Early:
    """What the registry answered while the master gathered its facts: each image's tag, the catalog."""

    tags: list[TagState]
    catalog: dict[str, list[str]]


class _Run:
    """One registry-up: its facts asked as soon as it exists, then `go` plans and applies."""

    def __init__(self, master: Master, settings: RegistrySettings, creds: Credentials | None,
                 tls_files: TlsFiles | None, source: Source, progress: Progress, pool: ThreadPoolExecutor,
                 direct: bool) -> None:
        self.master, self.settings, self.creds, self.tls_files = master, settings, creds, tls_files
        self.source, self.progress, self.direct = source, progress, direct
        self.where = master.where
        self.ca = tls_files.ca if tls_files is not None else None
        # facts, both sides, as soon as the connection is up
        self.early: Future[_Early | None] = pool.submit(self._ask_early)
        self.facts_run = pool.submit(
            lambda: master.run(facts_script(settings, creds, master.step), "gathering the master's facts"))

    def _ask_early(self) -> _Early | None:
        """The registry's tags and catalog, and the source told what the registry lacks (the engine
        starts its docker save). None when the registry does not answer (not running yet, or
        refusing): asked again after the container is brought to the plan."""
        api = RegistryAPI(self.master.connector(self.settings, direct=self.direct, ca=self.ca),
                          self.creds.authorization() if self.creds else None)
        try:
            images = self.source.images()
            tags = tag_states(api, [img.ref for img in images])
            self.source.prepare([img for img, tag in zip(images, tags, strict=True) if not img.current(tag)])
            return _Early(tags, api.catalog())
        except Exception:  # noqa: BLE001 -- a guess: any failure means "ask again after the container"
            return None
        finally:
            api.close()

    def facts(self) -> MasterFacts:
        self.progress(f"{self.where}: gathering facts")
        res = self.facts_run.result()
        facts = parse_facts(res.stdout, self.where)
        if not facts.docker_version:
            if facts.docker_hung:
                raise HostError(f"{self.where}: dockerd on the master did not answer (its API within 5s; "
                                "is it hung? `systemctl status docker` there)")
            raise HostError(f"{self.where}: docker does not answer on the master ({res.brief()})")
        if not facts.curl:  # the registry's HTTP API is checked from the master itself (nodes need no curl)
            raise HostError(f"{self.where}: the master has no curl, which registry-up uses to talk to the "
                            "registry on the master; install it there (apt-get install curl)")
        return facts

    def go(self, check: bool, replace: bool) -> RegistryUpResult | RegistryCheck:
        self.master.settled()  # the handshake first: the work below would share the GIL with its Python part
        facts = self.facts()
        image_id = facts.registry_image_id or self.source.registry_image_id(self.settings.image)
        plan = adopt.plan_container(want(self.settings, self.creds is not None, image_id, replace), facts.found())
        ship = plan.needs_image and not facts.registry_image_id
        if check:
            return self._check(facts, plan, ship)
        if plan.action == "refuse":
            raise ConflictError(f"{self.where}: {plan.refusal}")
        if ship:
            self.progress(f"{self.where}: loading {self.settings.image} on the master (docker load) "
                          f"from {self.source}")
            image_id = self.master.load_image(self.source.registry_image(self.settings.image, facts.platform),
                                              self.settings.image, image_id)
        action, reasons, facts = self._bring_container(facts, plan, image_id)
        early = self.early.result() if action == "keep" else None  # else what it saw may be stale
        from nodecfg.push import pipeline

        target = Target(self.where, self.master.connector(self.settings, direct=self.direct, ca=self.ca,
                                                          route=facts.route(self.settings.port)), self.creds)
        results, stats = pipeline.push(self.source, target, progress=self.progress, width=_push_width(),
                                       tags=early.tags if early else None)
        if early is not None and all(r.outcome == "skipped" for r in results):
            catalog = early.catalog
        else:
            api = target.api()
            try:
                catalog = api.catalog()
            finally:
                api.close()
        return RegistryUpResult(
            self.where, self.settings.endpoint, action, tuple(reasons), facts.container_id, ship,
            tuple(ImageOutcome(r.image.source, r.image.ref.target, r.image.size, r.outcome, r.seconds, r.error)
                  for r in results),
            catalog, self.creds is not None, note=plan.note, transfer=asdict(stats))

    def _check(self, facts: MasterFacts, plan: adopt.ContainerPlan, ship: bool) -> RegistryCheck:
        images = self.source.images()
        early = self.early.result()
        tags = early.tags if early is not None else [TagState()] * len(images)
        found = facts.found()
        acted = plan.adopted or found.named
        data_dir = plan.data_dir or self.settings.data_dir
        source = acted.data_source if acted is not None and acted.data_spec == data_dir else data_dir
        return RegistryCheck(
            self.where, self.settings.endpoint, plan.action, plan.reasons,
            f"{acted.name} {acted.id[:12]}" if acted is not None else "", plan.note, plan.refusal,
            data_dir, found.repositories.get(source, -1), ship,
            tuple(ImagePlan(i.source, i.ref.target, "in registry" if i.current(t) else "push")
                  for i, t in zip(images, tags, strict=True)))

    def _bring_container(self, facts: MasterFacts, plan: adopt.ContainerPlan, image_id: str
                         ) -> tuple[adopt.Action, list[str], MasterFacts]:
        """The container brought to the plan: (action, reasons, facts after). A new htpasswd or
        certificate restarts a container that was otherwise kept (registry:2 reads both at start);
        an adopted registry keeps its own htpasswd."""
        action, reasons = plan.action, list(plan.reasons)
        if plan.note:
            self.progress(f"{self.where}: {plan.note}")
        htpasswd = None
        if plan.adopted is None and self.creds is not None and not htpasswd_matches(facts.htpasswd, self.creds):
            htpasswd = htpasswd_line(self.creds)
            if action == "keep":
                action, reasons = "restart", ["credentials changed"]
        tls_new = self.tls_files if self.tls_files is not None and self.tls_files.sums != facts.tls_sums else None
        if tls_new is not None and plan.adopted is None and action == "keep":
            action, reasons = "restart", ["TLS certificate changed"]
        applied = _applied(action)
        if applied is None:  # keep, adopt
            if plan.adopted is not None:
                facts = replace_fields(facts, container_id=plan.adopted.id)
            return action, reasons, facts
        self.progress(f"{self.where}: registry container: {action} ({'; '.join(reasons)})")
        spec = ContainerSpec(image_id, self.settings.port, plan.data_dir or self.settings.data_dir,
                             self.creds is not None, plan.name or self.settings.container,
                             tls=self.settings.tls is not None)
        res = self.master.run(apply_script(spec, applied, self.settings, self.master.step, htpasswd=htpasswd,
                                           auth=self.creds, tls_files=tls_new), "starting the registry")
        if not res.ok:
            raise HostError(f"{self.where}: starting the registry failed: {whole(res)}")
        after = parse_facts(res.stdout, self.where)
        return action, reasons, replace_fields(facts, http_status=after.http_status, container=after.container,
                                               container_id=after.container_id)


def want(settings: RegistrySettings, auth: bool, image_id: str, replace: bool) -> adopt.Want:
    """What the inventory asks of the registry container, and which of its keys it set."""
    return adopt.Want(settings.container, settings.port, settings.data_dir, auth, image_id, settings.image,
                      frozenset(settings.explicit & {"port", "data_dir", "auth"}), replace,
                      tls=settings.tls is not None)


_APPLIED: dict[adopt.Action, ApplyAction] = {"create": "create", "recreate": "recreate", "start": "start",
                                             "restart": "restart"}


def _applied(action: adopt.Action) -> ApplyAction | None:
    """What the apply script does for the plan's action (None: nothing to do on the master)."""
    return _APPLIED.get(action)


def _push_width() -> int:
    """Blobs in flight; NODECFG_PUSH_WIDTH overrides the default (bench/registry_push.py measures widths)."""
    raw = os.environ.get("NODECFG_PUSH_WIDTH", "")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 32 else WIDTH
