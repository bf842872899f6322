"""Shapes shared by the runtime planners: a service's facts, a file to write, a runtime's plan."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServiceFacts:
    """What systemd says about a runtime's unit, plus its version."""

    name: str
    installed: bool = False
    masked: bool = False
    active: bool = False
    active_since: str = ""  # ActiveEnterTimestampMonotonic: changes on every (re)start
    main_pid: int = 0
    version: str = ""
    exec_start: tuple[str, ...] = ()
    drop_ins: tuple[str, ...] = ()

    @property
    def major(self) -> int:
        head = self.version.lstrip("v").split(".")[0]
        return int(head) if head.isdigit() else 0


@dataclass(frozen=True)
class FileChange:
    """One file to (over)write atomically on a node, the previous version kept as a backup."""

    path: str
    content: str
    mode: int
    old: str | None  # None: the file doesn't exist yet
    reason: str
    secret: bool = False  # never shown in --diff or logs
    validate: str = ""  # "json" | "dockerd" | "toml" | "containerd" | ""


@dataclass(frozen=True)
class RuntimePlan:
    """What one runtime on one node needs."""

    runtime: str  # docker | containerd
    status: str  # configure | absent | masked | failed
    note: str = ""
    files: tuple[FileChange, ...] = field(default_factory=tuple)
    action: str = "none"  # none | reload | restart

    @property
    def changed(self) -> bool:
        return bool(self.files)
