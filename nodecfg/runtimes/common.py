"""Shapes shared by the runtime planners (a service's facts, a file to write, a runtime's plan) and
the shell fragments every node script uses (a bounded wait, the runtimes' unit states)."""

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


def wait_until(condition: str, seconds: float, interval: float = 0.25) -> str:
    """Shell: re-run `condition` until it succeeds or `seconds` have passed (never longer)."""
    return (f"end=$(( $(date +%s) + {seconds:g} )); until {condition}; do "
            f"[ \"$(date +%s)\" -ge \"$end\" ] && break; sleep {interval:g}; done")


def unit_states(prefix: str, props: tuple[str, ...]) -> str:
    """Shell: one `systemctl show` for docker and containerd, one line per unit:
    `<prefix><runtime>\\t<prop1>\\t<prop2>...` (the runtime without `.service`)."""
    flags = " ".join(f"-p {p}" for p in ("Id", *props))
    take = " ".join(f'else if (kv[1] == "{p}") v{i} = kv[2];' for i, p in enumerate(props))
    fields = "".join("\\t%s" for _ in props)
    values = "".join(f", v{i}" for i in range(len(props)))
    resets = "".join(f' v{i} = "";' for i in range(len(props)))
    return (f"systemctl show docker.service containerd.service {flags} 2>/dev/null | "
            f"awk 'BEGIN {{ RS = \"\"; FS = \"\\n\" }} {{ id = \"\";{resets} "
            f"for (i = 1; i <= NF; i++) {{ split($i, kv, \"=\"); if (kv[1] == \"Id\") id = kv[2]; {take} }} "
            f"sub(/\\.service$/, \"\", id); printf \"{prefix}%s{fields}\\n\", id{values} }}'")
