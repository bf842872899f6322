"""What an operator reads: secrets masked in any text, a node's errors in one line.

Outside the runtimes package on purpose: the reports import it, and importing `nodecfg.runtimes`
loads every runtime's module (registry-up's report needs none of them).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from typing import Any

MASK = "***"
SECRET_KEYS = frozenset({"password", "passwd", "auth", "identitytoken", "registrytoken",
                         "authorization", "token", "secret", "x-registry-auth"})
_STR = r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\''
# TOML `key = "v"` / `key = ["v", ...]` (also inside inline tables and after dotted keys)
_TOML_KV = re.compile(r'(?P<key>"[^"\n]*"|\'[^\'\n]*\'|[A-Za-z0-9_-]+)(?P<sep>\s*=\s*)'
                      rf'(?P<val>{_STR}|\[[^\]\n]*\])')
# JSON `"key": "v"`
_JSON_KV = re.compile(rf'(?P<key>"(?:[^"\\\n]|\\.)*")(?P<sep>\s*:\s*)(?P<val>{_STR})')
# `Authorization: Basic xyz` in free text (an error line, a header dump)
_HEADER = re.compile(r"(?i)\b(authorization|proxy-authorization)(\s*[:=]\s*)(basic|bearer)\s+[^\s\"',;]+")


def _is_secret_key(key: str) -> bool:
    k = key.strip("\"'").lower()
    return k in SECRET_KEYS or k.endswith(("password", "token", "secret"))


_CREDENTIAL = re.compile(r"""^\[?\s*["'](basic|bearer)\s""", re.IGNORECASE)


def _mask_kv(match: re.Match[str]) -> str:
    if not _is_secret_key(match.group("key")) and not _CREDENTIAL.match(match.group("val")):
        return match.group(0)
    return f'{match.group("key")}{match.group("sep")}"{MASK}"'


def _secret_values(doc: Any, under_secret: bool = False) -> Iterator[str]:
    if isinstance(doc, dict):  # a table's own keys decide (`auth.username` is not a secret)
        for key, value in doc.items():
            yield from _secret_values(value, _is_secret_key(str(key)))
    elif isinstance(doc, list):
        for value in doc:
            yield from _secret_values(value, under_secret)
    elif isinstance(doc, str) and under_secret and doc:
        yield doc


def secret_values(text: str) -> set[str]:
    """Every credential value in `text` parsed as JSON or TOML (nothing when it parses as
    neither); a multi-line value also gives each of its lines, so a diff line holding one is
    masked too."""
    values: set[str] = set()
    for parse in (json.loads, tomllib.loads):
        try:
            found = set(_secret_values(parse(text)))
        except (ValueError, tomllib.TOMLDecodeError, RecursionError):
            continue
        values |= found | {ln.strip() for v in found for ln in v.splitlines()}
    return {v for v in values if len(v) >= 4 and v != MASK}  # shorter ones would garble text


def mask_secrets(text: str, values: set[str] | None = None) -> str:
    """`text` with every credential value replaced by `***`, whatever the format: the values of
    TOML and JSON keys such as password, auth, identitytoken, registrytoken and Authorization
    headers (hosts.toml `header`, docker's config.json `auths`), `Basic`/`Bearer` values under any
    key, and `Authorization: Basic ...` in free text. Line structure is kept.

    Two passes: each line by pattern (works on broken files, fragments, a diff's lines), then
    every value of `values` (default: `secret_values(text)`) wherever it appears (multi-line
    strings, arrays over several lines)."""
    out = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)} {MASK}", text)
    out = _JSON_KV.sub(_mask_kv, out)
    out = _TOML_KV.sub(_mask_kv, out)
    for value in sorted(secret_values(text) if values is None else values, key=len, reverse=True):
        out = out.replace(value, MASK)
    return out


MESSAGE_LIMIT = 300
_BLOB = re.compile(r"^\S{80,}$")  # base64, a hex dump: output, never a reason
_RECORD = re.compile(r"^[a-z][\w.-]*\t")  # a tagged line of a node script: data, not a reason


def last_meaningful_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A node's raw output (or a long message) as one meaningful line of at most `limit`
    characters: the last line that is neither a blob nor a script's data record, secrets masked."""
    lines = [ln.strip() for ln in mask_secrets(text).splitlines()]
    meaningful = [ln for ln in lines if ln and not _BLOB.match(ln) and not _RECORD.match(ln)]
    line = " ".join((meaningful[-1] if meaningful else "").split())
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"
