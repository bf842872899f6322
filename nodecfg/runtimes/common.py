"""The text rules every report follows (secrets masked, a node's errors in one line). The shell
every node script uses (a bounded wait, settling units) is nodecfg/scripts/lib.sh. The shapes the runtimes share
(a service's facts, a file as read from a node, a file to write, a runtime's plan) live in
`base.py` and are re-exported here."""

from __future__ import annotations

import json
from typing import Any

from nodecfg.errors import NodecfgError
from nodecfg.runtimes.base import (  # re-exported: the shapes every runtime shares
    FileChange,
    FileFact,
    FileState,
    RuntimePlan,
    ServiceFacts,
)

__all__ = [
    "FileChange",
    "FileFact",
    "FileState",
    "RuntimePlan",
    "ServiceFacts",
    "last_meaningful_line",
    "mask_secrets",
    "secret_values",
]


def json_object(existing: str | None, source: str, error: type[NodecfgError]) -> dict[str, Any]:
    """An existing JSON config file as its object ({} when absent or empty), or `error` in one line
    when it is not one: such a file is left untouched."""
    if existing is None or not existing.strip():
        return {}
    try:
        doc = json.loads(existing)
    except ValueError as exc:
        raise error(f"{source} is not valid JSON ({exc}); left untouched") from None
    if not isinstance(doc, dict):
        raise error(f"{source} is not a JSON object; left untouched")
    return doc


# what an operator reads (re-exported: nodecfg/masking.py holds it, outside this package)
from nodecfg.masking import MASK, MESSAGE_LIMIT, SECRET_KEYS, last_meaningful_line, mask_secrets, secret_values  # noqa: E402

__all__ = ["MASK", "MESSAGE_LIMIT", "SECRET_KEYS", "last_meaningful_line", "mask_secrets", "secret_values"]
