"""Shared by the benchmark scripts: the machine they ran on, and docs/benchmarks.md sections."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def machine_line() -> str:
    docker = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                            capture_output=True, text=True, check=False).stdout.strip()
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}: "
            f"{os.cpu_count()} cores ({cpu or platform.machine()}), {mem:.0f} GiB, "
            f"{platform.freedesktop_os_release().get('PRETTY_NAME', platform.system())}, "
            f"Python {platform.python_version()}, Docker engine {docker or '?'}.")


def replace_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the `## title` section of a markdown file."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery number here comes from a script in `bench/`.\n"
    head = f"## {title}\n"
    start = text.find(head)
    section = f"{head}\n{body.rstrip()}\n\n"
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(head))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")


def sh(cmd: str, *, timeout: float = 600) -> str:
    """A bash command line (pipefail); its stdout, or the run stops naming it."""
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {cmd}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout
