"""Progress on stderr: one bar, phase after phase, with bytes and speed; silent when stderr is
not a terminal (CI logs, pipes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import TaskID


def human(size: float) -> str:
    """Decimal units, as registries and docker print sizes: 512 B, 2.1 MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _amount_column() -> Any:
    """Bytes (with speed) or a count, done / total. rich is imported here, not with the module: the
    push paths import `human` and need no bar (an unchanged run draws none)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class _Amount(ProgressColumn):
        def render(self, task: Task) -> Text:
            if task.fields.get("unit") == "bytes":
                speed = f"  {human(task.speed)}/s" if task.speed else ""
                return Text(f"{human(task.completed)} / {human(task.total or 0)}{speed}")
            return Text(f"{int(task.completed)} / {int(task.total or 0)}")

    return _Amount()


class Bar:
    """One progress bar on stderr, phase after phase; nothing at all when stderr is no terminal."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), _amount_column(),
                                  TimeRemainingColumn(), console=console,
                                  disable=not (enabled and console.is_terminal), transient=True)
        self._task: TaskID | None = None

    def __enter__(self) -> Bar:
        self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._progress.stop()

    def phase(self, description: str, total: int, unit: str = "bytes") -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total, unit=unit)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)
