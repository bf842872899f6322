"""Benchmark (issue 21): `nodecfg bundle create` from a stand-in upstream on 127.0.0.1, two nodecfg
builds timed in turn (A B A B ...), the ratio taken pair by pair.

Upstream: Debian's docker-registry (the real distribution registry, as registry:2) on 127.0.0.1,
plain HTTP, no auth, fed through its HTTP API with the images of bench/registry_push.py: one of
~200 MB in 5 random (incompressible) layers, 12 small ones (64 KB each) and a two-platform list.
Every run starts from nothing (no bundle, no work directory) and writes the whole bundle.

    .venv/bin/python bench/bundle_create.py --cli A/bin/nodecfg --vs B/bin/nodecfg [--rounds 5]
    .venv/bin/python bench/bundle_create.py --serve DIR   # only the upstream, until Ctrl-C; DIR/args
                                                          # holds the bundle create arguments
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.standin import Registry, layer, push_image, push_index  # noqa: E402

BIG_LAYERS, LAYER_MB, SMALL = 5, 40, 12


def feed(reg: Registry) -> list[str]:
    """The images into the stand-in; returns their references (docker.io/bench/...)."""
    refs = []
    push_image(reg, "bench/big", ("linux", "amd64"), [layer({f"layer{i}": os.urandom(LAYER_MB << 20)})
                                                      for i in range(BIG_LAYERS)], oci=False, tag="1")
    refs.append("docker.io/bench/big:1")
    base = layer({"bin/busybox": os.urandom(1 << 20)})
    for i in range(SMALL):
        push_image(reg, f"bench/small-{i:02d}", ("linux", "amd64"), [base, layer({"small": os.urandom(64 << 10)})],
                   oci=False, tag="1")
        refs.append(f"docker.io/bench/small-{i:02d}:1")
    children = [push_image(reg, "bench/multi", ("linux", arch), [base, layer({"arch": arch.encode() * 1000})],
                           oci=False).descriptor() for arch in ("amd64", "arm64")]
    push_index(reg, "bench/multi", "1", children, oci=False)
    refs.append("docker.io/bench/multi:1")
    return refs


def create_args(work: Path, reg: Registry, refs: list[str]) -> list[str]:
    images = work / "images.list"
    images.write_text("".join(f"{r}\n" for r in refs))
    return ["bundle", "create", "--images-file", str(images), "--no-registry-image", "--source",
            f"docker.io={reg.url}"]


def one_run(cli: str, args: list[str], out: Path) -> float:
    out.unlink(missing_ok=True)
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
    start = time.monotonic()
    proc = subprocess.run([cli, *args, "-o", str(out)], capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cli} bundle create failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", help="the nodecfg to measure (A)")
    parser.add_argument("--vs", help="the nodecfg to compare with (B)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", metavar="DIR", help="only run the upstream, until interrupted")
    args = parser.parse_args()
    if not args.serve and not (args.cli and args.vs):
        parser.error("give --cli and --vs, or --serve")
    work = Path(args.serve or tempfile.mkdtemp(prefix="nodecfg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.pop("AWS_CA_BUNDLE", None)  # distribution's S3 driver panics on it (FIELD-NOTES)
    reg = Registry(work / "standin")
    try:
        print("feeding the stand-in upstream", flush=True)
        argv = create_args(work, reg, feed(reg))
        if args.serve:
            (work / "args").write_text(shlex.join(argv) + "\n")
            print(f"serving at {reg.url}; bundle create arguments in {work / 'args'}", flush=True)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
            return 0
        a, b = [], []
        one_run(args.cli, argv, work / "warm.tar")  # warm-up (page cache, compiled modules)
        one_run(args.vs, argv, work / "warm.tar")
        for _ in range(args.rounds):
            a.append(one_run(args.cli, argv, work / "a.tar"))
            b.append(one_run(args.vs, argv, work / "b.tar"))
            print(f"A {a[-1]:.2f} s   B {b[-1]:.2f} s   A/B {a[-1] / b[-1]:.3f}", flush=True)
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        size = (work / "a.tar").stat().st_size
        print(f"bundle {size / 2**20:.0f} MB; median A {statistics.median(a):.2f} s (min {min(a):.2f}, "
              f"max {max(a):.2f}), B {statistics.median(b):.2f} s (min {min(b):.2f}, max {max(b):.2f}), "
              f"A/B median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
        return 0
    finally:
        reg.stop()
        if not args.serve:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
