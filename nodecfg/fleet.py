"""Run a per-host function over a bounded worker pool and collect every host's outcome.

Like Fabric's `GroupResult`, a fleet run never stops at the first failure: each host gets a
`HostResult`, failed or not. Unlike Fabric's ThreadingGroup, the pool is bounded (`forks`).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from nodecfg.errors import NodecfgError, UnreachableError
from nodecfg.inventory import Host

T = TypeVar("T")
DEFAULT_FORKS = 20


@dataclass(frozen=True)
class HostResult(Generic[T]):
    host: Host
    value: T | None = None
    error: str | None = None
    seconds: float = 0.0
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class FleetResult(Generic[T]):
    results: tuple[HostResult[T], ...] = field(default_factory=tuple)

    @property
    def succeeded(self) -> tuple[HostResult[T], ...]:
        return tuple(r for r in self.results if r.ok)

    @property
    def failed(self) -> tuple[HostResult[T], ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def run_fleet(hosts: Sequence[Host], fn: Callable[[Host], T], *, forks: int = DEFAULT_FORKS,
              on_done: Callable[[HostResult[T]], Any] | None = None) -> FleetResult[T]:
    """Call `fn(host)` for every host, at most `forks` at a time; results in inventory order.

    `fn` signals a host failure by raising `NodecfgError` (its message is the host's error). Any
    other exception is a bug: it is reported for that host with its traceback, and the rest go on.
    """
    def one(host: Host) -> HostResult[T]:
        start = time.monotonic()
        try:
            value = fn(host)
        except UnreachableError as exc:
            return HostResult(host, error=str(exc), seconds=time.monotonic() - start,
                              unreachable=True)
        except NodecfgError as exc:
            return HostResult(host, error=str(exc), seconds=time.monotonic() - start)
        except Exception as exc:  # noqa: BLE001 -- a bug: report it with the traceback, keep going
            tb = traceback.format_exc()
            return HostResult(host, error=f"internal error: {exc!r}\n{tb}",
                              seconds=time.monotonic() - start)
        # a value may carry its own failure (a node that ran but could not be configured)
        error = getattr(value, "error", None) or None
        return HostResult(host, value=value, error=error, seconds=time.monotonic() - start)

    results: dict[Host, HostResult[T]] = {}
    if not hosts:
        return FleetResult(())
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        futures = {pool.submit(one, h): h for h in hosts}
        for fut in as_completed(futures):
            res = fut.result()
            results[res.host] = res
            if on_done is not None:
                on_done(res)
    return FleetResult(tuple(results[h] for h in hosts))
