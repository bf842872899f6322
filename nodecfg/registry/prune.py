"""registry-prune: the tags nodecfg pushed that the inventory (or `--bundle FILE`'s images) no longer
lists removed from the registry, then its storage given back by distribution's garbage collector.

Facts -> plan -> apply, on each registry host (the master, then every replica):
1. facts: the host's (the same script as registry-up's: the container, and STATE_DIR/pushed, the
   record of the tags nodecfg pushed: container.record_script), then the registry's own answers
   over the host's SSH connection: every repository's tags, each tag's manifest, an index's
   children (`read_view`), and the older revisions the record names;
2. plan (pure: prune_plan.py `plan_prune`): an unlisted tag goes only when the record says
   nodecfg pushed it *with the digest it names now* (a tag pushed by hand, or re-pushed by hand
   over nodecfg's, is never nodecfg's to remove; `--all-unlisted` removes every unlisted tag). A
   tag nodecfg pushed again leaves its old manifest untagged in the registry; the record keeps it
   (`@<digest>`), and it goes too once no kept tag uses it. distribution deletes a manifest by
   digest and, with it, every tag of it in that repository (2.x cannot delete a tag alone), so a
   tag whose manifest a kept tag still uses (the same digest, or a kept index's child) stays,
   said. The bytes: blobs and manifests that only the removed manifests use;
3. apply: each manifest DELETEd over the API (an index's children too), the record updated, then
   `registry garbage-collect` with the registry stopped for its duration (scripts/master_prune.sh
   says why stopped and not read-only), and the data directory's `du` before and after: the bytes
   freed, measured. `--check` stops after the plan.
Deletes need the registry started with REGISTRY_STORAGE_DELETE_ENABLED=true. Containers nodecfg
creates have it; one of nodecfg's own that lacks it (made by an older nodecfg) is recreated with it
here, the first time a prune has something to delete (same image, port, data and login: the spec
registry-up wants, so registry-up keeps it); a registry nodecfg did not make is never changed:
refused, naming `registry-up --replace`.

Replicas on their own disks are pruned one after another, so the others serve while one is
stopped. Replicas on one S3 bucket are pruned once, through the first that answers (the record:
every host's together); its collector runs with every replica's registry stopped, since one
writing meanwhile would corrupt the bucket; the bytes are then the plan's (no `du` of a bucket).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace as replace_fields
from pathlib import Path

from nodecfg import tagged
from nodecfg.credentials import Credentials
from nodecfg.errors import ConflictError, HostError
from nodecfg.inventory import Inventory
from nodecfg.push.source import Source
from nodecfg.registry import adopt
from nodecfg.registry.container import (
    SUPERSEDED,
    ContainerSpec,
    MasterFacts,
    PruneAction,
    Pushed,
    S3Spec,
    apply_script,
    prune_script,
    record_script,
)
from nodecfg.registry.master import whole
from nodecfg.registry.prune_plan import Key, listed_targets, plan_prune, read_view
from nodecfg.registry.replica import Replica, Setup, endpoint
from nodecfg.registry.results import PruneHost, PruneResult

Progress = Callable[[str], None]
DEFAULT_STEP = 60.0


def _quiet(_: str) -> None:
    return None


# ---------------------------------------------------------------------------------------------
# the flow


def registry_prune(inv: Inventory, *, bundle: Path | None = None, check: bool = False,
                   all_unlisted: bool = False, step: float = DEFAULT_STEP,
                   progress: Progress = _quiet) -> PruneResult:
    from nodecfg.registry.up import _tls_files

    settings = inv.registry
    creds = Credentials.of(settings.auth)
    listed = listed_targets(inv, bundle)  # usage errors before any host is contacted
    hosts = inv.registry_hosts
    alone = len(hosts) == 1
    tls = [made[0] if (made := _tls_files(settings, h, alone, progress, write=False)) else None for h in hosts]
    s3 = None
    if settings.storage is not None:
        s3 = S3Spec(settings.storage.endpoint, settings.storage.bucket, settings.storage.region)
    setup = Setup(settings, creds, s3)
    no_source: Future[Source] = Future()  # prune pushes nothing
    with ThreadPoolExecutor(max_workers=2 * len(hosts), thread_name_prefix="registry-prune") as pool:
        replicas = [Replica(h, setup, tls[i], no_source, progress, pool, step,
                            endpoint=endpoint(h, settings, alone=alone), early=False) for i, h in enumerate(hosts)]
        try:
            return _Prune(replicas, setup, listed, check, all_unlisted, progress).go()
        finally:
            for r in replicas:
                r.close()


class _Prune:
    def __init__(self, replicas: list[Replica], setup: Setup, listed: set[Key], check: bool, all_unlisted: bool,
                 progress: Progress) -> None:
        self.replicas, self.setup, self.listed, self.check = replicas, setup, listed, check
        self.all_unlisted, self.progress = all_unlisted, progress
        self.alone = len(replicas) == 1

    def go(self) -> PruneResult:
        facts: dict[int, MasterFacts] = {}
        errors: dict[int, str] = {}
        for i, r in enumerate(self.replicas):
            try:
                facts[i] = r.facts()
            except HostError as exc:
                if self.alone:
                    raise
                errors[i] = str(exc) if str(exc).startswith(r.where) else f"{r.where}: {exc}"
        out: dict[int, PruneHost] = {}
        if self.setup.s3 is not None and facts:
            first = min(facts)
            record: Pushed = {}
            for f in facts.values():
                record.update(f.pushed)
            out[first] = self._host(first, facts[first], record, others=[i for i in facts if i != first])
            for i in facts:
                if i != first:
                    out[i] = PruneHost(self.replicas[i].where, self.setup.s3.name,
                                       note=f"serves the same S3 bucket: pruned through {self.replicas[first].where}")
        else:
            for i, f in facts.items():  # one after another: the others serve while one is stopped
                out[i] = self._host(i, f, f.pushed)
        for i, why in errors.items():
            out[i] = PruneHost(self.replicas[i].where, "", error=why)
        return PruneResult(self.check, tuple(out[i] for i in sorted(out)))

    def _host(self, i: int, facts: MasterFacts, record: Pushed, others: list[int] | None = None) -> PruneHost:
        r = self.replicas[i]
        try:
            return self._prune(r, facts, record, others or [])
        except ConflictError:
            raise
        except HostError as exc:
            if self.alone:
                raise
            return PruneHost(r.where, "", error=str(exc) if str(exc).startswith(r.where) else f"{r.where}: {exc}")

    def _prune(self, r: Replica, facts: MasterFacts, record: Pushed, others: list[int]) -> PruneHost:
        c = _registry_container(facts)
        if c is None or not c.running or facts.http_status not in (200, 401):
            raise HostError(f"{r.where}: no registry answers there (container {self.setup.settings.container!r}: "
                            f"{'running' if c and c.running else 'absent or stopped'}, HTTP "
                            f"{facts.http_status or 'none'}); run registry-up first")
        storage = self.setup.s3.name if self.setup.s3 is not None else (c.data_spec or "(no volume)")
        self.progress(f"{r.where}: reading the registry's tags and manifests")
        api = r.api(facts)
        try:
            revisions = [(repo, d) for (repo, tag), d in record.items() if tag.startswith(SUPERSEDED)]
            plan = plan_prune(read_view(api, revisions=revisions), self.listed, record,
                              all_unlisted=self.all_unlisted)
            host = PruneHost(r.where, storage, plan.removed, plan.kept, plan.repositories, len(plan.manifests),
                             plan.bytes)
            if self.check or not plan.manifests:
                if plan.forget and not self.check:
                    self._forget(r, plan.forget, others)
                if self.check and plan.manifests and not c.deletes:
                    host = replace_fields(host, note=self._deletes_note(c))
                return host
            if not c.deletes:
                host = replace_fields(host, note=self._enable_deletes(r, c))
                api.close()
                api = r.api()  # the new container's own address is not the facts' any more
            self.progress(f"{r.where}: deleting {len(plan.manifests)} manifest(s) of {len(plan.removed)} tag(s)")
            for repo, digest in plan.manifests:
                api.delete_manifest(repo, digest)
        finally:
            api.close()
        self._forget(r, plan.forget, others)
        return self._collect(r, c.name, host, others)

    def _deletes_note(self, c: adopt.Existing) -> str:
        if c.own:
            return (f"the container {c.name!r} was made without deletes enabled: registry-prune would recreate "
                    "it with REGISTRY_STORAGE_DELETE_ENABLED=true (same image, port, data and login)")
        return (f"REFUSED: the registry container {c.name!r} (not made by nodecfg) does not allow deletes "
                "(REGISTRY_STORAGE_DELETE_ENABLED); `registry-up --replace` makes it nodecfg's own (its data kept)")

    def _enable_deletes(self, r: Replica, c: adopt.Existing) -> str:
        """Deletes enabled on nodecfg's own container (recreated as it is, plus the setting); a
        registry nodecfg did not make is refused."""
        if not c.own:
            raise ConflictError(f"{r.where}: the registry container {c.name!r} (not made by nodecfg) does not "
                                "allow deletes (no REGISTRY_STORAGE_DELETE_ENABLED=true); registry-prune leaves it "
                                "as it is: `registry-up --replace` makes it nodecfg's own (its data kept), then "
                                "prune again")
        s = self.setup.settings
        port = int(c.ports[0]) if len(c.ports) == 1 and c.ports[0].isdigit() else s.port
        spec = ContainerSpec(c.image_id, port, "" if c.storage else c.data_spec, c.auth, c.name, tls=c.tls,
                             s3=self.setup.s3 if c.storage else None)
        self.progress(f"{r.where}: recreating {c.name!r} with deletes enabled (REGISTRY_STORAGE_DELETE_ENABLED)")
        res = r.master.run(apply_script(spec, "recreate", s, r.master.step, auth=self.setup.creds),
                           "recreating the registry with deletes enabled")
        if not res.ok:
            raise HostError(f"{r.where}: recreating the registry with deletes enabled failed: {whole(res)}")
        return (f"recreated {c.name!r} with deletes enabled (REGISTRY_STORAGE_DELETE_ENABLED=true): "
                "same image, port, data")

    def _forget(self, r: Replica, forget: tuple[Key, ...], others: list[int]) -> None:
        if not forget:
            return
        for host in [r, *(self.replicas[i] for i in others)]:
            res = host.master.run(record_script(host.master.step, dict.fromkeys(forget, "")),
                                  "updating the record of the tags pushed")
            if not res.ok:
                raise HostError(f"{host.where}: updating the record of the tags pushed failed: {whole(res)}")

    def _step(self, r: Replica, name: str, action: PruneAction) -> dict[str, list[str]]:
        res = r.master.run(prune_script(self.setup.settings, r.master.step, name, action,
                                        s3=self.setup.s3 is not None, auth=self.setup.creds),
                           {"gc": "garbage collection", "stop": "stopping the registry",
                            "start": "starting the registry"}[action])
        lines: dict[str, list[str]] = {}
        for rec in tagged.decode(res.stdout):
            lines.setdefault(rec.tag, []).append(rec.rest)
        if not res.ok:
            raise HostError(f"{r.where}: {action}: {whole(res)}")
        return lines

    def _collect(self, r: Replica, name: str, host: PruneHost, others: list[int]) -> PruneHost:
        """The garbage collector, with this registry (and with S3 every other replica's) stopped."""
        stopped: list[Replica] = []
        try:
            for i in others:  # S3: no replica may write to the bucket while it is collected
                self.progress(f"{self.replicas[i].where}: stopping the registry while the bucket is collected")
                self._step(self.replicas[i], self.setup.settings.container, "stop")
                stopped.append(self.replicas[i])
            self.progress(f"{r.where}: garbage collection (the registry stopped meanwhile)")
            lines = self._step(r, name, "gc")
        finally:
            for other in stopped:
                self._step(other, self.setup.settings.container, "start")
        used = [int(u) for u in lines.get("used", []) if u.isdigit()]
        gc = tagged.b64text(lines["gc"][-1]) if lines.get("gc") else ""
        stopped_s = float(lines["stopped"][-1]) if lines.get("stopped", [""])[-1].isdigit() else -1
        return replace_fields(host, used_before=used[0] if len(used) == 2 else -1,
                              used_after=used[1] if len(used) == 2 else -1, gc=gc.strip(), stopped=stopped_s)


def _registry_container(facts: MasterFacts) -> adopt.Existing | None:
    """The registry container: the one under registry.container's name, else one serving its port."""
    found = facts.found()
    if found.named is not None:
        return found.named
    return next((h for h in found.holders if h.own or h.looks_like_registry), None)
