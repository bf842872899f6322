"""The lab's errors. `nodecfg_lab.cli.main` is the only place that turns them into one line on
stderr and an exit code; anything else escaping is a bug and gets its traceback."""

from __future__ import annotations


class LabError(Exception):
    """The lab could not be built, started or stopped (exit 1)."""

    exit_code = 1


class LabUsageError(LabError):
    """Bad flags (an unknown flavor, a --minimal that names no lab host): exit 2, reported before
    the Docker engine is asked anything."""

    exit_code = 2
