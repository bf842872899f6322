"""Container runtimes on a node, one module each, behind the `Runtime` protocol (`base.py`).

`RUNTIMES` is the registry: configure.py, smoke.py and report.py iterate over it and name no
runtime. Its order is the reports' order (recap columns, --json keys, smoke checks); `layer` orders
the work on a node (files and results lowest layer first, reloads/restarts and rollbacks highest
first).

Adding a runtime touches one new module under `nodecfg/runtimes/` (an object satisfying
`base.Runtime`: its unit and fact paths, its pure plan, its verify and smoke diagnoses), its shell
functions `nodecfg/scripts/<name>.sh` (facts, validate, verify, rollback, probe), its templates
under `templates/`, its tests, and the one line below that registers it — nothing in configure.py,
smoke.py, report.py or the other scripts.
`tests/unit/test_runtimes.py` registers a fake third runtime to prove it.
"""

from __future__ import annotations

from typing import Any

from nodecfg.runtimes import containerd, containers, docker
from nodecfg.runtimes.base import Runtime

RUNTIMES: tuple[Runtime[Any], ...] = (docker.RUNTIME, containerd.RUNTIME, containers.RUNTIME)


def registered() -> tuple[Runtime[Any], ...]:
    """The registered runtimes, in report order (read at call time: tests register more)."""
    return RUNTIMES


def named(name: str) -> Runtime[Any]:
    for rt in RUNTIMES:
        if rt.name == name:
            return rt
    raise KeyError(f"no runtime named {name!r}")


def by_layer(*, reverse: bool = False) -> tuple[Runtime[Any], ...]:
    """Work order on a node: lowest layer first (writes), or highest first (actions, rollbacks)."""
    return tuple(sorted(RUNTIMES, key=lambda rt: rt.layer, reverse=reverse))
