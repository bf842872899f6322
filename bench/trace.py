"""Where nodecfg's time goes on a lab fleet: timestamps between the steps of the node scripts.

    .venv/bin/python bench/trace.py configure [FORKS]   # on a fresh lab after registry-up
    .venv/bin/python bench/trace.py smoke [FORKS]       # on a configured lab

In-process: `ssh.run` is wrapped to time every remote command, and the scripts nodecfg sends get a
`printf 'T <step> <time>'` before each top-level step. Prints the median and max per step.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

import nodecfg_lab

from nodecfg import configure, smoke, ssh
from nodecfg.inventory import load_inventory
from nodecfg.scripts import NodeScript

SKIP = ("else", "fi", "}", "esac", "done", "do", "drm()", "dhas()", "dinfo()", "user =", "NODECFG_EOF")


def instrument(script: str) -> tuple[str, list[str]]:
    """The script with a timestamp line before each top-level step, and the steps' source lines."""
    out, steps = [], []
    heredoc = quoted = False  # inside a here-doc, inside a multi-line single-quoted string
    for line in script.split("\n"):
        was_quoted = quoted
        quoted ^= line.count("'") % 2 == 1
        if heredoc:
            heredoc = line != "NODECFG_EOF"
        elif was_quoted or line.rstrip().endswith(("()  {", "() {")):
            pass  # a string's next line, a function's definition: not a step
        elif line.strip() and not line.startswith(" ") and not line.strip().startswith(SKIP):
            out.append(f"printf 'T\\t%s\\t%s\\n' {len(steps)} \"$(date +%s.%N)\"")
            steps.append(line.strip()[:70])
        if "<<'NODECFG_EOF'" in line:
            heredoc = True
        out.append(line)
    out.append(f"printf 'T\\t%s\\t%s\\n' {len(steps)} \"$(date +%s.%N)\"")
    steps.append("(end)")
    return "\n".join(out), steps


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else "configure"
    forks = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    inv = load_inventory(nodecfg_lab.lab_paths().inventory)
    outputs: dict[int, list[tuple[float, str]]] = defaultdict(list)
    steps: list[str] = []
    real_run = ssh.run

    def run(c: Any, command: str, **kw: Any) -> ssh.RunResult:
        start = time.monotonic()
        res = real_run(c, command, **kw)
        outputs[threading.get_ident()].append((time.monotonic() - start, res.stdout))
        return res

    def wrap(fn: Callable[..., NodeScript]) -> Callable[..., NodeScript]:
        def traced(*args: Any, **kwargs: Any) -> NodeScript:
            script = fn(*args, **kwargs)
            text, names = instrument(script.program)
            steps[:] = names
            return dataclasses.replace(script, program=text)
        return traced

    ssh.run = run  # type: ignore[assignment]
    start = time.monotonic()
    if what == "smoke":
        smoke.probe_script = wrap(smoke.probe_script)  # type: ignore[assignment]
        result = smoke.smoke_test(inv, inv.nodes, image=None, forks=forks)
        ok = len(result.fleet.succeeded)
    else:
        configure.apply_script = wrap(configure.apply_script)  # type: ignore[assignment]
        fleet = configure.configure_nodes(inv, inv.nodes, configure.Options(), forks=forks)
        ok = len(fleet.succeeded)
    print(f"{what}: {time.monotonic() - start:.2f} s for {len(inv.nodes)} nodes, {ok} ok")
    per_step: dict[str, list[float]] = defaultdict(list)
    for runs in outputs.values():
        for i, (seconds, stdout) in enumerate(runs):
            per_step[f"remote command {i + 1} (wall)"].append(seconds)
            marks = [(int(p[1]), float(p[2])) for p in
                     (ln.split("\t") for ln in stdout.splitlines() if ln.startswith("T\t"))]
            for (a, ta), (_, tb) in itertools.pairwise(marks):
                per_step[f"  {steps[a] if a < len(steps) else a}"].append(tb - ta)
    for name, values in per_step.items():
        print(f"{statistics.median(values):6.2f} s median {max(values):6.2f} s max  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
