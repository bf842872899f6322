"""Run the node scripts here, under dash, against a fake root: the files are paths in a temp dir
(the scripts take every path as an argument), and PATH holds only the tools a Debian node has plus
stub systemctl / docker / containerd commands that record their calls and answer from files."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nodecfg.scripts import NodeScript

DASH = "/bin/dash"
TOOLS = ("awk", "base64", "cat", "chmod", "chown", "cp", "cut", "date", "dirname", "grep", "head", "ln",
         "mkdir", "mktemp", "mv", "readlink", "rm", "rmdir", "sed", "sha256sum", "sleep", "stat", "tail", "tar",
         "timeout", "tr", "sh")

# systemctl: every call goes to $STUB/calls; `show` answers from $STUB/units/<unit> (KEY=value
# lines; Id is the unit), `is-active` from its ActiveState; anything else succeeds
SYSTEMCTL = r"""#!/bin/sh
echo "systemctl $*" >> "$STUB/calls"
case $1 in
  show)
    shift; units=; props=; value=0
    while [ $# -gt 0 ]; do
      case $1 in -p) props="$props $2"; shift 2;; --value) value=1; shift;; *) units="$units $1"; shift;; esac
    done
    sep=
    for u in $units; do
      printf '%s' "$sep"; sep='
'
      for p in $props; do
        if [ "$p" = Id ]; then v=$u; else v=$(grep "^$p=" "$STUB/units/$u" 2>/dev/null | head -n 1 | cut -d= -f2-); fi
        if [ $value = 1 ]; then echo "$v"; else echo "$p=$v"; fi
      done
    done;;
  is-active) grep -qx 'ActiveState=active' "$STUB/units/$3" 2>/dev/null;;
esac
"""
# curl on docker's socket: /info from $STUB/docker-info.json, /_ping's headers with a fixed version
CURL = r"""#!/bin/sh
echo "curl $*" >> "$STUB/calls"
case "$*" in
  *http://docker/info*) cat "$STUB/docker-info.json" 2>/dev/null || exit 7;;
  *http://docker/_ping*) printf 'HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\n\r\n';;
  *) exit 7;;
esac
"""
DOCKERD = r"""#!/bin/sh
echo "dockerd $*" >> "$STUB/calls"
case $1 in --version) echo 'Docker version 20.10.24+dfsg1, build 297e128';; esac
"""
# containerd: `-c FILE config dump` prints FILE (a file holding `broken` is refused)
CONTAINERD = r"""#!/bin/sh
echo "containerd $*" >> "$STUB/calls"
case $1 in
  --version) echo 'containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1';;
  -c) if grep -q broken "$2"; then echo 'failed to load TOML: broken' >&2; exit 1; fi; cat "$2";;
  config) cat "$STUB/containerd-dump.toml" 2>/dev/null;;
esac
"""
CTR = r"""#!/bin/sh
echo "ctr $*" >> "$STUB/calls"
case "$*" in *"plugins ls"*) echo 'io.containerd.grpc.v1 cri linux/amd64 ok';; esac
"""
STUBS = {"systemctl": SYSTEMCTL, "curl": CURL, "dockerd": DOCKERD, "containerd": CONTAINERD, "ctr": CTR}


@dataclass
class FakeNode:
    root: Path  # the fake root: config files live under it
    stub: Path  # the stubs' state: calls, units/<unit>, docker-info.json

    def unit(self, unit: str, **props: str) -> None:
        (self.stub / "units").mkdir(exist_ok=True)
        (self.stub / "units" / unit).write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def calls(self) -> list[str]:
        path = self.stub / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def run(self, script: NodeScript, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The script under dash, as a node runs it: program, arguments, stdin."""
        proc = subprocess.run([DASH, "-c", script.program, "nodecfg", *script.args], input=script.stdin,
                              capture_output=True, timeout=60, check=False,
                              env={"PATH": str(self.stub / "bin"), "STUB": str(self.stub), "HOME": str(self.root)})
        out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())
        assert not check or proc.returncode == 0, out.stderr
        return out


def fake_node(tmp_path: Path, stubs: tuple[str, ...] = tuple(STUBS), tools: tuple[str, ...] = TOOLS) -> FakeNode:
    root, stub = tmp_path / "root", tmp_path / "stub"
    bin_dir = stub / "bin"
    bin_dir.mkdir(parents=True)
    root.mkdir()
    for tool in tools:
        found = shutil.which(tool, path="/usr/bin:/bin")
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    for name in stubs:
        (bin_dir / name).write_text(STUBS[name])
        (bin_dir / name).chmod(0o755)
    return FakeNode(root, stub)


def in_root(node: FakeNode, path: str) -> str:
    return os.fspath(node.path(path))


def stub_bin(directory: Path, **commands: str) -> Path:
    """`directory`/bin holding executable stub commands (name -> script text), for a PATH."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in commands.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir
