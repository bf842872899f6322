#!/usr/bin/env python3
"""Capture unit-test fixtures from real lab nodes of every flavor, so fixtures never drift from
what nodes print: `containerd config default`, the stock config.toml, `containerd config dump`
before and after configure-nodes, and docker's /info (the parts nodecfg reads) after it.

    .venv/bin/python scripts/capture_fixtures.py      # starts its own lab, removes it at the end

Writes tests/unit/fixtures/nodes/<flavor>/; tests/unit/test_node_fixtures.py reads them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/unit/fixtures/nodes"
FLAVORS = ("bookworm", "trixie", "containerd2")
NODECFG = [sys.executable, "-m", "nodecfg"]
LAB = [sys.executable, "-m", "nodecfg_lab"]  # the dev lab (lab/), installed in .venv by setup.sh


def cli(*args: str, tool: list[str] = NODECFG) -> str:
    proc = subprocess.run([*tool, *args], capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{tool[-1]} {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def main() -> None:
    import nodecfg_lab

    cli("up", "--nodes", str(len(FLAVORS)), "--flavors", ",".join(FLAVORS), tool=LAB)
    paths = nodecfg_lab.lab_paths()
    inv = yaml.safe_load(paths.inventory.read_text())
    flavors = nodecfg_lab.lab_flavors()
    nodes = {n["name"]: n["address"] for n in inv["nodes"]}

    def ssh(name: str, command: str) -> str:
        return subprocess.run(
            ["ssh", "-i", str(paths.key), "-o", f"UserKnownHostsFile={paths.known_hosts}",
             "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
             f"root@{nodes[name]}", command], capture_output=True, text=True, check=True, timeout=120).stdout

    def docker_info(name: str) -> str:
        info = json.loads(ssh(name, "docker info --format '{{json .}}'"))
        kept = {k: info[k] for k in ("ServerVersion", "RegistryConfig") if k in info}
        return json.dumps(kept, indent=2, sort_keys=True) + "\n"

    captured: dict[str, dict[str, str]] = {}
    for name in nodes:
        flavor = flavors[name]
        captured[name] = {
            "versions.txt": ssh(name, "containerd --version; dockerd --version; "
                                      "podman --version 2>/dev/null || true"),
            "config-default.toml": ssh(name, "containerd config default"),
            "config.toml": ssh(name, "cat /etc/containerd/config.toml 2>/dev/null || true"),
            "dump-stock.toml": ssh(name, "containerd config dump"),
        }
        print(f"{name}: {flavor}", file=sys.stderr)
    cli("configure-nodes", "-i", str(paths.inventory))
    for name in nodes:
        captured[name]["dump-configured.toml"] = ssh(name, "containerd config dump")
        captured[name]["docker-info-configured.json"] = docker_info(name)
    registry = f"{inv['master']['address']}:{inv['registry']['port']}"
    for name, files in captured.items():
        target = OUT / flavors[name]
        target.mkdir(parents=True, exist_ok=True)
        for fname, text in files.items():
            # the lab's addresses are not part of what a fixture means
            (target / fname).write_text(text.replace(registry, "registry.lab:5000"))
    cli("down", tool=LAB)
    print(f"wrote {', '.join(sorted({flavors[n] for n in captured}))} under {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
