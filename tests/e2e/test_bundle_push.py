"""registry-up --bundle (issue 14, parts 3 and 5): a bundle made from an upstream stand-in, pushed into
the lab master's registry over the registry HTTP API through SSH, with no Docker engine needed on
this side and the registry image itself loaded from the bundle.

The stand-in (Debian's docker-registry on 127.0.0.1) is fed with the lab's images by `docker push`
from this machine's engine, plus an image with a 48 MB random layer and a two-platform manifest list
made through the registry API (sharing a layer with the big image: a cross-repository mount).
One module, one lab, in order: a push killed mid-blob; a corrupt bundle refused; the resumed push;
an unchanged re-run; configure-nodes and smoke-test. All traffic stays on loopback and the lab.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nodecfg_lab as labmod
import pytest

from nodecfg.bundle.reader import Bundle
from tests.e2e.conftest import Lab, cli, nodecfg, run_json, start_lab
from tests.e2e.standin import ACCEPT, Registry, digest, layer, push_image, push_index

pytestmark = pytest.mark.e2e

BIG, MULTI = "quay.io/nodecfg/big:1", "registry.k8s.io/nodecfg/multi:1"
EXTRA = {BIG: ("nodecfg/big", "1"), MULTI: ("nodecfg/multi", "1")}
LAB = {"docker.io/library/busybox:1.36": ("library/busybox", "1.36"),
       "registry.k8s.io/pause:3.9": ("pause", "3.9"),
       "quay.io/prometheus/busybox:latest": ("prometheus/busybox", "latest")}
PUSHED = {**LAB, **EXTRA}


@dataclass
class Made:
    bundle: Path
    upstream: dict[str, str]  # target path:tag -> upstream manifest digest
    big_layer: str
    tmp: Path


def _docker_push(port: int, ref: str, path: str, tag: str) -> None:
    dest = f"127.0.0.1:{port}/{path}:{tag}"
    for cmd in (["docker", "tag", ref, dest], ["docker", "push", "-q", dest], ["docker", "rmi", dest]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, (cmd, proc.stderr)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    tmp = tmp_path_factory.mktemp("bundlepush")
    reg = Registry(tmp / "standin")
    try:
        labmod.ensure_operator_images()
        for ref, (path, tag) in {**LAB, "docker.io/library/registry:2": ("library/registry", "2")}.items():
            _docker_push(reg.port, ref, path, tag)
        shared = layer({"etc/shared": b"shared by big and multi\n"})
        big_layer = layer({"big.bin": os.urandom(48 << 20)})  # incompressible
        push_image(reg, "nodecfg/big", ("linux", "amd64"), [shared, big_layer], oci=False, tag="1")
        children = [push_image(reg, "nodecfg/multi", ("linux", arch), [shared, layer({"m": arch.encode()})],
                               oci=False).descriptor() for arch in ("amd64", "arm64")]
        push_index(reg, "nodecfg/multi", "1", children, oci=False)
        upstream = {f"{p}:{t}": reg.manifest_digest(p, t) for p, t in PUSHED.values()}
        assert reg.manifest_digest("nodecfg/multi", "1") == upstream["nodecfg/multi:1"]
        inv = tmp / "connected.yaml"
        inv.write_text("master: {address: 10.0.0.10}\nnodes: [10.0.0.11]\nssh: {key: ./no-such-key}\n"
                       f"images: [{', '.join(LAB)}]\n")
        images = tmp / "images.list"
        images.write_text(f"{BIG}\n{MULTI}\n")
        out = tmp / "images.tar"
        sources = [a for host in ("docker.io", "registry.k8s.io", "quay.io") for a in ("--source", f"{host}={reg.url}")]
        proc = nodecfg("bundle", "create", "-i", str(inv), "--images-file", str(images), "-o", str(out),
                       *sources, timeout=120)
        assert proc.returncode == 0, proc.stderr + proc.stdout
    finally:
        reg.stop()  # the upstream is gone before anything is pushed
    with Bundle.open(out) as b:
        roles = {e.ref: e.role for e in b.entries}
    assert roles["docker.io/library/registry:2"] == "registry"
    assert all(roles[ref] == "" for ref in PUSHED)
    return Made(out, upstream, digest(big_layer), tmp)


@pytest.fixture(scope="module")
def lab(made: Made) -> Iterator[Lab]:
    lab = start_lab(2)
    lab.ssh("master", "docker rm -f registry >/dev/null 2>&1; docker rmi -f registry:2 >/dev/null 2>&1; "
                      "! docker image inspect registry:2 >/dev/null 2>&1")
    yield lab


def _tags(lab: Lab) -> dict[str, str]:
    """target -> digest the master's registry serves for it ("" when absent)."""
    out = {}
    for path, tag in PUSHED.values():
        conn = http.client.HTTPConnection(lab.hosts["master"], 5000, timeout=10)
        try:
            conn.request("HEAD", f"/v2/{path}/manifests/{tag}", headers={"Accept": ACCEPT})
            resp = conn.getresponse()
            resp.read()
            out[f"{path}:{tag}"] = resp.getheader("Docker-Content-Digest") or "" if resp.status == 200 else ""
        finally:
            conn.close()
    return out


def _killed_mid_blob(inv: str, bundle: Path, big: str) -> tuple[list[str], str]:
    """Run registry-up --bundle; SIGKILL it once the big layer is on its way and another image is
    tagged. Returns the blobs it reported sent and its stderr."""
    child = subprocess.Popen([*cli(), "registry-up", "-i", inv, "--bundle", str(bundle)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    lines: list[str] = []
    timer = threading.Timer(60, child.kill)
    timer.start()
    try:
        started = tagged = False
        for line in child.stderr:
            lines.append(line)
            started = started or f"uploading {big}" in line
            tagged = tagged or "tagged " in line
            assert f"sent {big}" not in line, "the big layer finished before the kill: " + "".join(lines)
            if started and tagged:
                child.send_signal(signal.SIGKILL)
                break
    finally:
        timer.cancel()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL, "".join(lines)
    sent = [ln.split()[1] for ln in lines if ln.strip().startswith("sent ")]
    return sent, "".join(lines)


def test_push_from_bundle(made: Made, lab: Lab) -> None:
    inv = str(lab.inventory)
    # 1. killed while the big layer streams: what finished is whole, the big image is not tagged
    sent_before, log = _killed_mid_blob(inv, made.bundle, made.big_layer)
    assert "loading registry:2" in log  # the master had no registry image: it came from the bundle
    after_kill = _tags(lab)
    assert after_kill["nodecfg/big:1"] == "", log
    tagged = {t: d for t, d in after_kill.items() if d}
    assert tagged, log  # something was complete and tagged before the kill
    assert all(made.upstream[t] == d for t, d in tagged.items())

    # 2. a corrupt bundle (one byte of the big layer flipped): one line, exit 1, no tag changed
    bad = made.tmp / "corrupt.tar"
    shutil.copyfile(made.bundle, bad)
    with Bundle.open(bad) as b:
        offset, size = b.offset(made.big_layer)
    with bad.open("r+b") as f:
        f.seek(offset + size // 2)
        byte = f.read(1)
        f.seek(offset + size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    proc = nodecfg("registry-up", "-i", inv, "--bundle", str(bad), timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("nodecfg: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert made.big_layer in errors[0] and "corrupt" in errors[0], errors
    after_bad = _tags(lab)
    assert after_bad["nodecfg/big:1"] == ""
    assert all(after_bad[t] == d for t, d in tagged.items())
    assert all(made.upstream[t] == d for t, d in after_bad.items() if d)  # whole images only

    # 3. --check first: what would be pushed, judged by the registry's tags; nothing changes
    cid = lab.ssh("master", "docker inspect -f '{{.Id}}' registry").stdout
    rc, plan, err = run_json("registry-up", "-i", inv, "--bundle", str(made.bundle), "--check")
    assert rc == 0 and plan["check"] is True, err
    assert plan["container_action"] == "keep"
    assert {i["target"]: i["action"] for i in plan["images"]} == {
        t: ("in registry" if after_bad[t] else "push") for t in made.upstream}
    assert _tags(lab) == after_bad and lab.ssh("master", "docker inspect -f '{{.Id}}' registry").stdout == cid

    # 4. the same command resumes: finished blobs are not sent again; every digest is upstream's
    rc, data, err = run_json("registry-up", "-i", inv, "--bundle", str(made.bundle))
    assert rc == 0, err
    uploaded = data["transfer"]["uploaded"]
    assert made.big_layer in uploaded
    assert not set(sent_before) & set(uploaded), (sent_before, uploaded)
    assert _tags(lab) == made.upstream
    assert {i["target"]: i["action"] for i in data["images"]} == {
        t: ("skipped" if after_bad[t] else "pushed") for t in made.upstream}
    assert data["shipped_registry_image"] is False
    assert "library/registry" not in data["catalog"]  # the registry's own image is not pushed

    # 5. unchanged: nothing sent, every image skipped, the container kept
    rc, again, err = run_json("registry-up", "-i", inv, "--bundle", str(made.bundle))
    assert rc == 0, err
    assert again["transfer"]["uploaded"] == [] and again["transfer"]["mounted"] == 0
    assert all(i["action"] == "skipped" for i in again["images"])
    assert again["container_action"] == "keep"

    # 6. the nodes pull
    proc = nodecfg("configure-nodes", "-i", inv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = nodecfg("smoke-test", "-i", inv)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_bundles_are_one_line(made: Made, lab: Lab) -> None:
    inv = str(lab.inventory)
    cases = {made.tmp / "missing.tar": 2}
    truncated = made.tmp / "truncated.tar"
    with made.bundle.open("rb") as src, truncated.open("wb") as dst:
        dst.write(src.read(made.bundle.stat().st_size // 2))
    cases[truncated] = 1
    for path, code in cases.items():
        start = time.monotonic()
        proc = nodecfg("registry-up", "-i", inv, "--bundle", str(path), timeout=60)
        err = proc.stderr.strip()
        assert proc.returncode == code, (path, proc.stdout, err)
        assert err.count("\n") == 0 and err.startswith("nodecfg: error: ") and str(path) in err, err
        assert time.monotonic() - start < 10
    rc, data, err = run_json("registry-up", "-i", inv, "--bundle", str(made.bundle))
    assert rc == 0 and data["transfer"]["uploaded"] == [], err
    assert json.dumps(data)  # still a whole report
