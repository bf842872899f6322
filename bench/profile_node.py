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
import itertools
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

FUNC = re.compile(r"^(\w+_facts|\w+_verify|settle_units|\w+_probe|\w+_pulls?|\w+_look|reach)\(\) *\{ *$")
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
        if not stripped.startswith("#"):  # a comment may say "it's"
            quoted ^= line.split("  # ", 1)[0].count("'") % 2 == 1
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
    for (i, u0, p0), (_, u1, p1) in itertools.pairwise(marks):
        kind, _, name = labels[i].partition(" ")
        if kind == "T":
            stack, step = [], name
        elif kind == "B":
            stack.append(name)
        elif kind == "E" and stack:
            stack.pop()
        where = f"{step} / {stack[-1]}" if stack else step
        out[where][0] += u1 - u0
        out[where][1] += p1 - p0
    return out


# ---------------------------------------------------------------------------------------------


def kind_of(text: str) -> str:
    for key, name in (("rec end nodecfg-facts", "facts"), ("rec end apply", "apply"), ("rec end probe", "probe"),
                      ("rec end call", "call"),
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
    ap.add_argument("--smoke", action="store_true",
                    help="profile smoke-test instead (a configured lab, its registry up)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.tree))
    from nodecfg import configure, smoke, ssh
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

    ssh.run, ssh.connect, ssh.close = run, connect, close
    runs: list[list[dict[str, Any]]] = []
    for i in range(args.runs):
        done: list[dict[str, Any]] = []
        if args.smoke:
            result = smoke.smoke_test(inv, inv.nodes, image=None, forks=1)
            if not result.ok:
                print(f"run {i + 1}: smoke-test failed: {result.fleet.failed}", file=sys.stderr)
        else:
            fleet = configure.configure_nodes(inv, inv.nodes, configure.Options(), forks=1)
            if fleet.failed:
                print(f"run {i + 1}: failed: {fleet.failed}", file=sys.stderr)
        runs.append(done)
        time.sleep(2)  # a restart's tail settles before the next run's first node
    if args.smoke:
        report_steps(runs, args.label)
    else:
        report(runs, args.label)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def summary(rec: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """One node's run as (node CPU ms, pids, local CPU ms) per phase: connect, facts (every facts
    round trip), plan (here, between them and the apply), apply (its script without the verifies:
    write, validate, compare-and-swap, rename, restart/reload and its wait), verify (the
    `<runtime>_verify` calls inside it), and the whole node (connect to close)."""
    out: dict[str, list[float]] = {k: [0.0, 0.0, 0.0] for k in ("connect", "facts", "plan", "apply", "verify")}
    out["connect"] = [rec["connect"]["node_ms"], rec["connect"]["pids"], rec["connect"]["local_ms"]]
    for st in rec["steps"]:
        kind = "facts" if st["kind"] == "facts" else "apply"
        out["plan"][2] += st["before_ms"] if kind == "apply" else 0
        out["facts" if kind == "facts" else "apply"][2] += st["local_ms"]
        if kind == "facts":
            out["facts"][2] += st["before_ms"] if st is not rec["steps"][0] else 0
        verify = [v for k, v in st["inner"].items() if k.endswith("_verify")]
        vms, vp = sum(v[0] for v in verify), sum(v[1] for v in verify)
        out[kind][0] += st["node_ms"] - (vms if kind == "apply" else 0)
        out[kind][1] += st["pids"] - (vp if kind == "apply" else 0)
        if kind == "apply":
            out["verify"][0] += vms
            out["verify"][1] += vp
    total = rec.get("total", {})
    result = {k: (v[0], v[1], v[2]) for k, v in out.items()}
    result["whole node"] = (total.get("node_ms", 0.0), total.get("pids", 0.0), total.get("local_ms", 0.0))
    return result


def report_steps(runs: list[list[dict[str, Any]]], label: str) -> None:
    """smoke-test: per node, the connect, each remote command and the whole node (medians)."""
    recs = [r for run in runs for r in run]
    print(f"\n### {label} smoke-test (median of {len(runs)}): node CPU ms / pids / local CPU ms\n")
    print("| node | connect | " + " | ".join(f"{i + 1}. {k}" for i, k in enumerate(
        max((r["steps"] for r in recs), key=len)[i]["kind"] for i in range(max(len(r["steps"]) for r in recs)))
        ) + " | whole node |")
    n = max(len(r["steps"]) for r in recs)
    print("|---|" + "---:|" * (n + 2))
    for h in sorted({r["host"] for r in recs}):
        mine = [r for r in recs if r["host"] == h]

        def cell(vals: list[dict[str, float]]) -> str:
            if not vals:
                return "—"
            return " / ".join(f"{_med([v[k] for v in vals]):.0f}" for k in ("node_ms", "pids", "local_ms"))
        cells = [cell([r["connect"] for r in mine])]
        cells += [cell([r["steps"][i] for r in mine if len(r["steps"]) > i]) for i in range(n)]
        cells.append(cell([r["total"] for r in mine if "total" in r]))
        print(f"| {h} ({mine[0]['flavor']}) | " + " | ".join(cells) + " |")
    print(f"\n{label} smoke-test, the lines of each script (node CPU ms / pids):\n")
    _lines(recs)


def _lines(recs: list[dict[str, Any]]) -> None:
    print("| node | script | line | node CPU ms | pids |")
    print("|---|---|---|---:|---:|")
    for h in sorted({r["host"] for r in recs}):
        mine_recs = [r for r in recs if r["host"] == h]
        n = max(len(r["steps"]) for r in mine_recs)
        for i in range(n):
            have = [r["steps"][i] for r in mine_recs if len(r["steps"]) > i]
            names: dict[str, list[list[float]]] = defaultdict(list)
            for st in have:
                for k, v in st["inner"].items():
                    names[k].append(v)
            print(f"| {h} | {i + 1}. {have[0]['kind']} | (whole command, sshd's session included) | "
                  f"{_med([st['node_ms'] for st in have]):.1f} | {_med([st['pids'] for st in have]):.0f} |")
            for k, vs in names.items():
                ms, pids = _med([v[0] for v in vs]), _med([v[1] for v in vs])
                if ms >= 0.5 or pids >= 1:
                    line = k.replace("|", "¦").replace("`", "'")
                    print(f"| | | `{line}` | {ms:.1f} | {pids:.0f} |")


def report(runs: list[list[dict[str, Any]]], label: str) -> None:
    """Per flavor, the phases (median over the runs), then every step with its lines."""
    sets = [("first run", runs[:1])]
    if len(runs) > 1:
        sets.append((f"unchanged re-run (median of {len(runs) - 1})", runs[1:]))
    for title, chosen in sets:
        recs = [r for run in chosen for r in run]
        print(f"\n### {label} {title}: node CPU ms / pids / local CPU ms\n")
        phases = ("connect", "facts", "plan", "apply", "verify", "whole node")
        print("| node | " + " | ".join(phases) + " |")
        print("|---|" + "---:|" * len(phases))
        for h in sorted({r["host"] for r in recs}):
            mine = [summary(r) for r in recs if r["host"] == h]
            flavor = next(r["flavor"] for r in recs if r["host"] == h)
            cells = []
            for ph in phases:
                n, p, loc = (_med([m[ph][i] for m in mine]) for i in range(3))
                cells.append(f"{n:.0f} / {p:.0f} / {loc:.0f}" if (n or p or loc) else "—")
            print(f"| {h} ({flavor}) | " + " | ".join(cells) + " |")
        print(f"\n{label} {title}, the lines of each script (node CPU ms / pids):\n")
        _lines(recs)


if __name__ == "__main__":
    raise SystemExit(main())
