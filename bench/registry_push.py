"""Benchmark (issue 14): four ways to put the same images into the lab master's registry, in one run.

Images: one of ~200 MB in 5 random (incompressible) layers on busybox, 12 small ones (busybox + 64 KB),
and a two-platform list (amd64 + arm64) made through the registry API. They live in this machine's
Docker engine AND in a stand-in upstream registry:2 on 127.0.0.1 (Debian's docker-registry).

  manual    the recipe the issue starts from, image by image: `docker save IMG | ssh master docker
            load`, then `docker tag` and `docker push localhost:5000/...` on the master
  skopeo    `skopeo copy --all` from the stand-in straight to the master's registry port (plain
            TCP, no SSH), image by image
  engine    `nodecfg registry-up` from this machine's engine (docker save read as a stream, blobs
            through SSH channels to the registry's HTTP API)
  bundle    `nodecfg registry-up --bundle` from a bundle made from the stand-in
  ... --direct  the same two with `--direct`: plain HTTP to the registry's port, as skopeo does

Every first push starts from an empty, running registry (and a master engine without the images);
then the same command again, nothing changed, --reruns times (the median is reported). The order of
the methods rotates each round and the median of --rounds is reported. Then where the time goes:
raw SSH channel throughput per cipher and width, the width of registry-up --bundle, what gzip would
cost, and how long this machine's `docker save` of the images takes (the engine path's floor).
Results go to stdout and, with --write, to docs/benchmarks.md.

nodecfg runs as users run it: the console script of the built wheel, installed (--cli; default
.venv-e2e/bin/nodecfg, which scripts/test.sh makes), with its modules compiled at install. An
editable checkout under PYTHONDONTWRITEBYTECODE=1 (as on the dev machine) compiles every module on
every run, ~0.1 s more per command.

    NODECFG_LAB_NAME=bench NODECFG_LAB_SUBNET=172.29.99.0/24 NODECFG_LAB_DIR=/tmp/bench \\
        .venv/bin/python bench/registry_push.py [--rounds 3] [--reruns 5] [--write]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nodecfg_lab
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine_line, replace_section, sh  # noqa: E402
from nodecfg.images import parse_ref  # noqa: E402
from tests.e2e.standin import Registry, layer, push_image, push_index  # noqa: E402

BIG = "docker.io/bench/big:1"
SMALL = [f"docker.io/bench/small-{i:02d}:1" for i in range(12)]
MULTI = "docker.io/bench/multi:1"
IMAGES = [BIG, *SMALL, MULTI]
BIG_LAYERS, LAYER_MB = 5, 40
SECTION = "registry push: manual, skopeo, registry-up (issue 14)"


CLI = [str(ROOT / ".venv-e2e" / "bin" / "nodecfg")]  # --cli


def lab(*args: str) -> None:
    """The dev lab's command (lab/, installed in .venv by scripts/setup.sh)."""
    subprocess.run([sys.executable, "-m", "nodecfg_lab", *args], check=True)


def nodecfg(*args: str, env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})})
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"nodecfg {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds, (json.loads(proc.stdout) if "--json" in args else {})


# -- the images ---------------------------------------------------------------------------------


def build_images() -> None:
    """The engine's images, built from busybox:1.36 (random data: nothing compresses)."""
    import docker

    client = docker.from_env(timeout=900)
    have = {t for img in client.images.list() for t in img.tags}
    if BIG.removeprefix("docker.io/") not in have:
        steps = "\n".join(f"RUN head -c {LAYER_MB << 20} /dev/urandom > /layer{i}" for i in range(BIG_LAYERS))
        client.images.build(fileobj=io.BytesIO(f"FROM busybox:1.36\n{steps}\n".encode()), tag=BIG, rm=True)
    for i, ref in enumerate(SMALL):
        if ref.removeprefix("docker.io/") not in have:
            dockerfile = f"FROM busybox:1.36\nRUN head -c {64 << 10} /dev/urandom > /small{i}\n"
            client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)


def feed_standin(reg: Registry) -> None:
    """The engine's images into the stand-in (docker push), and the two-platform list by its API;
    then the list's amd64 image into the engine under the upstream name."""
    for ref in [BIG, *SMALL]:
        dest = f"127.0.0.1:{reg.port}/{parse_ref(ref).target}"
        sh(f"docker tag {ref} {dest} && docker push -q {dest} >/dev/null && docker rmi {dest} >/dev/null")
    path, tag = parse_ref(MULTI).target.split(":")
    base = layer({"bin/true": b"#!/bin/sh\n"})
    children = [push_image(reg, path, ("linux", arch), [base, layer({"arch": arch.encode() * 1000})],
                           oci=False).descriptor() for arch in ("amd64", "arm64")]
    push_index(reg, path, tag, children, oci=False)
    src = f"127.0.0.1:{reg.port}/{path}:{tag}"
    sh(f"docker pull -q {src} >/dev/null && docker tag {src} {MULTI} && docker rmi {src} >/dev/null")


# -- the lab master -------------------------------------------------------------------------------


class Master:
    def __init__(self, paths: nodecfg_lab.LabPaths, address: str) -> None:
        self.address = address
        self.ssh = (f"ssh -i {paths.key} -o UserKnownHostsFile={paths.known_hosts} -o LogLevel=ERROR "
                    f"-o StrictHostKeyChecking=accept-new -o BatchMode=yes root@{address}")

    def run(self, command: str) -> str:
        return sh(f"{self.ssh} {shlex.quote(command)}")

    def reset(self, empty_inventory: str) -> None:
        """An empty, running registry; no bench image in the master's engine."""
        names = " ".join(f"{i} localhost:5000/{parse_ref(i).target}" for i in IMAGES)
        self.run(f"docker rm -f registry >/dev/null 2>&1; rm -rf /var/lib/registry; "
                 f"docker rmi -f {names} >/dev/null 2>&1; sync; true")
        nodecfg("registry-up", "-i", empty_inventory)


def manual(master: Master) -> float:
    start = time.monotonic()
    for ref in IMAGES:
        target = f"localhost:5000/{parse_ref(ref).target}"
        sh(f"docker save {shlex.quote(ref)} | {master.ssh} docker load -q >/dev/null")
        master.run(f"docker tag {ref} {target} && docker push -q {target} >/dev/null")
    return time.monotonic() - start


def skopeo(upstream: int, master: Master) -> float:
    start = time.monotonic()
    for ref in IMAGES:
        target = parse_ref(ref).target
        sh(f"skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false "
           f"docker://127.0.0.1:{upstream}/{target} docker://{master.address}:5000/{target}")
    return time.monotonic() - start


# -- where the time goes ------------------------------------------------------------------------------


def channel_throughput(paths: nodecfg_lab.LabPaths, address: str, cipher: str, width: int, mb: int = 160) -> float:
    """MB/s of blob uploads (PUT) to the master's registry over `width` direct-tcpip channels of one
    paramiko connection using `cipher`."""
    import http.client
    from urllib.parse import urlsplit

    import paramiko

    from nodecfg.push.channels import ChannelHTTPConnection

    key = paramiko.Ed25519Key.from_private_key_file(str(paths.key))
    transport = paramiko.Transport((address, 22))
    transport.get_security_options().ciphers = (cipher,)
    transport.connect(username="root", pkey=key)
    chunk = os.urandom(1 << 20)
    per = mb // width

    def upload(_i: int) -> None:
        conn: http.client.HTTPConnection = ChannelHTTPConnection(transport, [("127.0.0.1", 5000)])
        conn.request("POST", "/v2/bench/throughput/blobs/uploads/")
        resp = conn.getresponse()
        resp.read()
        loc = urlsplit(resp.headers["Location"])
        salt = os.urandom(32)
        sha = hashlib.sha256(salt)
        for _ in range(per):
            sha.update(chunk)
        conn.putrequest("PUT", f"{loc.path}?{loc.query}&digest=sha256:{sha.hexdigest()}")
        conn.putheader("Content-Length", str(32 + (per << 20)))
        conn.endheaders()
        conn.send(salt)
        for _ in range(per):
            conn.send(chunk)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 201, resp.status

    start = time.monotonic()
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(upload, range(width)))
    seconds = time.monotonic() - start
    transport.close()
    return per * width / seconds


def openssh_throughput(master: Master, cipher: str, mb: int = 160) -> float:
    data = Path(tempfile.mkstemp(prefix="nodecfg-bench-")[1])
    try:
        with data.open("wb") as f:
            f.write(os.urandom(mb << 20))
        start = time.monotonic()
        sh(f"{master.ssh.replace('ssh ', f'ssh -c {cipher} ', 1)} 'cat >/dev/null' < {data}")
        return mb / (time.monotonic() - start)
    finally:
        data.unlink()


def docker_save_floor() -> tuple[float, float]:
    """This machine's engine exporting every bench image (`docker save` to nowhere): seconds to its
    first byte, and to its last. No push from the engine can start sooner or be faster than its
    engine can export."""
    proc = subprocess.Popen(["docker", "save", *IMAGES], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    start = time.monotonic()
    first = 0.0
    while os.read(proc.stdout.fileno(), 1 << 20):
        first = first or time.monotonic() - start
    proc.wait()
    return first, time.monotonic() - start


def gzip_rates() -> dict[str, float]:
    """MB/s of zlib (gzip) level 1 and 6 on 32 MB of a random layer and of real files (this
    machine's /usr/lib as a tar: a typical compressible layer), one core; and the ratio."""
    raw = io.BytesIO()
    import tarfile

    with tarfile.open(fileobj=raw, mode="w") as tar:
        for p in sorted(Path("/usr/lib/x86_64-linux-gnu").glob("*.so*"))[:400]:
            if p.is_file() and raw.tell() < (32 << 20):
                tar.add(str(p))
    samples = {"random": os.urandom(32 << 20), "/usr/lib files": raw.getvalue()[:32 << 20]}
    out = {}
    for name, data in samples.items():
        for level in (1, 6):
            start = time.monotonic()
            packed = zlib.compress(data, level)
            seconds = time.monotonic() - start
            out[f"{name}, level {level}: MB/s"] = len(data) / 2**20 / seconds
            out[f"{name}, level {level}: ratio"] = len(data) / len(packed)
    return out


# -- the run ------------------------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--reruns", type=int, default=5, help="unchanged re-runs after each first push")
    parser.add_argument("--cli", default=CLI[0], help="the nodecfg to measure (an installed wheel's)")
    parser.add_argument("--no-lab", action="store_true", help="use the lab that is up (same env vars)")
    args = parser.parse_args()
    CLI[:] = [args.cli]
    if not Path(args.cli).exists():
        raise SystemExit(f"{args.cli}: no such nodecfg; build and install the wheel first (scripts/test.sh "
                         "does: .venv-e2e), or name one with --cli")
    load_before = os.getloadavg()

    if not args.no_lab:
        print("lab up (a master and 1 node)", flush=True)
        lab("up", "--nodes", "1")
    print("building the images", flush=True)
    build_images()
    paths = nodecfg_lab.lab_paths()
    base = yaml.safe_load(paths.inventory.read_text())
    master = Master(paths, base["master"]["address"])
    tmp = Path(tempfile.mkdtemp(prefix="nodecfg-bench-"))
    empty, inv = tmp / "empty.yaml", tmp / "inventory.yaml"
    empty.write_text(yaml.safe_dump({**base, "images": []}, sort_keys=False))
    inv.write_text(yaml.safe_dump({**base, "images": IMAGES}, sort_keys=False))
    bundle = tmp / "images.tar"

    reg = Registry(tmp / "standin")
    try:
        print("feeding the stand-in upstream", flush=True)
        feed_standin(reg)
        print("bundle create", flush=True)
        made, _ = nodecfg("bundle", "create", "-i", str(inv), "-o", str(bundle), "--no-registry-image",
                          "--source", f"docker.io={reg.url}")
        size = int(json.loads(subprocess.run(
            [*CLI, "bundle", "inspect", str(bundle), "--json"],
            capture_output=True, text=True, check=True).stdout)["blob_bytes"])

        def registry_up(*extra: str, env: dict[str, str] | None = None) -> tuple[float, float]:
            first, data = nodecfg("registry-up", "-i", str(inv), *extra, "--json", env=env)
            assert {i["action"] for i in data["images"]} == {"pushed"}, data["images"]
            agains = []
            for _ in range(max(1, args.reruns)):
                again, data = nodecfg("registry-up", "-i", str(inv), *extra, "--json", env=env)
                assert {i["action"] for i in data["images"]} == {"skipped"} and not data["transfer"]["uploaded"]
                agains.append(again)
            return first, statistics.median(agains)

        def run_engine() -> tuple[float, float]:
            return registry_up()

        def run_bundle(env: dict[str, str] | None = None) -> tuple[float, float]:
            return registry_up("--bundle", str(bundle), env=env)

        def run_skopeo() -> tuple[float, float]:
            return skopeo(reg.port, master), skopeo(reg.port, master)

        def run_manual() -> tuple[float, float]:
            return manual(master), float("nan")

        methods: dict[str, Callable[[], tuple[float, float]]] = {
            "manual": run_manual, "skopeo": run_skopeo, "engine": run_engine, "bundle": run_bundle,
            "engine-direct": lambda: registry_up("--direct"),
            "bundle-direct": lambda: registry_up("--bundle", str(bundle), "--direct")}
        times: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
        names = list(methods)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                master.reset(str(empty))
                first, again = methods[name]()
                times[name].append((first, again))
                print(f"round {r + 1}: {name}: first {first:.2f} s, re-run {again:.2f} s", flush=True)

        widths = {}
        for width in (1, 2, 4, 8):
            master.reset(str(empty))
            widths[width] = run_bundle({"NODECFG_PUSH_WIDTH": str(width)})[0]
            print(f"bundle, width {width}: {widths[width]:.2f} s", flush=True)
    finally:
        reg.stop()

    print("where the time goes: SSH channels, ciphers, gzip", flush=True)
    master.reset(str(empty))
    channels = {(c, w): channel_throughput(paths, master.address, c, w)
                for c in ("aes128-ctr", "aes128-gcm@openssh.com") for w in (1, 4)}
    openssh = {c: openssh_throughput(master, c)
               for c in ("aes128-ctr", "aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com")}
    gz = gzip_rates()
    save_first, save_all = docker_save_floor()
    master.reset(str(empty))
    load_after = os.getloadavg()

    med = {m: (median([t[0] for t in ts]), median([t[1] for t in ts])) for m, ts in times.items()}
    manual_s, skopeo_s = med["manual"][0], med["skopeo"][0]
    rows = [
        "| method | first push (median) | all runs | ratio to manual | ratio to skopeo | unchanged re-run (median) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    labels = {"manual": "manual: `docker save \\| ssh docker load`, `docker tag`, `docker push` on the master",
              "skopeo": "`skopeo copy --all` registry to registry (plain TCP, no SSH)",
              "engine": "`nodecfg registry-up` from the engine",
              "bundle": "`nodecfg registry-up --bundle`",
              "engine-direct": "`nodecfg registry-up --direct` from the engine (plain HTTP, no SSH)",
              "bundle-direct": "`nodecfg registry-up --bundle --direct` (plain HTTP, no SSH)"}
    for m, (first, again) in med.items():
        runs = " / ".join(f"{t[0]:.2f}" for t in times[m])
        rerun = "—" if m == "manual" else f"{again:.2f} s"
        rows.append(f"| {labels[m]} | {first:.2f} s | {runs} | {first / manual_s:.2f} | "
                    f"{first / skopeo_s:.2f} | {rerun} |")
    met = {
        "engine ≤ 0.5x manual": med["engine"][0] <= 0.5 * manual_s,
        "bundle ≤ 0.5x manual": med["bundle"][0] <= 0.5 * manual_s,
        "engine ≤ 1.0x skopeo": med["engine"][0] <= skopeo_s,
        "bundle ≤ 1.0x skopeo": med["bundle"][0] <= skopeo_s,
        "bundle --direct ≤ 1.0x skopeo": med["bundle-direct"][0] <= skopeo_s,
        "engine re-run < 0.5 s": med["engine"][1] < 0.5,
        "bundle re-run < 0.5 s": med["bundle"][1] < 0.5,
    }
    body = "\n".join([
        machine_line(),
        "",
        f"Images: 1 of {BIG_LAYERS * LAYER_MB} MB in {BIG_LAYERS} random layers on busybox, 12 small ones "
        "(busybox + 64 KB), and a two-platform list (amd64, arm64); the bundle holds "
        f"{size / 2**20:.0f} MB (`bundle create` from the stand-in took {made:.1f} s, not counted). The "
        "engine and the manual way push the one platform the engine holds; skopeo and the bundle push "
        f"both. Lab master over SSH (a lab host on the same 2 cores); {args.rounds} rounds, the order of the "
        "methods rotating, each first push into an empty registry, then the median of "
        f"{args.reruns} unchanged re-runs. nodecfg: the installed wheel's `{Path(args.cli).name}` "
        f"({args.cli}). Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        *rows,
        "",
        "Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items()) + ".",
        "",
        "Where the time goes:",
        "",
        "| SSH transport, 160 MB of blob PUTs to the registry | MB/s |",
        "|---|---:|",
        *(f"| paramiko, {c}, {w} channel(s) | {v:.0f} |" for (c, w), v in channels.items()),
        *(f"| OpenSSH `ssh -c {c} master cat`, one stream (reference) | {v:.0f} |" for c, v in openssh.items()),
        "",
        "| `registry-up --bundle` first push, blobs in flight (NODECFG_PUSH_WIDTH) | wall time |",
        "|---|---:|",
        *(f"| {w} | {s:.2f} s |" for w, s in widths.items()),
        "",
        "| this machine's `docker save` of the same images, to nowhere | seconds |",
        "|---|---:|",
        f"| to its first byte (the engine exports everything before sending) | {save_first:.2f} |",
        f"| to its last byte | {save_all:.2f} |",
        "",
        "| gzip (zlib) on one core, 32 MB | value |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in gz.items()),
    ])
    print()
    print(body)
    if args.write:
        replace_section(ROOT / "docs" / "benchmarks.md", SECTION,
                        f"{body}\n\nReproduce: `.venv/bin/python bench/registry_push.py --write` (see its docstring)")
    if not args.no_lab:
        lab("down")
    shutil.rmtree(tmp, ignore_errors=True)  # the bundle and the stand-in's data
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
