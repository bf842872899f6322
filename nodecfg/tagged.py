"""The one codec for the tagged lines the node scripts print (`rec` in nodecfg/scripts/lib.sh).

A record is one line: a tag, then its fields, each after a tab (`docker.pull<TAB>0<TAB>b64...`).
A field never holds a tab or a newline: blobs travel base64. Every reader of node output
(configure's facts and apply, smoke's probe, the runtimes' verifies) decodes through here.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import NamedTuple

SEP = "\t"


class Record(NamedTuple):
    tag: str
    fields: tuple[str, ...]

    @property
    def rest(self) -> str:
        """The fields as one string, tabs kept (a value that is itself tab-separated)."""
        return SEP.join(self.fields)

    def field(self, i: int) -> str:
        """Field `i`, "" when the record has fewer."""
        return self.fields[i] if i < len(self.fields) else ""


def encode(tag: str, *fields: str) -> str:
    """One record as a line (with its newline), as `rec` prints it."""
    for value in (tag, *fields):
        if SEP in value or "\n" in value:
            raise ValueError(f"a record field cannot hold a tab or a newline: {value[:40]!r}")
    return SEP.join((tag, *fields)) + "\n"


def decode_line(line: str) -> Record:
    tag, *fields = line.split(SEP)
    return Record(tag, tuple(fields))


def decode(output: str) -> Iterator[Record]:
    """Every line of `output` as a record, in order (a line without a tab is a tag alone)."""
    for line in output.splitlines():
        yield decode_line(line)


def last_values(output: str) -> dict[str, list[str]]:
    """tag -> the fields of its last record."""
    return {r.tag: list(r.fields) for r in decode(output)}


def b64text(value: str) -> str:
    """A base64 field as text ("" when empty; the raw value when it is not base64)."""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", "replace")
    except ValueError:
        return value
