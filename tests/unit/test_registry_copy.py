"""Replicas on their own disks get the images inside the site (issue 22): the copy script run for real
between two real distribution registries on loopback (Debian's docker-registry), and the push
pipeline driving a copier instead of sending bytes itself."""

from __future__ import annotations

import http.client
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from nodecfg.credentials import Credentials
from nodecfg.inventory import RegistrySettings, Secret
from nodecfg.push import pipeline
from nodecfg.push.api import Target
from nodecfg.push.bundle_source import BundleSource
from nodecfg.registry import container
from tests.e2e.standin import Registry, digest
from tests.unit.test_push_bundle import Fake, _bundle, serve_fake


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Registry, Registry]]:
    a, b = Registry(tmp_path / "a"), Registry(tmp_path / "b")
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _copy(here: Registry, source: Registry, blobs: Sequence[tuple[str, str]], tmp: Path) -> dict[str, int | str]:
    settings = RegistrySettings(address="127.0.0.1", port=here.port)
    script = container.copy_script(settings, 30, source.url, blobs, None)
    proc = subprocess.run(script.argv(), input=script.stdin, capture_output=True, check=False, cwd=tmp,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stderr
    return container.parse_copied(proc.stdout.decode())


def test_blobs_copied_registry_to_registry_checked_and_named(pair: tuple[Registry, Registry], tmp_path: Path) -> None:
    a, b = pair
    big, small = bytes(range(256)) * 9000, b"small layer"
    a.push_blob("team/app", big)
    a.push_blob("other/repo", small)  # the first replica has every blob in each repository it goes to
    missing = digest(b"never pushed")
    copied = _copy(b, a, [("team/app", digest(big)), ("other/repo", digest(small)), ("team/app", missing)], tmp_path)
    assert copied[digest(big)] == len(big) and copied[digest(small)] == len(small)
    assert isinstance(copied[missing], str) and "answered 404" in str(copied[missing])
    for repo, data in (("team/app", big), ("other/repo", small)):
        conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
        conn.request("GET", f"/v2/{repo}/blobs/{digest(data)}")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == data
        conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # its temp files went


@pytest.fixture
def fake() -> Iterator[Fake]:
    yield from serve_fake()


def test_the_pipeline_with_a_copier_sends_no_blob_and_tags_last(tmp_path: Path, fake: Fake) -> None:
    """The copier brings the blobs (here: straight into the fake registry, as the copy script would on
    a replica); the pipeline mounts, puts manifests and tags, and reads not one blob byte itself."""
    made = _bundle(tmp_path)
    source = BundleSource(made.path, [], "registry:2")
    asked: list[list[str]] = []

    def copier(jobs: Sequence[pipeline.BlobJob]) -> dict[str, int | str]:
        asked.append([j.digest for j in jobs])
        out: dict[str, int | str] = {}
        for j in jobs:
            offset, size = source._bundle.offset(j.digest)
            with made.path.open("rb") as f:
                f.seek(offset)
                fake.blobs.setdefault(j.first, {})[j.digest] = f.read(size)
            out[j.digest] = size
        return out

    def no_bytes(*_a: object) -> Iterator[object]:
        raise AssertionError("a copier's pipeline must not read blob bytes from the source")

    source.blobs = no_bytes  # type: ignore[method-assign]
    try:
        target = Target("replica", lambda: http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10),
                        Credentials("u", Secret("p")) if fake.auth else None)
        results, stats = pipeline.push(source, target, progress=lambda _m: None, width=3, copier=copier)
        assert [r.outcome for r in results] == ["pushed", "pushed"], [r.error for r in results]
        assert len(asked) == 1 and made.big in asked[0] and stats.uploaded == []
        assert sorted(stats.copied) == sorted(asked[0]) and stats.copied_bytes > 0
        assert stats.mounted >= 1  # the shared layer copied once, mounted into the other repository
        again, stats = pipeline.push(source, target, progress=lambda _m: None, copier=copier)
        assert [r.outcome for r in again] == ["skipped", "skipped"] and len(asked) == 1
    finally:
        source.close()
