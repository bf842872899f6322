"""Benchmark (issue 22): registry replicas.

1. First push to 3 replicas against the push to one, same images (bench/registry_push.py's: 200 MB in 5
   random layers, 12 small ones and a two-platform list, from this machine's engine), each into empty
   registries; own disks (the other replicas copy from the first inside the site) and one S3 bucket.
   Goal: <= 1.3x.
2. 12 nodes pulling the 200 MB image at once, through containerd by its upstream name, from 3 replicas:
   each replica's share of the bytes it served (its registry's log). Goal: no replica above 50 %.
3. A pull on a node whose first replica's host is down: seconds, per containerd version (1.6, 1.7, 2.1
   flavors), against the same pull with every replica up.

    NODECFG_LAB_NAME=bench NODECFG_LAB_SUBNET=172.29.99.0/24 NODECFG_LAB_DIR=/tmp/bench \\
        .venv/bin/python bench/replicas.py [--rounds 3] [--part push|share|failover|all] [--write]

nodecfg runs as users run it: the console script of the installed wheel (--cli; default
.venv-e2e/bin/nodecfg, which scripts/test.sh makes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nodecfg_lab  # noqa: E402

from bench.common import machine_line, replace_section, sh  # noqa: E402
from bench.registry_push import BIG, IMAGES, build_images  # noqa: E402
from nodecfg.images import parse_ref  # noqa: E402

CLI = [str(ROOT / ".venv-e2e" / "bin" / "nodecfg")]  # --cli
SECTION = "registry replicas (issue 22)"
FLAVORS = ("bookworm", "trixie", "containerd2")  # containerd 1.6, 1.7, 2.1
# containerd's resolver as the kubelet's pulls use it: the node's certs.d hosts.toml, in order
CTR_PULL = "ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d"


def lab(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "nodecfg_lab", *args], check=True)


def nodecfg(*args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    if proc.returncode not in ok:
        raise SystemExit(f"nodecfg {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds, (json.loads(proc.stdout) if "--json" in args and proc.stdout.strip() else {})


class Host:
    def __init__(self, paths: nodecfg_lab.LabPaths, name: str, address: str) -> None:
        self.name, self.address = name, address
        self.ssh = (f"ssh -i {paths.key} -o UserKnownHostsFile={paths.known_hosts} -o LogLevel=ERROR "
                    f"-o StrictHostKeyChecking=accept-new -o BatchMode=yes root@{address}")

    def run(self, command: str, *, timeout: float = 900) -> str:
        return sh(f"{self.ssh} {shlex.quote(command)}", timeout=timeout)


def hosts_of(inv: dict[str, Any]) -> dict[str, Host]:
    paths = nodecfg_lab.lab_paths()
    out = {"master": Host(paths, "master", inv["master"]["address"])}
    for r in inv["registry"].get("replicas") or []:
        out[r["name"]] = Host(paths, r["name"], r["address"])
    for n in inv["nodes"]:
        out[n["name"]] = Host(paths, n["name"], n["address"])
    return out


def write(tmp: Path, name: str, data: dict[str, Any]) -> str:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def empty_registries(registries: list[Host]) -> None:
    for h in registries:
        h.run("docker rm -f registry >/dev/null 2>&1; rm -rf /var/lib/registry /var/lib/nodecfg; true")


# -- 1. first push: 3 replicas against 1 ----------------------------------------------------------------


def part_push(inv: dict[str, Any], tmp: Path, rounds: int) -> dict[str, Any]:
    hosts = hosts_of(inv)
    registries = [hosts["master"], *(hosts[r["name"]] for r in inv["registry"]["replicas"])]
    one = write(tmp, "one", {**inv, "images": IMAGES, "registry": {k: v for k, v in inv["registry"].items()
                                                                   if k not in ("replicas", "storage")}})
    disks = write(tmp, "disks", {**inv, "images": IMAGES, "registry": {k: v for k, v in inv["registry"].items()
                                                                       if k != "storage"}})
    s3 = write(tmp, "s3", {**inv, "images": IMAGES})
    one_s3 = write(tmp, "one-s3", {**inv, "images": IMAGES, "registry": {k: v for k, v in inv["registry"].items()
                                                                         if k != "replicas"}})
    names = ("one", "disks", "one-s3", "s3")
    times: dict[str, list[float]] = {n: [] for n in names}
    copied: list[int] = []
    for i in range(rounds):
        order = list(zip(names, (one, disks, one_s3, s3), strict=True))
        for name, path in order[i % len(order):] + order[:i % len(order)]:
            empty_registries(registries)
            if name.endswith("s3"):
                empty_bucket(inv)
            seconds, data = nodecfg("registry-up", "-i", path, "--json")
            times[name].append(seconds)
            if name == "disks":
                copied.append(sum(r.get("copied_bytes", 0) for r in data["replicas"]))
            assert {i["action"] for i in data["images"]} == {"pushed"}, data["images"]
            print(f"round {i + 1}: {name}: {seconds:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"times": times, "median": med, "copied_bytes": statistics.median(copied) if copied else 0}


def empty_bucket(inv: dict[str, Any]) -> None:
    """The bench's S3 bucket emptied (the lab's SeaweedFS: its filer deletes a directory tree)."""
    s3 = inv["registry"]["storage"]["s3"]
    host = re.sub(r"^https?://", "", s3["endpoint"]).rsplit(":", 1)[0]
    sh(f"curl -s -X DELETE 'http://{host}:8888/buckets/{s3['bucket']}/docker?recursive=true' >/dev/null; true",
       timeout=900)


# -- 2. 12 nodes at once: each replica's share of the bytes ---------------------------------------------------


def served_bytes(h: Host) -> int:
    """Bytes of blobs the registry on `h` served (GET .../blobs/...), from its log."""
    out = h.run("docker logs registry 2>&1 | grep 'response completed' | grep 'GET' | grep '/blobs/' || true")
    return sum(int(m) for m in re.findall(r"http\.response\.written=(\d+)", out))


def part_share(inv: dict[str, Any], tmp: Path) -> dict[str, Any]:
    hosts = hosts_of(inv)
    registries = [hosts["master"], *(hosts[r["name"]] for r in inv["registry"]["replicas"])]
    disks = write(tmp, "share", {**inv, "images": [BIG], "registry": {k: v for k, v in inv["registry"].items()
                                                                      if k != "storage"}})
    empty_registries(registries)
    nodecfg("registry-up", "-i", disks)
    nodecfg("configure-nodes", "-i", disks)
    before = {h.name: served_bytes(h) for h in registries}
    nodes = [hosts[n["name"]] for n in inv["nodes"]]

    def pull(node: Host) -> float:
        start = time.monotonic()
        node.run(f"{CTR_PULL} {shlex.quote(parse_ref(BIG).upstream)} >/dev/null")
        return time.monotonic() - start

    start = time.monotonic()
    with ThreadPoolExecutor(len(nodes)) as pool:
        seconds = list(pool.map(pull, nodes))
    wall = time.monotonic() - start
    served = {h.name: served_bytes(h) - before[h.name] for h in registries}
    total = sum(served.values()) or 1
    return {"nodes": len(nodes), "wall": wall, "pull_median": statistics.median(seconds),
            "share": {k: v / total for k, v in served.items()}, "bytes": served}


# -- 3. the node's first replica down --------------------------------------------------------------------------


def part_failover(inv: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    hosts = hosts_of(inv)
    registries = [hosts["master"], *(hosts[r["name"]] for r in inv["registry"]["replicas"])]
    small = "docker.io/bench/small-00:1"
    path = write(tmp, "failover", {**inv, "images": [small], "registry": {k: v for k, v in inv["registry"].items()
                                                                          if k != "storage"}})
    empty_registries(registries)
    nodecfg("registry-up", "-i", path)
    nodecfg("configure-nodes", "-i", path)
    rows = []
    for flavor in FLAVORS:
        node_name = next(n["name"] for n in inv["nodes"] if nodecfg_lab.lab_flavors().get(n["name"]) == flavor)
        node = hosts[node_name]
        hosts_toml = node.run("cat /etc/containerd/certs.d/docker.io/hosts.toml")
        first = re.search(r'\[host\."https?://([^"]+)"\]', hosts_toml)
        assert first, hosts_toml
        first_addr = first.group(1).rsplit(":", 1)[0]
        down = next(h for h in registries if h.address == first_addr)

        def pull(node: Host = node) -> float:
            node.run(f"ctr -n k8s.io images rm {small} >/dev/null 2>&1; true")
            start = time.monotonic()
            node.run(f"{CTR_PULL} {small} >/dev/null", timeout=600)
            return time.monotonic() - start

        up = pull()
        down.run("docker stop registry >/dev/null")
        try:
            stopped = pull()
        finally:
            down.run("docker start registry >/dev/null")
        nodecfg_lab.stop_node(down.name)
        try:
            host_down = pull()
        finally:
            nodecfg_lab.start_node(down.name)
            nodecfg_lab.wait_for_ssh(down.address, time.monotonic() + 60)
        nodecfg("registry-up", "-i", path)  # a lab host's docker state is in memory: bring it back
        version = node.run("containerd --version").split()[2]
        rows.append({"flavor": flavor, "containerd": version, "node": node_name, "first replica": down.name,
                     "all up": up, "its registry stopped": stopped, "its host down": host_down})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def report(push: dict[str, Any] | None, share: dict[str, Any] | None, failover: list[dict[str, Any]] | None) -> str:
    lines: list[str] = []
    if push:
        m = push["median"]
        lines += ["| first push of the bench images | median | all runs | ratio to one registry |",
                  "|---|---:|---|---:|",
                  f"| one registry (the master) | {m['one']:.2f} s | "
                  f"{' / '.join(f'{x:.2f}' for x in push['times']['one'])} | 1.00 |",
                  f"| 3 replicas, own disks (2 copy from the first inside the site) | {m['disks']:.2f} s | "
                  f"{' / '.join(f'{x:.2f}' for x in push['times']['disks'])} | {m['disks'] / m['one']:.2f} |",
                  f"| one registry (the master) on the S3 bucket (SeaweedFS on two lab hosts) | {m['one-s3']:.2f} s | "
                  f"{' / '.join(f'{x:.2f}' for x in push['times']['one-s3'])} | {m['one-s3'] / m['one']:.2f} |",
                  f"| 3 replicas, one S3 bucket | {m['s3']:.2f} s | "
                  f"{' / '.join(f'{x:.2f}' for x in push['times']['s3'])} | {m['s3'] / m['one']:.2f} "
                  f"({m['s3'] / m['one-s3']:.2f} to one on S3) |",
                  "", f"Copied replica to replica inside the site per own-disks push: "
                  f"{push['copied_bytes'] / 1e6:.0f} MB; over the operator's link each blob went once.",
                  f"Goal <= 1.3x: own disks {'met' if m['disks'] / m['one'] <= 1.3 else 'NOT met'}, "
                  f"S3 against one registry on the same bucket {'met' if m['s3'] / m['one-s3'] <= 1.3 else 'NOT met'}.",
                  ""]
    if share:
        top = max(share["share"].values())
        lines += [f"{share['nodes']} nodes pulling {BIG} (200 MB) at once through containerd from 3 replicas: "
                  f"{share['wall']:.1f} s in all, {share['pull_median']:.1f} s a node (median).", "",
                  "| replica | bytes served | share |", "|---|---:|---:|",
                  *(f"| {k} | {share['bytes'][k] / 1e6:.0f} MB | {v:.0%} |" for k, v in share["share"].items()),
                  "", f"Goal: no replica above 50 %: {'met' if top <= 0.5 else 'NOT met'} (largest {top:.0%}).", ""]
    if failover:
        lines += ["A 64 KB image pulled through the node's hosts.toml (`ctr images pull --hosts-dir`, containerd's "
                  "resolver as CRI pulls use it), by the flavor's containerd:",
                  "", "| containerd | all replicas up | its first replica's registry stopped | "
                  "its first replica's host down |", "|---|---:|---:|---:|",
                  *(f"| {r['containerd']} ({r['flavor']}) | {r['all up']:.1f} s | {r['its registry stopped']:.1f} s | "
                    f"{r['its host down']:.1f} s |" for r in failover), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--part", choices=("push", "share", "failover", "all"), default="all")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--cli", default=CLI[0], help="the nodecfg to measure (an installed wheel's)")
    args = parser.parse_args()
    CLI[:] = [args.cli]
    build_images()
    tmp = Path(tempfile.mkdtemp(prefix="nodecfg-bench-"))
    push = share = failover = None
    try:
        lab("up", "--nodes", "12", "--replicas", "2", "--s3", "--flavors", ",".join(FLAVORS))
        inv = yaml.safe_load(nodecfg_lab.lab_paths().inventory.read_text())
        if args.part in ("push", "all"):
            push = part_push(inv, tmp, args.rounds)
        if args.part in ("share", "all"):
            share = part_share(inv, tmp)
        if args.part in ("failover", "all"):
            failover = part_failover(inv, tmp)
    finally:
        lab("down")
    text = report(push, share, failover)
    print(text)
    if args.write:
        replace_section(ROOT / "docs" / "benchmarks.md", SECTION, f"{machine_line()}\n\n{text}\n"
                        "Reproduce: `.venv/bin/python bench/replicas.py --write` (see its docstring)")
    return 0


if __name__ == "__main__":
    os.environ.pop("AWS_CA_BUNDLE", None)
    raise SystemExit(main())
