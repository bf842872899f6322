"""The e2e harness: the real `nodecfg` CLI against a lab fleet on this machine's Docker engine.

Every e2e module starts a fresh lab (`nodecfg-lab up`, the dev lab of lab/, a few seconds once the
node image is cached). These tests need a Docker engine; without one they fail — they never skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nodecfg_lab as labmod
import pytest
import yaml


def cli() -> list[str]:
    """The CLI under test: the console script of the installed wheel (scripts/test.sh builds the
    wheel, installs it non-editable into a fresh venv and sets NODECFG_CLI). Without it the e2e
    suite fails, never skips: a source checkout is not what users run."""
    path = os.environ.get("NODECFG_CLI")
    if not path:
        raise AssertionError("NODECFG_CLI is not set: run the e2e suite through scripts/test.sh, "
                             "which tests the installed wheel")
    return [path]


def nodecfg(*args: str, env: dict[str, str] | None = None, cwd: str | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real, installed CLI in a child process."""
    return subprocess.run([*cli(), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd, check=False)


def lab_cli() -> list[str]:
    """The lab's console script, `nodecfg-lab`, from the venv of the CLI under test (scripts/test.sh
    installs lab/ there next to the wheel)."""
    path = Path(cli()[0]).parent / "nodecfg-lab"
    if not path.exists():
        raise AssertionError(f"{path} is missing: install the lab (lab/) next to the wheel, as scripts/test.sh does")
    return [str(path)]


def nodecfg_lab(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the lab's CLI in a child process."""
    return subprocess.run([*lab_cli(), *args], capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Lab:
    inventory: Path
    key: Path
    known_hosts: Path
    hosts: dict[str, str]  # name -> address

    def ssh_argv(self, name: str, command: str, *, user: str = "root") -> list[str]:
        """The real OpenSSH client with the lab's key, running `command` on a lab host."""
        return ["ssh", "-i", str(self.key), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=5", f"{user}@{self.hosts[name]}", command]

    def ssh(self, name: str, command: str, *, user: str = "root", check: bool = True,
            timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command on a lab host (`stdin`, text, on its standard input)."""
        proc = subprocess.run(self.ssh_argv(name, command, user=user), input=stdin,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{name}: {command!r} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def load_images(self, name: str, *images: str) -> None:
        """`docker save IMAGES | ssh HOST docker load`: this machine's images onto a lab host."""
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        done = subprocess.run(self.ssh_argv(name, "docker load -q"), stdin=save.stdout, capture_output=True,
                              text=True, timeout=120, check=False)
        assert save.wait(timeout=60) == 0 and done.returncode == 0, done.stderr

    def inventory_data(self) -> dict[str, Any]:
        return dict(yaml.safe_load(self.inventory.read_text()))

    def write_inventory(self, path: Path, data: dict[str, Any]) -> Path:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def stop(self, name: str) -> None:
        labmod.stop_node(name)

    def start(self, name: str) -> None:
        """The host started again, its sshd answering (a lab host's docker state is in memory: its
        containers are gone)."""
        import time

        labmod.start_node(name)
        labmod.wait_for_ssh(self.hosts[name], time.monotonic() + 60)


def start_lab(nodes: int, flavors: tuple[str, ...] = ("bookworm",), minimal: tuple[str, ...] = (), *,
              replicas: int = 0, s3: bool = False) -> Lab:
    """A fresh lab: node1, node2, ... take `flavors` in turn (the master the first); `minimal`
    hosts have neither curl nor wget; `replicas` hosts replica1..K; `s3` the S3 store's hosts
    s3a and s3b. `Lab.hosts` names them all."""
    args = ["up", "--nodes", str(nodes), "--flavors", ",".join(flavors)]
    if minimal:
        args += ["--minimal", ",".join(minimal)]
    if replicas:
        args += ["--replicas", str(replicas)]
    if s3:
        args.append("--s3")
    proc = nodecfg_lab(*args)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    paths = labmod.lab_paths()
    data = yaml.safe_load(paths.inventory.read_text())
    hosts = {"master": data["master"]["address"]}
    hosts.update({n["name"]: n["address"] for n in data["nodes"]})
    hosts.update({n["name"]: n["address"] for n in data["registry"].get("replicas", [])})
    hosts.update({n.name: n.address for n in labmod.lab_status() if n.role == "s3"})
    return Lab(paths.inventory, paths.key, paths.known_hosts, hosts)


# What counts as nodecfg's on a node (every process's argv, from /proc): its scripts (`sh -c PROGRAM
# nodecfg ...`: every program starts with lib.sh, whose `rec() {` no other program holds), the
# `timeout` wrappers it starts, the CLIs those run (docker / ctr / crictl / podman asked to pull,
# list, inspect or remove images, or for info), curl on docker's socket, and the CRI bridge
# (python3 -c ... AF_UNIX). The daemons themselves (dockerd, containerd, their shims) are not.
OURS = re.compile(r"rec\(\) \{|^timeout |\b(docker|ctr|crictl|podman)\b.*\b(pull|info|images?|rmi|rm)\b"
                  r"|--unix-socket /var/run/docker\.sock|socket\.AF_UNIX")

# every process but this listing's own shell: `<pid> <argv joined by spaces>` (no ps in a minimal image)
PS = r"""for p in /proc/[0-9]*; do [ "${p#/proc/}" = $$ ] && continue
  a=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) && [ -n "$a" ] && printf '%s %s\n' "${p#/proc/}" "$a"; done"""


def leftovers(lab: Lab, name: str, within: float = 3.0) -> list[str]:
    """nodecfg's processes still on the node after `within` seconds (for reaping): [] when none."""
    end = time.monotonic() + within
    while True:
        found = [ln for ln in lab.ssh(name, PS).stdout.splitlines() if OURS.search(ln.split(" ", 1)[-1])]
        if not found or time.monotonic() > end:
            return found
        time.sleep(0.5)


def configured_lab(nodes: int) -> Lab:
    """A fresh lab whose registry is up (`registry-up`) and whose nodes are configured."""
    lab = start_lab(nodes)
    inv = str(lab.inventory)
    assert nodecfg("registry-up", "-i", inv).returncode == 0
    proc = nodecfg("configure-nodes", "-i", inv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return lab


def smoke_checks(host: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A host's smoke-test checks from `--json`, by name."""
    return {c["name"]: c for c in host["result"]["checks"]}


@pytest.fixture(scope="session", autouse=True)
def _lab_down_at_the_end() -> Iterator[None]:
    yield
    nodecfg_lab("down")


def run_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    proc = nodecfg(*args, "--json", env=env)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"--json output does not parse:\n{proc.stdout}\n{proc.stderr}") from None
    return proc.returncode, data, proc.stderr


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in data["hosts"]}
