"""What registry-up, its --check and registry-down return (report.py prints them; `--json` dumps them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # types only: an unchanged registry-up imports no more than it runs
    from nodecfg.push.pipeline import Outcome
    from nodecfg.registry.adopt import Action

    ReplicaAction = Action | Literal["failed"]

ImageAction = Literal["push", "in registry"]  # --check: what would happen to an image


@dataclass(frozen=True)
class ImageOutcome:
    source: str
    target: str
    size: int
    action: Outcome
    seconds: float
    error: str = ""


Sync = Literal["pushed", "copied", "shared", "up to date", "failed", ""]  # how a replica got the images


@dataclass(frozen=True)
class ReplicaUp:
    """One replica after registry-up (the master is the first): its container, and how it got the images."""

    master: str  # the host, as named in messages
    endpoint: str  # host:port the nodes pull from
    container_action: ReplicaAction
    container_reasons: tuple[str, ...] = ()
    container_id: str = ""
    shipped_registry_image: bool = False
    note: str = ""
    error: str = ""  # container_action "failed": why
    sync: Sync = ""  # pushed here; copied from the first replica inside the site; shared (one S3 bucket); ...
    copied: int = 0  # blobs copied from the first replica
    copied_bytes: int = 0


@dataclass(frozen=True)
class RegistryUpResult:
    master: str
    endpoint: str
    container_action: Action
    container_reasons: tuple[str, ...]
    container_id: str
    shipped_registry_image: bool
    images: tuple[ImageOutcome, ...]
    catalog: dict[str, list[str]]
    auth: bool
    transfer: dict[str, Any] | None = None  # what went over the wire (push.pipeline.PushStats)
    note: str = ""  # an adopted registry, or a setting kept from the container found
    replicas: tuple[ReplicaUp, ...] = ()  # with registry.replicas: every replica, the master first
    warnings: tuple[str, ...] = ()  # a certificate or CA that expires within 30 days (registry/expiry.py)

    @property
    def exit_code(self) -> int:
        failed = any(i.action == "failed" for i in self.images) or any(r.error for r in self.replicas)
        return 1 if failed else 0


@dataclass(frozen=True)
class ImagePlan:
    source: str
    target: str
    action: ImageAction


@dataclass(frozen=True)
class RegistryCheck:
    """registry-up --check: what would be done; nothing was changed."""

    master: str
    endpoint: str
    container_action: Action
    container_reasons: tuple[str, ...]
    container: str  # name and short id of the container acted on ("" none)
    note: str
    refusal: str
    data_dir: str
    repositories: int  # in data_dir (-1: the directory does not exist yet)
    ship_registry_image: bool
    images: tuple[ImagePlan, ...]
    free: int = -1  # bytes free under data_dir (or its nearest parent); -1: not known (a volume, S3)
    needed: int = -1  # bytes the push would write there (the blobs the registry lacks); -1: not known
    replicas: tuple[RegistryCheck, ...] = ()  # with registry.replicas: the others, each as this one
    warnings: tuple[str, ...] = ()  # a certificate or CA that expires within 30 days (registry/expiry.py)

    @property
    def exit_code(self) -> int:
        if self.refusal or any(r.refusal for r in self.replicas):
            return 2
        return 1 if any(0 <= r.free < r.needed for r in (self, *self.replicas)) else 0  # would not fit


DownAction = Literal["removed", "absent"]
PurgeOutcome = Literal["purged", "kept", "nothing", "bucket", "not asked"]


@dataclass(frozen=True)
class RegistryDownResult:
    master: str
    container: DownAction
    purge: PurgeOutcome
    data_dir: str  # the data directory (or volume) purged or kept ("" none known)
    why_kept: str = ""  # purge == "kept": why nothing was deleted
    replicas: tuple[RegistryDownResult, ...] = ()  # with registry.replicas: the others, each as this one
    error: str = ""  # this host failed: why (the others went on)

    @property
    def exit_code(self) -> int:
        hosts = (self, *self.replicas)
        return 1 if any(h.error for h in hosts) else 2 if any(h.purge == "kept" for h in hosts) else 0


@dataclass(frozen=True)
class PrunedTag:
    target: str  # repository:tag
    digest: str  # the manifest it names
    why: str = ""  # a tag kept: why


@dataclass(frozen=True)
class PruneHost:
    """registry-prune on one registry host (or, with S3 storage, on the bucket the replicas share)."""

    master: str
    storage: str  # the data directory, or the S3 bucket
    removed: tuple[PrunedTag, ...] = ()  # check: would be removed
    kept: tuple[PrunedTag, ...] = ()  # tags the inventory no longer lists that stay, and why
    repositories: int = 0  # repositories with a tag removed
    manifests: int = 0  # manifests deleted (an index's children count)
    bytes_estimated: int = 0  # blob and manifest bytes only the removed tags use (from their manifests)
    used_before: int = -1  # du of the data directory before and after (-1: not measured: check, S3, nothing to do)
    used_after: int = -1
    gc: str = ""  # the garbage collector's summary line
    stopped: float = -1  # seconds the registry did not serve while it collected (-1: not stopped)
    note: str = ""  # e.g. deletes enabled on nodecfg's container (recreated)
    error: str = ""

    @property
    def bytes_freed(self) -> int:
        """Measured on the host (du before - after); -1 when not measured."""
        return self.used_before - self.used_after if self.used_before >= 0 and self.used_after >= 0 else -1


@dataclass(frozen=True)
class PruneResult:
    check: bool
    hosts: tuple[PruneHost, ...]  # the master first, then each replica

    @property
    def exit_code(self) -> int:
        return 1 if any(h.error for h in self.hosts) else 0
