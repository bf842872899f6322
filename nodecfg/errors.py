"""One exception tree. `cli.main` is the only place that turns these into messages and exit codes.

- `UsageError` (exit 2): the user asked for something malformed (flags, inventory, key files).
  Raised before any host is contacted.
- `HostError`: one host could not be brought to the desired state. Caught per host by the fleet
  runner and reported in that host's result; it never stops the other hosts.
- Anything else escaping to `main` is a bug and gets a real traceback.
"""

from __future__ import annotations


class NodecfgError(Exception):
    """Base of every error nodecfg raises on purpose."""

    exit_code = 1


class UsageError(NodecfgError):
    """Bad flags, bad inventory, missing files: one line, exit 2, no host contacted."""

    exit_code = 2


class InventoryError(UsageError):
    """The inventory file is unreadable, malformed or inconsistent."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.path, self.line, self.key = path, line, key
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(f"{where}{key + ': ' if key else ''}{message}")


class HostError(NodecfgError):
    """A host failed; the message says why in operator terms."""


class UnreachableError(HostError):
    """The host could not be reached over SSH (timeout, refused, no route)."""


class BundleError(NodecfgError):
    """An image bundle is missing a blob, truncated, corrupt, or not a bundle at all (exit 1)."""


class FetchError(NodecfgError):
    """An image could not be fetched from its upstream registry (unreachable, 401, 404, bad digest)."""


class ConflictError(UsageError):
    """What is on a host is not nodecfg's to change (a registry it did not make, a port something
    else holds): exit 2, one line with the reason and the one setting or flag that resolves it."""
