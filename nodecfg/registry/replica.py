"""One registry host of registry-up — the master, or one of `registry.replicas` — as up.py drives it.

Each replica is brought up the same way, side by side with the others: its facts are asked as soon
as it exists (the master's script, and for the first replica the registry's tags, over one SSH
connection: master.py), then its container is planned (adopt.py) and brought to the plan (the
registry image loaded if the host lacks it, container.py's apply script). Which replica the images
are pushed to, and how the others get them, is up.py's business.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from dataclasses import replace as replace_fields
from typing import TYPE_CHECKING

from nodecfg.credentials import Credentials
from nodecfg.errors import HostError
from nodecfg.inventory import Host, RegistrySettings, Secret, endpoint_of
from nodecfg.push.api import RegistryAPI, TagState, Target, tag_states
from nodecfg.push.source import Source
from nodecfg.registry import adopt
from nodecfg.registry.auth import htpasswd_line, htpasswd_matches
from nodecfg.registry.container import (
    ApplyAction,
    ContainerSpec,
    MasterFacts,
    S3Spec,
    apply_script,
    facts_script,
    parse_facts,
)
from nodecfg.registry.master import Master, whole
from nodecfg.registry.results import ImagePlan, RegistryCheck, ReplicaUp

if TYPE_CHECKING:
    from nodecfg.registry.tls import TlsFiles

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Setup:
    """What every replica of one registry-up shares, read from the inventory before any host is contacted."""

    settings: RegistrySettings
    creds: Credentials | None
    s3: S3Spec | None = None  # registry.storage.s3, its settings that are not secret
    direct: bool = False
    replace: bool = False


@dataclass(frozen=True)
class Early:
    """What the registry answered while its host gathered its facts: each image's tag, the catalog."""

    tags: list[TagState]
    catalog: dict[str, list[str]]


class Replica:
    def __init__(self, host: Host | None, setup: Setup, tls_files: TlsFiles | None, source: Future[Source],
                 progress: Progress, pool: Executor, step: float, *, endpoint: str, early: bool) -> None:
        self.setup, self.tls_files, self._source, self.progress = setup, tls_files, source, progress
        self.master = Master(host, step, pool)
        self.where = self.master.where
        self.endpoint = endpoint  # host:port the nodes pull from
        self.ca = tls_files.ca if tls_files is not None else None
        s = setup.settings
        self.early: Future[Early | None] | None = pool.submit(self._ask_early) if early else None
        self.facts_run = pool.submit(
            lambda: self.master.run(facts_script(s, setup.creds, step), "gathering the master's facts"))

    @property
    def source(self) -> Source:
        """Where the images come from (opened by up.py once this host's connection is under way)."""
        return self._source.result()

    # facts

    def _ask_early(self) -> Early | None:
        """The registry's tags and catalog, and the source told what the registry lacks (the engine
        starts its docker save). None when the registry does not answer (not running yet, or
        refusing): asked again after the container is brought to the plan. Asked once the host's
        handshake is done (with --direct too): its Python work is the critical path."""
        self.master.settled()
        api = self.api()
        try:
            tags = tag_states(api, self.source.targets())  # while the source reads its images
            catalog = api.catalog()
            images = self.source.images()
            self.source.prepare([img for img, tag in zip(images, tags, strict=True) if not img.current(tag)])
            return Early(tags, catalog)
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
        if not facts.curl:  # the registry's HTTP API is checked from the host itself (nodes need no curl)
            raise HostError(f"{self.where}: the master has no curl, which registry-up uses to talk to the "
                            "registry on the master; install it there (apt-get install curl)")
        return facts

    def plan(self, facts: MasterFacts, image_id: str) -> adopt.ContainerPlan:
        return adopt.plan_container(want(self.setup, image_id), facts.found())

    def check(self, facts: MasterFacts, plan: adopt.ContainerPlan, ship: bool,
              tags: list[TagState] | None) -> RegistryCheck:
        """--check: what would be done here; nothing changes."""
        images = self.source.images()
        tags = tags if tags is not None else [TagState()] * len(images)
        found = facts.found()
        acted = plan.adopted or found.named
        data_dir = plan.data_dir or ("" if self.setup.s3 else self.setup.settings.data_dir)
        source = acted.data_source if acted is not None and acted.data_spec == data_dir else data_dir
        return RegistryCheck(
            self.where, self.endpoint, plan.action, plan.reasons,
            f"{acted.name} {acted.id[:12]}" if acted is not None else "", plan.note, plan.refusal,
            data_dir or (self.setup.s3.name if self.setup.s3 else ""), found.repositories.get(source, -1), ship,
            tuple(ImagePlan(i.source, i.ref.target, "in registry" if i.current(t) else "push")
                  for i, t in zip(images, tags, strict=True)),
            free=facts.space.get(data_dir, -1) if data_dir and not self.setup.s3 else -1,
            needed=self._needed(facts))

    def _needed(self, facts: MasterFacts) -> int:
        """--check: the bytes a push would write into this registry (-1: it could not be asked)."""
        from nodecfg.push import pipeline

        api = self.api(facts) if facts.http_status in (200, 401) else None
        try:
            return pipeline.needed(self.source, api)
        except (HostError, OSError, ValueError):  # a registry --check cannot ask (a TLS switch, say): not known
            return -1
        finally:
            if api is not None:
                api.close()

    # apply

    def bring_up(self, facts: MasterFacts, plan: adopt.ContainerPlan, image_id: str, ship: bool,
                 env_file: Secret | None) -> tuple[ReplicaUp, MasterFacts]:
        """The registry image loaded if this host lacks it, then the container brought to the plan."""
        s = self.setup.settings
        if ship:
            self.progress(f"{self.where}: loading {s.image} on the master (docker load) from {self.source}")
            image_id = self.master.load_image(self.source.registry_image(s.image, facts.platform), s.image, image_id)
        action, reasons, facts = self._bring_container(facts, plan, image_id, env_file)
        return ReplicaUp(self.where, self.endpoint, action, tuple(reasons), facts.container_id, ship,
                         plan.note), facts

    def _bring_container(self, facts: MasterFacts, plan: adopt.ContainerPlan, image_id: str,
                         env_file: Secret | None) -> tuple[adopt.Action, list[str], MasterFacts]:
        """The container brought to the plan: (action, reasons, facts after). A new htpasswd or
        certificate restarts a container that was otherwise kept (registry:2 reads both at start); a
        new storage environment recreates it (docker reads --env-file at creation); an adopted
        registry keeps its own htpasswd."""
        s, creds = self.setup.settings, self.setup.creds
        action, reasons = plan.action, list(plan.reasons)
        if plan.note:
            self.progress(f"{self.where}: {plan.note}")
        htpasswd = None
        if plan.adopted is None and creds is not None and not htpasswd_matches(facts.htpasswd, creds):
            htpasswd = htpasswd_line(creds)
            if action == "keep":
                action, reasons = "restart", ["credentials changed"]
        tls_new = self.tls_files if self.tls_files is not None and self.tls_files.sums != facts.tls_sums else None
        if tls_new is not None and plan.adopted is None and action == "keep":
            action, reasons = "restart", ["TLS certificate changed"]
        env_new = env_file if env_file is not None and env_file != facts.env_file else None
        if env_new is not None and plan.adopted is None and action in ("keep", "start", "restart"):
            action, reasons = "recreate", [*reasons, "storage credentials or http.secret changed"]
        applied = _APPLIED.get(action)
        if applied is None:  # keep, adopt
            if plan.adopted is not None:
                facts = replace_fields(facts, container_id=plan.adopted.id)
            return action, reasons, facts
        self.progress(f"{self.where}: registry container: {action} ({'; '.join(reasons)})")
        spec = ContainerSpec(image_id, s.port, "" if self.setup.s3 else (plan.data_dir or s.data_dir),
                             creds is not None, plan.name or s.container, tls=s.tls is not None, s3=self.setup.s3)
        res = self.master.run(apply_script(spec, applied, s, self.master.step, htpasswd=htpasswd, auth=creds,
                                           tls_files=tls_new, env_file=env_new), "starting the registry")
        if not res.ok:
            raise HostError(f"{self.where}: starting the registry failed: {whole(res)}")
        after = parse_facts(res.stdout, self.where)
        return action, reasons, replace_fields(facts, http_status=after.http_status, container=after.container,
                                               container_id=after.container_id)

    # the registry's HTTP API, through this host's connection

    def api(self, facts: MasterFacts | None = None) -> RegistryAPI:
        return self.target(facts).api()

    def target(self, facts: MasterFacts | None = None) -> Target:
        """HTTP to this replica's registry: through its SSH connection (to the container's own address
        when the facts know it), or with --direct to its address."""
        s = self.setup.settings
        route = facts.route(s.port) if facts is not None else None
        return Target(self.where, self.master.connector(s, direct=self.setup.direct, ca=self.ca, route=route,
                                                        address=self.endpoint.rpartition(":")[0].strip("[]")),
                      self.setup.creds)

    def close(self) -> None:
        self.master.close()


def want(setup: Setup, image_id: str) -> adopt.Want:
    """What the inventory asks of the registry container, and which of its keys it set."""
    s = setup.settings
    return adopt.Want(s.container, s.port, s.data_dir, setup.creds is not None, image_id, s.image,
                      frozenset(s.explicit & {"port", "data_dir", "auth"}), setup.replace, tls=s.tls is not None,
                      storage=setup.s3.name if setup.s3 else "")


def endpoint(host: Host | None, settings: RegistrySettings, *, alone: bool) -> str:
    """The endpoint a replica serves the nodes at: the registry's own (registry.address) when it is
    the only one, else its host's address (registry.address then names what pulls by path use)."""
    return settings.endpoint if alone or host is None else endpoint_of(host.address, settings.port)


_APPLIED: dict[adopt.Action, ApplyAction] = {"create": "create", "recreate": "recreate", "start": "start",
                                             "restart": "restart"}
