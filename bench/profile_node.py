"""Where configure-nodes spends its CPU per node (issue 24): on the node, and here, step by step.

    .venv/bin/python bench/profile_node.py [--runs N] [--first] [--tree DIR] [--json OUT]

On the lab of $NODECFG_LAB_DIR (fresh nodes for `--first`), configure-nodes runs in-process, one
node at a time (forks=1, so this process's CPU between two calls belongs to that node), `--runs`
times (the first of them is the first run on fresh nodes; `--first` prints it apart). `ssh.connect`
and `ssh.run` are wrapped:

- node CPU: the node container's cgroup (cgroup v1 `cpuacct/docker/<id>/cpuacct.usage`, v2
  `.../docker-<id>.scope/cpu.stat` usage_usec), read here before and after each remote command.
  CPU time is what contention on a shared machine changes least: a lab node is a local container,
  and everything it runs for nodecfg (sshd's session, the script, the daemons it calls, a restart's
  start-up while the command waits) is charged to it.
- pids: new pids in the node's pid namespace (processes and threads: a Go binary's start shows its
  threads too), read with `nsenter -p` (its own `cat` is one pid, subtracted).
- inside each script, before each top-level line and at the start and end of every multi-line
  `*_facts`, `*_verify` and `settle_units` function, a marker line on stderr read by the shell's
  builtins (no fork): the cgroup's usage and the namespace's last pid. The steps are those lines.
- here: this process's CPU (getrusage: user + sys, paramiko's threads included) around each call,
  and between them (the plan).

`--tree DIR` imports nodecfg from DIR (the "before" checkout: `git worktree add /tmp/perf-before
6baf43c`, run with that tree's own venv's python); the lab is read from $NODECFG_LAB_DIR only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _cgroup_reader(container_id: str) -> Path:
    for p in (Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage"),
              Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat"),
              Path(f"/sys/fs/cgroup/docker/{container_id}/cpu.stat")):
        if p.exists():
            return p
    raise SystemExit(f"no cgroup CPU counter found for container {container_id}")


def _usage_ns(p: Path) -> int:
    text = p.read_text()
    if p.name == "cpu.stat":
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "usage_usec":
                return int(v) * 1000
    return int(text)


class Node:
    def __init__(self, name: str, lab: str) -> None:
        out = subprocess.run(["docker", "inspect", "-f", "{{.Id}} {{.State.Pid}}", f"{lab}-{name}"],
                             capture_output=True, text=True, check=True).stdout.split()
        self.id, self.pid = out[0], int(out[1])
        self.counter = _cgroup_reader(self.id)

    def cpu_ns(self) -> int:
        return _usage_ns(self.counter)

    def last_pid(self) -> int:
        out = subprocess.run(["nsenter", "-t", str(self.pid), "-p", "cat", "/proc/sys/kernel/ns_last_pid"],
                             capture_output=True, text=True, check=True).stdout
        return int(out)


# ---------------------------------------------------------------------------------------------
# the markers in the scripts

FUNC = re.compile(r"^(\w+_facts|\w+_verify|settle_units)\(\) *\{ *$")
SKIP = ("else", "elif", "fi", "}", "esac", "done", "do", "then", ";;", "||", "&&", "|", ")")


def instrument(script: str, counter: str) -> tuple[str, list[str]]:
    """The script with a marker before each top-level line (and at the start/end of the functions
    FUNC matches), and the markers' labels: `T <step>`, `B <fn>`, `E <fn>`."""
    labels: list[str] = []

    def marker(label: str) -> str:
        labels.append(label)
        return (f"{{ read -r _pu < {counter}; read -r _p1 _p2 _p3 _p4 _pp < /proc/loadavg; "
                f"printf 'PRF\\t%s\\t%s\\t%s\\n' {len(labels) - 1} \"$_pu\" \"$_pp\"; }} >&2")

    out: list[str] = []
    heredoc: str | None = None
    quoted = False
    func: str | None = None
    depth = 0  # open if/case/while/for/{ at the top level (a line inside one is no step)
    cont = False  # the previous line ended with a backslash, a pipe or && / ||
    for line in script.split("\n"):
        stripped = line.strip()
        was_quoted = quoted
        quoted ^= line.split("  # ", 1)[0].count("'") % 2 == 1  # a trailing comment may say "it's"
        if heredoc is not None:
            if stripped == heredoc:
                heredoc = None
            out.append(line)
            continue
        m = FUNC.match(line)
        if func is None and m:
            func = m.group(1)
            out.append(line)
            out.append(marker(f"B {func}"))
            continue
        if func is not None:
            if line.startswith("}"):
                out.append(marker(f"E {func}"))
                func = None
            out.append(line)
        elif (not was_quoted and not cont and depth == 0 and stripped and not line[0].isspace()
              and not stripped.startswith(("#", *SKIP)) and not re.match(r"^\w+\(\) *\{", line)):
            out.append(marker(f"T {stripped[:60]}"))
            out.append(line)
        else:
            out.append(line)
        if func is None and not was_quoted and not line[:1].isspace():
            words = stripped.split()
            first = words[0] if words else ""
            if first in ("if", "while", "for", "until", "case") and not re.search(r"\b(fi|done|esac)\b *;?$", stripped):
                depth += 1
            elif first in ("fi", "done", "esac") or stripped.startswith(("fi ", "done ", "esac ")):
                depth = max(0, depth - 1)
            elif re.match(r"^\w+\(\) *\{ *$", line):
                depth += 1
            elif stripped == "}":
                depth = max(0, depth - 1)
        hd = re.search(r"<<-?\s*'?(\w+)'?", line)
        if hd and not was_quoted:
            heredoc = hd.group(1)
        cont = stripped.endswith(("\\", "|", "&&", "||"))
    out.append(marker("T (end)"))
    return "\n".join(out), labels


def attribute(stderr: str, labels: list[str]) -> dict[str, list[int]]:
    """label -> [node CPU ns, pids] from the markers a script printed."""
    marks = []
    for line in stderr.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == "PRF" and all(p.isdigit() for p in parts[1:]):
            marks.append((int(parts[1]), int(parts[2]), int(parts[3])))
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    stack: list[str] = []
    step = "(start)"
    for (i, u0, p0), (_, u1, p1) in zip(marks, marks[1:], strict=False):
        kind, _, name = labels[i].partition(" ")
        if kind == "T":
            stack, step = [], name
        elif kind == "B":
            stack.append(name)
        elif kind == "E":
            if stack:
                stack.pop()
        where = f"{step} / {stack[-1]}" if stack else step
        out[where][0] += u1 - u0
        out[where][1] += p1 - p0
    return out


# ---------------------------------------------------------------------------------------------


def kind_of(text: str) -> str:
    for key, name in (("rec end nodecfg-facts", "facts"), ("rec end apply", "apply"),
                      ("rec end rollback", "rollback"), ("bin.containerd", "facts"), ("config dump", "apply")):
        if key in text:
            return name
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--tree", type=Path, default=ROOT)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    sys.path.insert(0, str(args.tree))
    from nodecfg import configure, ssh
    from nodecfg.inventory import load_inventory

    lab_dir = Path(os.environ["NODECFG_LAB_DIR"])
    lab_name = os.environ["NODECFG_LAB_NAME"]
    inv = load_inventory(lab_dir / "inventory.yaml")
    flavors = dict(re.findall(r"name: (\w+),.*# flavor: (\w+)", (lab_dir / "inventory.yaml").read_text()))
    nodes = {h.address: Node(h.name, lab_name) for h in inv.nodes}
    by_conn: dict[int, str] = {}
    record: dict[str, Any] = {}  # the current node's record (forks=1)
    real_run, real_connect, real_close = ssh.run, ssh.connect, ssh.close

    def cpu() -> float:  # getrusage: microseconds (os.times counts 10 ms ticks)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    def connect(host: Any, *a: Any, **kw: Any) -> Any:
        node = nodes[host.address]
        record.clear()
        record.update(host=host.name, flavor=flavors.get(host.name, "?"), steps=[], node=node,
                      t0=time.monotonic(), c0=cpu(), u0=node.cpu_ns(), p0=node.last_pid())
        c = real_connect(host, *a, **kw)
        record["connect"] = dict(local_ms=(cpu() - record["c0"]) * 1000,
                                 node_ms=(node.cpu_ns() - record["u0"]) / 1e6,
                                 pids=node.last_pid() - record["p0"] - 1,
                                 wall_ms=(time.monotonic() - record["t0"]) * 1000)
        record["last_cpu"] = cpu()
        by_conn[id(c)] = host.address
        return c

    def run(c: Any, command: str, *a: Any, **kw: Any) -> Any:
        node = nodes[by_conn[id(c)]]
        stdin = kw.get("stdin")
        words = shlex.split(command)
        if "-c" in words and "sh" in words:
            i = words.index("-c")
            kind = kind_of(words[i + 1])
            text, labels = instrument(words[i + 1], str(node.counter))
            words[i + 1] = text
            command = " ".join(shlex.quote(w) for w in words)
        elif isinstance(stdin, bytes) and words[:2] == ["sh", "-s"]:
            kind = kind_of(stdin.decode())
            text, labels = instrument(stdin.decode(), str(node.counter))
            kw["stdin"] = text.encode()
        else:
            kind, labels = "other", []
        c0 = cpu()
        plan_ms = (c0 - record["last_cpu"]) * 1000
        u0, p0, t0 = node.cpu_ns(), node.last_pid(), time.monotonic()
        res = real_run(c, command, *a, **kw)
        wall = time.monotonic() - t0
        u1, p1, c1 = node.cpu_ns(), node.last_pid(), cpu()
        inner = attribute(res.stderr, labels) if labels else {}
        record["steps"].append(dict(kind=kind, node_ms=(u1 - u0) / 1e6, pids=p1 - p0 - 1, local_ms=(c1 - c0) * 1000,
                                    before_ms=plan_ms, wall_ms=wall * 1000,
                                    inner={k: [v[0] / 1e6, v[1]] for k, v in inner.items()}))
        record["last_cpu"] = cpu()
        return res

    def close(c: Any) -> None:
        real_close(c)
        node = record["node"]
        record["total"] = dict(local_ms=(cpu() - record["c0"]) * 1000, node_ms=(node.cpu_ns() - record["u0"]) / 1e6,
                               pids=node.last_pid() - record["p0"] - 2 * len(record["steps"]) - 2,
                               wall_ms=(time.monotonic() - record["t0"]) * 1000)
        done.append({k: v for k, v in record.items() if k not in ("node", "last_cpu", "t0", "c0", "u0", "p0")})

    ssh.run, ssh.connect, ssh.close = run, connect, close  # type: ignore[assignment]
    runs: list[list[dict[str, Any]]] = []
    for i in range(args.runs):
        done: list[dict[str, Any]] = []
        fleet = configure.configure_nodes(inv, inv.nodes, configure.Options(), forks=1)
        bad = [str(h) for h in getattr(fleet, "failed", {})]
        if bad:
            print(f"run {i + 1}: failed: {bad} {fleet.failed}", file=sys.stderr)
        runs.append(done)
        time.sleep(2)  # a restart's tail settles before the next run's first node
    report(runs, args.label)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


def report(runs: list[list[dict[str, Any]]], label: str) -> None:
    """First run, then the median of the re-runs, per node: node CPU ms / pids / local CPU ms per step."""
    def show(title: str, recs: list[dict[str, Any]]) -> None:
        print(f"\n## {label} {title}")
        print("| node | step | node CPU ms | pids | local CPU ms | wall ms |")
        print("|---|---|---:|---:|---:|---:|")
        hosts = sorted({r["host"] for r in recs})
        for h in hosts:
            mine = [r for r in recs if r["host"] == h]
            flavor = mine[0]["flavor"]

            def med(xs: list[float]) -> float:
                return statistics.median(xs) if xs else 0.0

            def row(step: str, get: Any) -> None:
                vals = [get(r) for r in mine]
                vals = [v for v in vals if v is not None]
                if not vals:
                    return
                print(f"| {h} ({flavor}) | {step} | {med([v['node_ms'] for v in vals]):.0f} | "
                      f"{med([v['pids'] for v in vals]):.0f} | {med([v['local_ms'] for v in vals]):.0f} | "
                      f"{med([v['wall_ms'] for v in vals]):.0f} |")
            row("connect (handshake)", lambda r: r["connect"])
            n = max(len(r["steps"]) for r in mine)
            for i in range(n):
                kind = next((r["steps"][i]["kind"] for r in mine if len(r["steps"]) > i), "?")
                row(f"{i + 1}. {kind}", lambda r, i=i: r["steps"][i] if len(r["steps"]) > i else None)
                print(f"| | (local CPU before it: plan) | | | "
                      f"{med([r['steps'][i]['before_ms'] for r in mine if len(r['steps']) > i]):.0f} | |")
                names: dict[str, list[list[float]]] = defaultdict(list)
                for r in mine:
                    if len(r["steps"]) > i:
                        for k, v in r["steps"][i]["inner"].items():
                            names[k].append(v)
                for k, vs in names.items():
                    ms, pids = med([v[0] for v in vs]), med([v[1] for v in vs])
                    if ms >= 0.5 or pids >= 1:
                        print(f"| | &nbsp;&nbsp;{k.replace('|', '¦')} | {ms:.1f} | {pids:.0f} | | |")
            row("**whole node** (connect to close)", lambda r: r.get("total"))

    show("first run", runs[0])
    if len(runs) > 1:
        show(f"unchanged re-run (median of {len(runs) - 1})", [r for run in runs[1:] for r in run])


if __name__ == "__main__":
    raise SystemExit(main())
