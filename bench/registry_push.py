"""Benchmark (issue 3): `nodecfg registry-up` against the seed's manual push, in the same run.

On a fresh lab (a master and one node, both with an empty registry started beforehand):
  nodecfg  `nodecfg registry-up` pushing 11 images (one multi-layer image of 220 MB, 10 small ones)
           to the master, then again with nothing changed;
  manual   the seed recipe against node1, image by image: `docker save IMG | ssh node1 docker load`,
           `docker tag`, `docker push localhost:5000/...`.
nodecfg runs first, so the manual way gets the warmer page cache. Results go to stdout and, with
--write, to the registry-up section of docs/benchmarks.md.

    .venv/bin/python bench/registry_push.py [--write]
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine_line, replace_section  # noqa: E402
from nodecfg import lab  # noqa: E402
from nodecfg.images import parse_ref  # noqa: E402

BIG = "docker.io/bench/big:1"
SMALL = [f"docker.io/bench/small-{i:02d}:1" for i in range(10)]
BIG_LAYERS, LAYER_MB = 4, 55


def build_images() -> None:
    """The test images, built from busybox:1.36 (random data: layers don't compress)."""
    import docker

    client = docker.from_env(timeout=900)
    steps = "\n".join(f"RUN head -c {LAYER_MB * 1024 * 1024} /dev/urandom > /layer{i}"
                      for i in range(BIG_LAYERS))
    client.images.build(fileobj=io.BytesIO(f"FROM busybox:1.36\n{steps}\n".encode()), tag=BIG, rm=True)
    for i, ref in enumerate(SMALL):
        dockerfile = f"FROM busybox:1.36\nRUN head -c {64 * 1024} /dev/urandom > /small{i}\n"
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)


def nodecfg(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "nodecfg", *args], capture_output=True, text=True,
                          check=False)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"nodecfg {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc


def manual_push(paths: lab.LabPaths, address: str, images: list[str]) -> float:
    """The seed recipe, one image after another, with the real docker and ssh clients."""
    ssh = (f"ssh -i {paths.key} -o UserKnownHostsFile={paths.known_hosts} "
           f"-o StrictHostKeyChecking=accept-new -o BatchMode=yes root@{address}")
    start = time.monotonic()
    for ref in images:
        target = f"localhost:5000/{parse_ref(ref).target}"
        script = (f"docker save {shlex.quote(ref)} | {ssh} docker load -q && "
                  f"{ssh} {shlex.quote(f'docker tag {ref} {target} && docker push -q {target}')}")
        subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True, capture_output=True)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()

    print("lab up (a master and 1 node)", flush=True)
    nodecfg("lab", "up", "--nodes", "1")
    print("building the test images", flush=True)
    build_images()
    paths = lab.lab_paths()
    base = yaml.safe_load(paths.inventory.read_text())
    master, node1 = base["master"]["address"], base["nodes"][0]["address"]
    tmp = Path(tempfile.mkdtemp(prefix="nodecfg-bench-"))

    def inventory(name: str, address: str, images: list[str]) -> str:
        data = {**base, "master": {"name": name, "address": address}, "images": images}
        path = tmp / f"{name}-{len(images)}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return str(path)

    # both hosts get a running, empty registry first: the timed part is the push alone
    nodecfg("registry-up", "-i", inventory("master", master, []))
    nodecfg("registry-up", "-i", inventory("node1", node1, []))
    images = [BIG, *SMALL]
    inv = inventory("master", master, images)

    print("nodecfg registry-up: first push of 11 images", flush=True)
    first, proc = nodecfg("registry-up", "-i", inv, "--json")
    actions = {i["action"] for i in json.loads(proc.stdout)["images"]}
    assert actions == {"pushed"}, actions
    print(f"  {first:.2f} s", flush=True)
    print("nodecfg registry-up: nothing changed", flush=True)
    rerun, proc = nodecfg("registry-up", "-i", inv, "--json")
    actions = {i["action"] for i in json.loads(proc.stdout)["images"]}
    assert actions == {"skipped"}, actions
    print(f"  {rerun:.2f} s", flush=True)
    print("manual: docker save | ssh docker load; docker tag; docker push (to node1)", flush=True)
    manual = manual_push(paths, node1, images)
    print(f"  {manual:.2f} s", flush=True)

    size = BIG_LAYERS * LAYER_MB
    table = "\n".join([
        f"Images: 1 of {size} MB in {BIG_LAYERS} layers (random data) + 10 small ones; lab master over SSH.",
        "",
        "| run | wall time | ratio to manual |",
        "|---|---:|---:|",
        f"| manual seed recipe, first push | {manual:.2f} s | 1.00 |",
        f"| `nodecfg registry-up`, first push | {first:.2f} s | {first / manual:.2f} |",
        f"| `nodecfg registry-up`, nothing changed | {rerun:.2f} s | {rerun / manual:.2f} |",
        "",
        f"Targets: first push no slower than manual ({'met' if first <= manual else 'NOT met'}); "
        f"unchanged re-run under 1 s ({'met' if rerun < 1.0 else 'NOT met'}).",
    ])
    print()
    print(table)
    if args.write:
        replace_section(ROOT / "docs" / "benchmarks.md", "registry-up (issue 3)",
                        f"{machine_line()}\n\n{table}\n\nReproduce: `.venv/bin/python bench/registry_push.py --write`")
    nodecfg("lab", "down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
