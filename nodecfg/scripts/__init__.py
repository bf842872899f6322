"""The shell scripts nodecfg runs on nodes and the master, as files: `*.sh` package data beside this module.

A node script is a program and its values, kept apart (`NodeScript`): the program is `lib.sh`, the
registered runtimes' function files (`<runtime>.sh`, or a runtime's own `shell()` text), then the
main script (`facts.sh`, `apply.sh`, `rollback.sh`, `probe.sh`, `call.sh`; on the master,
after `master.sh`, `master_facts.sh`, `master_apply.sh` or `master_down.sh`: nodecfg/registry/
container.py) — fixed text with no value formatted into it; the values are its positional
arguments, each shell-quoted as one word, and data that must stay out of a process's argv (file
contents, credentials) goes on stdin. The remote command is `sh -c PROGRAM nodecfg ARG...`, one SSH
round trip.

What the scripts print is read by one codec, `nodecfg.tagged`. shellcheck checks every file here
and every assembled program (tests/unit/test_scripts.py).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

PACKAGE = "nodecfg.scripts"


@cache
def read(name: str) -> str:
    """One script file of the package (read through importlib.resources: works from a wheel)."""
    return files(PACKAGE).joinpath(name).read_text(encoding="utf-8")


def names() -> tuple[str, ...]:
    """Every script file shipped."""
    return tuple(sorted(p.name for p in files(PACKAGE).iterdir() if p.name.endswith(".sh")))


@dataclass(frozen=True)
class NodeScript:
    """A program (fixed text) and its values: positional arguments and stdin data."""

    program: str
    args: tuple[str, ...] = ()
    stdin: bytes = b""

    def command(self, prefix: str = "") -> str:
        """The remote command: `[prefix ]sh -c PROGRAM nodecfg ARG...`, every word quoted."""
        words = ["sh", "-c", self.program, "nodecfg", *self.args]
        return (f"{prefix} " if prefix else "") + " ".join(shlex.quote(w) for w in words)

    def argv(self) -> list[str]:
        """The same as an argv, to run it here (tests)."""
        return ["sh", "-c", self.program, "nodecfg", *self.args]


def program(main: str, libraries: Iterable[str] = (), *, strip: bool = True) -> str:
    """`lib.sh`, then each library text, then the main script `main` (a file name); `strip`: without
    their comment lines and blank lines (bytes on every round trip; no string in them spans such a
    line). shellcheck reads the unstripped text, directives included. The same program is made once
    a run (every node of a fleet runs it)."""
    return _program(main, tuple(libraries), strip)


@cache
def _program(main: str, libraries: tuple[str, ...], strip: bool) -> str:
    text = "\n".join([read("lib.sh"), *libraries, read(main)])
    if not strip:
        return text
    return "\n".join(ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")) + "\n"


def script(main: str, libraries: Iterable[str], args: Iterable[str], stdin: bytes = b"") -> NodeScript:
    return NodeScript(program(main, libraries), tuple(args), stdin)
