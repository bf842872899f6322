"""What registry-up, its --check and registry-down return (report.py prints them; `--json` dumps them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from nodecfg.push.pipeline import Outcome
from nodecfg.registry.adopt import Action

ImageAction = Literal["push", "in registry"]  # --check: what would happen to an image


@dataclass(frozen=True)
class ImageOutcome:
    source: str
    target: str
    size: int
    action: Outcome
    seconds: float
    error: str = ""


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

    @property
    def exit_code(self) -> int:
        return 1 if any(i.action == "failed" for i in self.images) else 0


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

    @property
    def exit_code(self) -> int:
        return 2 if self.refusal else 0


DownAction = Literal["removed", "absent"]
PurgeOutcome = Literal["purged", "kept", "nothing", "not asked"]


@dataclass(frozen=True)
class RegistryDownResult:
    master: str
    container: DownAction
    purge: PurgeOutcome
    data_dir: str  # the data directory (or volume) purged or kept ("" none known)
    why_kept: str = ""  # purge == "kept": why nothing was deleted

    @property
    def exit_code(self) -> int:
        return 2 if self.purge == "kept" else 0
