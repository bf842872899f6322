"""Benchmark (issue 21): `nodecfg bundle create` from a stand-in upstream on 127.0.0.1, two nodecfg
builds timed in turn (A B A B ...), the ratio taken pair by pair.

Upstream: Debian's docker-registry (the real distribution registry, as registry:2) on 127.0.0.1,
no auth, fed through its HTTP API with the images of bench/registry_push.py: one of ~200 MB in 5
random (incompressible) layers, 12 small ones (64 KB each) and a two-platform list. Plain HTTP, or
with --tls HTTPS (as every real upstream): a CA made here, trusted by nodecfg through SSL_CERT_FILE.
Every run starts from nothing (no bundle, no work directory) and writes the whole bundle.

    .venv/bin/python bench/bundle_create.py --cli A/bin/nodecfg --vs B/bin/nodecfg [--rounds 5] [--tls]
    .venv/bin/python bench/bundle_create.py --serve DIR [--tls]  # only the upstream, until Ctrl-C;
                        # DIR/args holds the bundle create arguments, DIR/env the variables to set
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodecfg.registry.tls import make_ca, make_server_cert  # noqa: E402
from tests.e2e.standin import REGISTRY_BIN, Registry, layer, push_image, push_index  # noqa: E402

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


class TlsRegistry:
    """The fed registry's data served again, over HTTPS, by a second docker-registry."""

    def __init__(self, reg: Registry, work: Path) -> None:
        ca, ca_key = make_ca(dt.datetime.now(dt.UTC), "bench CA")
        cert, key = make_server_cert(ca, ca_key, ["127.0.0.1"], dt.datetime.now(dt.UTC))
        for name, data in (("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)):
            (work / name).write_bytes(data)
        self.ca = work / "ca.pem"
        self.url = f"https://127.0.0.1:{reg.port}"
        env = {**os.environ, "REGISTRY_HTTP_TLS_CERTIFICATE": str(work / "cert.pem"),
               "REGISTRY_HTTP_TLS_KEY": str(work / "key.pem")}
        self.log = (work / "tls-registry.log").open("w")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(work / "standin" / "config.yml")], env=env,
                                     stdout=self.log, stderr=self.log)
        context = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1, context=context):  # noqa: S310 -- https
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = (work / "tls-registry.log").read_text()
                    raise SystemExit(f"the TLS registry did not start: {log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def create_args(work: Path, url: str, refs: list[str]) -> list[str]:
    images = work / "images.list"
    images.write_text("".join(f"{r}\n" for r in refs))
    return ["bundle", "create", "--images-file", str(images), "--no-registry-image", "--source", f"docker.io={url}"]


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
    parser.add_argument("--tls", action="store_true", help="serve the upstream over HTTPS")
    args = parser.parse_args()
    if not args.serve and not (args.cli and args.vs):
        parser.error("give --cli and --vs, or --serve")
    work = Path(args.serve or tempfile.mkdtemp(prefix="nodecfg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.pop("AWS_CA_BUNDLE", None)  # distribution's S3 driver panics on it (FIELD-NOTES)
    reg = Registry(work / "standin")
    tls: TlsRegistry | None = None
    try:
        print("feeding the stand-in upstream", flush=True)
        refs = feed(reg)
        url = reg.url
        if args.tls:
            reg.stop()
            tls = TlsRegistry(reg, work)
            url = tls.url
            os.environ["SSL_CERT_FILE"] = str(tls.ca)  # for the nodecfg runs
        argv = create_args(work, url, refs)
        if args.serve:
            (work / "args").write_text(shlex.join(argv) + "\n")
            (work / "env").write_text(f"SSL_CERT_FILE={tls.ca}\n" if tls else "")
            print(f"serving at {url}; bundle create arguments in {work / 'args'}", flush=True)
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
        if tls is not None:
            tls.stop()
        else:
            reg.stop()
        if not args.serve:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
