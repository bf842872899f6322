"""bundle create / inspect / verify against an upstream stand-in on loopback; no lab.

The stand-in is Debian's docker-registry (the real distribution registry) on 127.0.0.1, fed through
the registry HTTP API with small images: a docker manifest, a docker manifest list (amd64 + arm64),
an OCI index with a buildx-style attestation, an OCI manifest; two images share a layer. In front
of it a proxy asks for bearer tokens as Docker Hub does, logs each request and can stall a blob
mid-transfer. All traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import cli, nodecfg
from tests.e2e.standin import DOCKER_LIST, Front, Registry, digest, free_port, layer, push_image, push_index

pytestmark = pytest.mark.e2e

BUSYBOX, PAUSE = "docker.io/library/busybox:1.36", "registry.k8s.io/pause:3.9"
TOOL, COREDNS = "quay.io/org/tool:1", "registry.k8s.io/coredns/coredns:v1.11.1"
ALIAS = "registry.k8s.io/pause:latest"  # the same manifest list as pause:3.9
REPOS = {BUSYBOX: ("library/busybox", "1.36"), PAUSE: ("pause", "3.9"), TOOL: ("org/tool", "1"),
         COREDNS: ("coredns/coredns", "v1.11.1"), ALIAS: ("pause", "latest")}
ATTESTATION = {"vnd.docker.reference.type": "attestation-manifest"}


@dataclass
class Upstream:
    registry: Registry
    front: Front
    blobs: dict[str, dict[str, int]]  # image -> every blob (manifests too) -> size
    big: str  # the 3 MB layer of busybox
    shared: str  # a layer of both busybox and coredns
    arm64: set[str]  # manifests, configs and layers only the arm64 platforms use
    attestation: str  # tool's amd64 attestation manifest

    def sources(self) -> list[str]:
        return [a for host in ("docker.io", "registry.k8s.io", "quay.io")
                for a in ("--source", f"{host}={self.front.url}")]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    reg = Registry(tmp_path_factory.mktemp("standin"))
    shared = layer({"etc/os-release": b"ID=standin\n"})
    big = layer({"big.bin": os.urandom(3 << 20)})  # incompressible: the layer is ~3 MB
    blobs: dict[str, dict[str, int]] = {}
    arm64: set[str] = set()

    bb = push_image(reg, "library/busybox", ("linux", "amd64"), [shared, big], oci=False, tag="1.36")
    blobs[BUSYBOX] = {bb.digest: len(bb.manifest), **bb.blobs}

    children = [push_image(reg, "pause", ("linux", arch), [layer({"pause": arch.encode()})], oci=False)
                for arch in ("amd64", "arm64")]
    body = push_index(reg, "pause", "3.9", [c.descriptor() for c in children], oci=False)
    assert reg.manifest_digest("pause", "3.9") == digest(body)
    reg.push_manifest("pause", "latest", body, DOCKER_LIST)
    blobs[PAUSE] = {digest(body): len(body)}
    for c in children:
        blobs[PAUSE] |= {c.digest: len(c.manifest), **c.blobs}
    blobs[ALIAS] = blobs[PAUSE]
    arm64 |= {children[1].digest, *children[1].blobs}

    amd, arm = (push_image(reg, "org/tool", ("linux", arch), [layer({"tool": arch.encode()})], oci=True)
                for arch in ("amd64", "arm64"))
    att = {a: push_image(reg, "org/tool", ("unknown", "unknown"), [layer({"intoto": a.encode()})], oci=True)
           for a in ("amd64", "arm64")}
    tool = [amd.descriptor(), arm.descriptor()] + [
        att[a].descriptor(platform={"os": "unknown", "architecture": "unknown"},
                          annotations={**ATTESTATION, "vnd.docker.reference.digest": img.digest})
        for a, img in (("amd64", amd), ("arm64", arm))]
    body = push_index(reg, "org/tool", "1", tool, oci=True)
    blobs[TOOL] = {digest(body): len(body)}
    for img in (amd, arm, *att.values()):
        blobs[TOOL] |= {img.digest: len(img.manifest), **img.blobs}
    arm64 |= {arm.digest, *arm.blobs, att["arm64"].digest, *att["arm64"].blobs}

    cd = push_image(reg, "coredns/coredns", ("linux", "amd64"), [shared, layer({"coredns": b"1.11"})],
                    oci=True, tag="v1.11.1")
    blobs[COREDNS] = {cd.digest: len(cd.manifest), **cd.blobs}

    front = Front(reg.url).start()
    yield Upstream(reg, front, blobs, digest(big), digest(shared), arm64, att["amd64"].digest)
    front.stop()
    reg.stop()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("inputs")
    inv = d / "inventory.yaml"
    inv.write_text("master: {address: 10.0.0.10}\nnodes: [10.0.0.11]\nssh: {key: ./no-such-key}\n"
                   f"images: [{BUSYBOX}, {PAUSE}]\n")
    images = d / "images.list"
    images.write_text(f"# kubespray contrib/offline images.list\n\n{TOOL}\n{COREDNS}   # dns\nbusybox:1.36\n{ALIAS}\n")
    return inv, images


def _create(up: Upstream, inputs: tuple[Path, Path], out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    inv, images = inputs
    return nodecfg("bundle", "create", "-i", str(inv), "--images-file", str(images), "-o", str(out),
                   "--no-registry-image", *up.sources(), *extra, timeout=60)


@pytest.fixture(scope="module")
def full(upstream: Upstream, inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("full") / "images.tar"
    proc = _create(upstream, inputs, out)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return out, proc


def _index(path: Path) -> dict[str, dict[str, Any]]:
    with tarfile.open(path) as tar:
        f = tar.extractfile("index.json")
        assert f is not None
        doc = json.load(f)
    return {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in doc["manifests"]}


def _members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return [m.name for m in tar if m.name.startswith("blobs/sha256/") and m.isfile()]


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("nodecfg: error: ")
    for w in words:
        assert w in err, (w, err)


def test_create_keeps_every_upstream_digest(upstream: Upstream, full: tuple[Path, subprocess.CompletedProcess[str]]
                                           ) -> None:
    out, proc = full
    assert proc.stdout.startswith(f"wrote {out}: 5 image(s)"), proc.stdout
    assert proc.stderr == ""  # no progress bar without a terminal
    index = _index(out)
    assert list(index) == [BUSYBOX, PAUSE, TOOL, COREDNS, ALIAS]  # inventory first, busybox:1.36 once
    assert index[ALIAS]["digest"] == index[PAUSE]["digest"]
    for ref, (repo, tag) in REPOS.items():
        assert index[ref]["digest"] == upstream.registry.manifest_digest(repo, tag), ref
        assert index[ref]["annotations"]["io.containerd.image.name"] == ref
    members = _members(out)
    assert len(members) == len(set(members))  # every blob once: the shared layer too
    every = {d for blobs in upstream.blobs.values() for d in blobs}
    assert {"sha256:" + m.rpartition("/")[2] for m in members} == every
    assert not out.with_name(out.name + ".partial").exists()
    # the proxy wanted bearer tokens, as Docker Hub does: asked per repository, then presented
    scopes = {q["scope"][0] for q in upstream.front.token_requests}
    assert {f"repository:{repo}:pull" for repo, _ in REPOS.values()} <= scopes
    served = [e for e in upstream.front.log if e.status in (200, 206)]
    assert served and all(e.authorization == "Bearer standin-token" for e in served)


def test_verify_and_inspect(upstream: Upstream, full: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = full
    proc = nodecfg("bundle", "verify", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{out}: ok: 5 image(s), {len(_members(out))} blobs")
    proc = nodecfg("bundle", "inspect", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    images = {i["ref"]: i for i in data["images"]}
    assert images[BUSYBOX]["platforms"] == ["linux/amd64"]  # from its config: no index names it
    assert images[PAUSE]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert images[TOOL]["platforms"] == ["linux/amd64", "linux/arm64"]  # attestations are no platform
    assert sum(m["attestation"] for m in images[TOOL]["manifests"]) == 2
    for ref, blobs in upstream.blobs.items():
        assert images[ref]["size"] == sum(blobs.values()), ref
        assert images[ref]["original_digest"] is None
    assert data["rewritten"] == []
    assert data["size"] == out.stat().st_size
    text = nodecfg("bundle", "inspect", str(out)).stdout
    assert all(ref in text for ref in REPOS) and "rewritten" not in text


def test_platform_slims_and_names_the_rewritten_digests(upstream: Upstream, inputs: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    out = tmp_path / "amd64.tar"
    proc = _create(upstream, inputs, out, "--platform", "linux/amd64")
    assert proc.returncode == 0, proc.stderr
    assert "--platform linux/amd64 rewrote its index" in proc.stdout
    assert nodecfg("bundle", "verify", str(out)).returncode == 0
    data = json.loads(nodecfg("bundle", "inspect", str(out), "--json").stdout)
    rewritten = {r["ref"]: r for r in data["rewritten"]}
    assert set(rewritten) == {PAUSE, TOOL, ALIAS}  # single-platform images keep their digest
    index = _index(out)
    for ref in (PAUSE, TOOL, ALIAS):
        repo, tag = REPOS[ref]
        assert rewritten[ref]["original_digest"] == upstream.registry.manifest_digest(repo, tag)
        assert rewritten[ref]["digest"] == index[ref]["digest"] != rewritten[ref]["original_digest"]
        assert index[ref]["annotations"]["io.nodecfg.bundle.original-digest"] == rewritten[ref]["original_digest"]
        assert rewritten[ref]["platforms"] == ["linux/amd64"]
    for ref in (BUSYBOX, COREDNS):
        assert index[ref]["digest"] == upstream.registry.manifest_digest(*REPOS[ref])
    images = {i["ref"]: i for i in data["images"]}
    assert images[TOOL]["platforms"] == ["linux/amd64"]
    assert [m["digest"] for m in images[TOOL]["manifests"] if m["attestation"]] == [upstream.attestation]
    held = {"sha256:" + m.rpartition("/")[2] for m in _members(out)}
    assert not held & upstream.arm64
    text = nodecfg("bundle", "inspect", str(out)).stdout
    assert f"{rewritten[PAUSE]['original_digest']} -> {rewritten[PAUSE]['digest']}" in text

    proc = _create(upstream, inputs, tmp_path / "s390x.tar", "--platform", "linux/s390x")
    _one_line_error(proc, 1, "linux/s390x")


def test_interrupted_create_resumes(upstream: Upstream, inputs: tuple[Path, Path],
                                    full: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    """Killed (a crash), then Ctrl-C, each while the 3 MB layer is stalled mid-transfer; the third
    run fetches only what is missing, the big layer from where it stopped (Range), and writes a
    bundle identical to one made in a single run."""
    out, front = tmp_path / "resumed.tar", upstream.front
    inv, images = inputs
    argv = [*cli(), "bundle", "create", "-i", str(inv), "--no-registry-image", "--images-file", str(images), "-o", str(out),
            *upstream.sources()]
    big = f"/blobs/{upstream.big}"
    work = out.with_name("resumed.tar.partial") / "blobs" / "sha256"
    starts: list[int] = []
    try:
        for sig in (signal.SIGKILL, signal.SIGINT):
            front.release.set()
            front.release, front.stall_digest = type(front.release)(), upstream.big
            front.stalled.clear()
            since = len(front.log)
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert front.stalled.wait(20), "the big layer never started"
            _wait_for(lambda: _fetched_all_but_the_stalled(work, upstream, len(starts) + 1))
            child.send_signal(sig)
            _, stderr = child.communicate(timeout=20)
            assert not out.exists()
            assert out.with_name("resumed.tar.partial").is_dir()
            if sig == signal.SIGINT:
                assert child.returncode == 130, stderr
                assert stderr.strip().endswith("nodecfg: interrupted"), stderr
                assert "the same command resumes" in stderr
            starts.append(_range_start(front, since, big))
        front.stall_digest = ""
        front.release.set()
        since = len(front.log)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
    finally:
        front.stall_digest = ""
        front.release.set()
    starts.append(_range_start(front, since, big))
    assert starts[0] == 0 < starts[1] < starts[2], starts  # each run went on from the .part
    assert [e.path for e in front.blob_gets(since) if e.status in (200, 206)] == [f"/v2/library/busybox{big}"]
    assert "reused" in proc.stdout
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(full[0].read_bytes()).digest()
    assert not out.with_name("resumed.tar.partial").exists()


def _wait_for(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _fetched_all_but_the_stalled(work: Path, up: Upstream, stalls: int) -> bool:
    """Every other blob verified in the work dir, and the stalled layer's .part as long as the
    proxy let it get (1 MiB per stall)."""
    everything = {d for blobs in up.blobs.values() for d in blobs} - {up.big}
    part = work / f"{up.big[7:]}.part"
    return all((work / d[7:]).is_file() for d in everything) and \
        part.is_file() and part.stat().st_size >= stalls * (1 << 20)


def _range_start(front: Front, since: int, big: str) -> int:
    gets = [e for e in front.blob_gets(since) if e.path.endswith(big) and e.status in (200, 206)]
    assert len(gets) == 1, gets
    return int(gets[0].range.removeprefix("bytes=").partition("-")[0] or 0)


# -- bad bundles ------------------------------------------------------------------------------


def _member(path: Path, digest_: str) -> tarfile.TarInfo:
    with tarfile.open(path) as tar:
        return tar.getmember(f"blobs/sha256/{digest_[7:]}")


def test_corrupt_blob_is_named(upstream: Upstream, full: tuple[Path, subprocess.CompletedProcess[str]],
                               tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.tar"
    shutil.copy(full[0], bad)
    info = _member(bad, upstream.big)
    with bad.open("r+b") as f:
        f.seek(info.offset_data + info.size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    proc = nodecfg("bundle", "verify", str(bad))
    _one_line_error(proc, 1, str(bad), upstream.big, "corrupt", f"layer of {BUSYBOX}")


def test_corrupt_manifest_is_named(full: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.tar"
    shutil.copy(full[0], bad)
    pause = _index(bad)[PAUSE]["digest"]
    info = _member(bad, pause)
    with bad.open("r+b") as f:
        f.seek(info.offset_data + 2)
        f.write(b"X")
    for action in ("verify", "inspect"):
        _one_line_error(nodecfg("bundle", action, str(bad)), 1, pause, "corrupt", f"index of {PAUSE}")


def test_truncated_bundle(upstream: Upstream, full: tuple[Path, subprocess.CompletedProcess[str]],
                          tmp_path: Path) -> None:
    data = full[0].read_bytes()
    info = _member(full[0], upstream.big)
    with tarfile.open(full[0]) as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + -(-last.size // 512) * 512
    cuts = {"mid-blob": info.offset_data + 1000, "at a member boundary": info.offset,
            "in the end marker": end + 512}
    for why, cut in cuts.items():
        bad = tmp_path / "cut.tar"
        bad.write_bytes(data[:cut])
        for action in ("verify", "inspect"):
            proc = nodecfg("bundle", action, str(bad))
            assert proc.returncode == 1, (why, proc.stderr)
            _one_line_error(proc, 1, str(bad), "truncated")


def test_missing_blob_is_named(upstream: Upstream, full: tuple[Path, subprocess.CompletedProcess[str]],
                               tmp_path: Path) -> None:
    bad = tmp_path / "missing.tar"
    with tarfile.open(full[0]) as src, tarfile.open(bad, "w") as dst:
        for m in src:
            if m.name != f"blobs/sha256/{upstream.shared[7:]}":
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    _one_line_error(nodecfg("bundle", "verify", str(bad)), 1, upstream.shared, "missing", f"layer of {BUSYBOX}")


def test_not_a_bundle(tmp_path: Path) -> None:
    _one_line_error(nodecfg("bundle", "verify", str(tmp_path / "nope.tar")), 2, "no such bundle file")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(5000))
    _one_line_error(nodecfg("bundle", "verify", str(junk)), 1, "not a bundle")
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(__file__, arcname="hello.py")
    _one_line_error(nodecfg("bundle", "inspect", str(plain)), 1, "not a bundle", "oci-layout")


# -- bad input --------------------------------------------------------------------------------


def test_input_errors_are_one_line(upstream: Upstream, tmp_path: Path) -> None:
    out = str(tmp_path / "x.tar")
    _one_line_error(nodecfg("bundle", "create", "-o", out, cwd=str(tmp_path)), 2, "no images")
    images = tmp_path / "images.list"
    images.write_text("busybox:1.36\n\nBad Image\n")
    _one_line_error(nodecfg("bundle", "create", "-o", out, "--images-file", str(images)), 2, f"{images}:3:")
    images.write_text("busybox:9.99\n")
    proc = nodecfg("bundle", "create", "-o", out, "--images-file", str(images), *upstream.sources())
    _one_line_error(proc, 1, "docker.io/library/busybox:9.99", "not found", "MANIFEST_UNKNOWN")
    dead = f"http://127.0.0.1:{free_port()}"
    proc = nodecfg("bundle", "create", "-o", out, "--images-file", str(images), "--source", f"docker.io={dead}")
    _one_line_error(proc, 1, "cannot reach", dead)
    _one_line_error(nodecfg("bundle", "create", "-o", str(tmp_path), "--images-file", str(images)), 2,
                    "is a directory")
