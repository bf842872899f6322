"""The push pipeline from a bundle, without a lab: the pure plan, the verified stream, the
docker-archive stream, and `pipeline.push` of a `BundleSource` against a small fake registry on
loopback that checks digests and references as the distribution registry does and records every
request."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from nodecfg.bundle import dockerarchive
from nodecfg.bundle.layout import IndexEntry, WorkDir, entry_from, index_document, write_bundle
from nodecfg.bundle.manifests import DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Platform, descriptor, sha256_digest
from nodecfg.bundle.reader import CHUNK, Bundle, verified_chunks
from nodecfg.credentials import Credentials
from nodecfg.errors import BundleError
from nodecfg.images import parse_ref
from nodecfg.inventory import Secret
from nodecfg.push import pipeline
from nodecfg.push.api import PushError, Target
from nodecfg.push.bundle_source import BundleSource
from nodecfg.push.source import SourceImage

CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _layer(name: str, data: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _manifest(work: WorkDir, arch: str, layers: list[bytes]) -> Descriptor:
    config = json.dumps({"os": "linux", "architecture": arch,
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(gzip.decompress(x)) for x in layers]}
                         }).encode()
    for blob in (config, *layers):
        work.put(blob)
    body = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                       "config": {"mediaType": CONFIG, "digest": sha256_digest(config), "size": len(config)},
                       "layers": [{"mediaType": LAYER, "digest": sha256_digest(x), "size": len(x)} for x in layers]}
                      ).encode()
    work.put(body)
    return Descriptor(DOCKER_MANIFEST, sha256_digest(body), len(body), Platform("linux", arch))


@dataclass
class Made:
    path: Path
    shared: str  # a layer of both images
    big: str  # app's 2 MB layer


def _bundle(tmp_path: Path) -> Made:
    work = WorkDir(tmp_path / "b.tar.partial")
    shared = _layer("etc/shared", b"shared\n")
    big = _layer("big", bytes(range(256)) * 8192)  # 2 MB, two chunks
    app = _manifest(work, "amd64", [shared, big])
    children = [_manifest(work, a, [shared, _layer("m", a.encode())]) for a in ("amd64", "arm64")]
    index = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST,
                        "manifests": [c.to_json() for c in children]}).encode()
    work.put(index)
    top = Descriptor(DOCKER_LIST, sha256_digest(index), len(index))
    entries = [IndexEntry("quay.io/org/app:1", app), IndexEntry("registry.k8s.io/multi:2", top),
               IndexEntry("docker.io/library/registry:2", children[0], role="registry")]
    blobs = [Descriptor("x", p.name and "sha256:" + p.name, p.stat().st_size) for p in sorted(work.blobs.iterdir())]
    out = tmp_path / "b.tar"
    write_bundle(out, work, index_document(entries), blobs)
    work.remove()
    return Made(out, sha256_digest(shared), sha256_digest(big))


@dataclass
class Fake:
    """Blobs by repository, manifests by repository and reference, a request log."""

    blobs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)
    auth: str | None = None
    port: int = 0
    space: int | None = None  # bytes its disk still takes (None: no limit): a blob past it is ENOSPC
    uploads: set[str] = field(default_factory=set)  # upload sessions open (POSTed, not yet PUT or DELETEd)


@pytest.fixture
def fake() -> Iterator[Fake]:
    yield from serve_fake()


def serve_fake() -> Iterator[Fake]:
    """The fake registry on a loopback port while the iterator is open."""
    state = Fake()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_a: Any) -> None:
            return None

        def _reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self) -> None:  # noqa: PLR0911 -- one fake registry, one branch per route
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                state.log.append((self.command, url.path))
            if state.auth and self.headers.get("Authorization") != state.auth:
                return self._reply(401)
            parts = url.path.split("/")
            kind_at = next(i for i, p in enumerate(parts) if p in ("blobs", "manifests"))
            repo, kind, rest = "/".join(parts[2:kind_at]), parts[kind_at], parts[kind_at + 1:]
            have = state.blobs.setdefault(repo, {})
            if kind == "blobs" and self.command == "HEAD":
                return self._reply(404) if rest[0] not in have else self._reply(200, body=have[rest[0]])
            if kind == "blobs" and self.command == "POST":
                src = state.blobs.get(query.get("from", ""), {})
                if "mount" in query and query["mount"] in src:
                    have[query["mount"]] = src[query["mount"]]
                    return self._reply(201)
                with lock:
                    upload = f"u{len(state.log)}"
                    state.uploads.add(upload)
                return self._reply(202, {"Location": f"http://127.0.0.1:{state.port}/v2/{repo}/blobs/uploads/"
                                                     f"{upload}?_state=x"})
            if kind == "blobs" and self.command == "DELETE" and rest[:1] == ["uploads"]:
                with lock:
                    state.uploads.discard(rest[1])
                return self._reply(204)
            if kind == "blobs" and self.command == "PUT":
                if state.space is not None and len(body) > state.space:  # distribution's filesystem driver
                    return self._reply(500, body=b'{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":'
                                       b'{"DriverName":"filesystem","Enclosed":{"Op":"write","Path":"/var/lib/'
                                       b'registry/docker/registry/v2/repositories/_uploads/data","Err":28}}}]}')
                if sha256_digest(body) != query["digest"]:
                    return self._reply(400, body=b'{"errors":[{"code":"DIGEST_INVALID"}]}')
                have[query["digest"]] = body
                with lock:
                    state.uploads.discard(rest[1])
                    if state.space is not None:
                        state.space -= len(body)
                return self._reply(201)
            if kind == "manifests" and self.command in ("HEAD", "GET"):
                found = state.manifests.get((repo, rest[0]))
                return self._reply(404) if found is None else self._reply(
                    200, {"Docker-Content-Digest": sha256_digest(found)}, found)
            if kind == "manifests" and self.command == "PUT":
                doc = json.loads(body)
                refs = [m["digest"] for m in doc.get("manifests", [])]
                blobs = [doc["config"]["digest"], *(x["digest"] for x in doc["layers"])] if "layers" in doc else []
                if any((repo, d) not in state.manifests for d in refs) or any(d not in have for d in blobs):
                    return self._reply(400, body=b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN"}]}')
                state.manifests[(repo, rest[0])] = body
                state.manifests[(repo, sha256_digest(body))] = body
                return self._reply(201, {"Docker-Content-Digest": sha256_digest(body)})
            return self._reply(405)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


def _target(fake: Fake, creds: Credentials | None = None) -> Target:
    return Target("fake", lambda: http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10), creds)


def _push(made: Made, fake: Fake, creds: Credentials | None = None
          ) -> tuple[list[pipeline.ImageResult], pipeline.PushStats, list[str]]:
    said: list[str] = []
    source = BundleSource(made.path, [], "registry:2")
    try:
        results, stats = pipeline.push(source, _target(fake, creds), progress=said.append, width=3)
    finally:
        source.close()
    return results, stats, said


def _image(repo: str, *digests: str) -> SourceImage:
    return SourceImage(repo, parse_ref(repo), digests, 0)


def test_plan_mounts_what_another_repository_has() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    one, two = _image("one/x:1", a, b), _image("two/x:1", a)
    jobs = pipeline.plan_blobs([one, two], {("two/x", a): 10})
    assert jobs == [pipeline.BlobJob(a, "one/x", "two/x", ()), pipeline.BlobJob(b, "one/x", None, ())]  # mounts first
    jobs = pipeline.plan_blobs([one, two], {})
    assert pipeline.BlobJob(a, "one/x", None, ("two/x",)) in jobs
    assert pipeline.plan_blobs([one, two], {("one/x", a): 10, ("two/x", a): 10, ("one/x", b): 99}) == []


def test_role_annotation_round_trip() -> None:
    top = Descriptor(DOCKER_MANIFEST, sha256_digest(b"m"), 1)
    doc = json.loads(index_document([IndexEntry("docker.io/library/registry:2", top, role="registry")]))
    assert doc["manifests"][0]["annotations"]["io.nodecfg.bundle.role"] == "registry"
    back = entry_from(descriptor(doc["manifests"][0]))
    assert back.is_registry and not back.pushed
    assert IndexEntry("a:1", top, role="image,registry").pushed and IndexEntry("a:1", top).pushed


def test_verified_chunks_hold_back_the_last_chunk(tmp_path: Path) -> None:
    data = b"x" * (CHUNK * 2 + 5)
    f = tmp_path / "blob"
    f.write_bytes(b"pad" + data)
    import os

    fd = os.open(f, os.O_RDONLY)
    try:
        assert b"".join(verified_chunks(fd, 3, len(data), sha256_digest(data), "w", f, lambda _n: None)) == data
        got: list[bytes] = []
        with pytest.raises(BundleError, match="is corrupt"):
            for chunk in verified_chunks(fd, 3, len(data), sha256_digest(b"other"), "w", f, lambda _n: None):
                got.append(chunk)
        assert sum(map(len, got)) < len(data)  # the last chunk never left
        with pytest.raises(BundleError, match="truncated"):
            list(verified_chunks(fd, 3, len(data) + 10, sha256_digest(data), "w", f, lambda _n: None))
    finally:
        os.close(fd)


def test_push_then_nothing_to_send(tmp_path: Path, fake: Fake) -> None:
    made = _bundle(tmp_path)
    results, stats, said = _push(made, fake)
    assert [(r.image.ref.target, r.outcome) for r in results] == [("org/app:1", "pushed"), ("multi:2", "pushed")]
    assert "library/registry" not in fake.blobs  # the registry's own image is not pushed
    assert stats.uploaded.count(made.shared) == 1 and stats.mounted == 1  # once, then mounted across
    with Bundle.open(made.path) as b:
        for e in b.entries[:2]:
            path, tag = parse_ref(e.ref).path, parse_ref(e.ref).tag
            assert sha256_digest(fake.manifests[(path, tag)]) == e.descriptor.digest
    # manifests after blobs, tags after their children
    puts = [p for m, p in fake.log if m == "PUT" and "/manifests/" in p]
    assert puts[-1] in ("/v2/multi/manifests/2", "/v2/org/app/manifests/1")
    multi = [p for p in puts if p.startswith("/v2/multi/")]
    assert multi[-1] == "/v2/multi/manifests/2" and len(multi) == 3
    assert any("tagged multi:2" in s for s in said)
    fake.log.clear()
    results, stats, _ = _push(made, fake)
    assert [r.outcome for r in results] == ["skipped", "skipped"]
    assert stats.uploaded == [] and {m for m, _ in fake.log} == {"GET"} and len(fake.log) == 2


def test_corrupt_blob_tags_nothing_half_pushed(tmp_path: Path, fake: Fake) -> None:
    made = _bundle(tmp_path)
    with Bundle.open(made.path) as b:
        offset, size = b.offset(made.big)
    with made.path.open("r+b") as f:
        f.seek(offset + size - 3)
        f.write(b"\xff")
    with pytest.raises(BundleError, match=f"{made.big}.*is corrupt"):
        _push(made, fake)
    assert made.big not in fake.blobs.get("org/app", {})
    assert ("org/app", "1") not in fake.manifests
    # a resumed run with a good bundle sends only what is missing
    good = _bundle(tmp_path / "again")
    before = {r: set(d) for r, d in fake.blobs.items()}
    _, stats, _ = _push(good, fake)
    assert not set(stats.uploaded) & {d for ds in before.values() for d in ds}
    assert made.big in stats.uploaded


def test_basic_auth_on_every_request(tmp_path: Path, fake: Fake) -> None:
    made = _bundle(tmp_path)
    fake.auth = "Basic " + base64.b64encode(b"ops:s3cret-pw").decode()
    results, _, said = _push(made, fake, Credentials("ops", Secret("s3cret-pw")))
    assert all(r.outcome == "pushed" for r in results)
    assert not any("s3cret" in s for s in said)
    fake.auth = "Basic wrong"
    with pytest.raises(PushError, match="refused the credentials"):
        _push(made, fake, Credentials("ops", Secret("s3cret-pw")))


def test_docker_archive_for_the_masters_platform(tmp_path: Path) -> None:
    made = _bundle(tmp_path)
    with Bundle.open(made.path) as b:
        multi = b.entries[1]
        data = b"".join(dockerarchive.load_stream(b, multi, Platform("linux", "arm64"), "multi:2"))
        with pytest.raises(BundleError, match="no image for the master's platform linux/s390x"):
            list(dockerarchive.load_stream(b, multi, Platform("linux", "s390x"), "multi:2"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        (man,) = json.load(f)
        assert man["RepoTags"] == ["multi:2"]
        cfg = tar.extractfile(man["Config"])
        assert cfg is not None
        config = json.load(cfg)
        assert config["architecture"] == "arm64"
        for name, diff_id in zip(man["Layers"], config["rootfs"]["diff_ids"], strict=True):
            blob = tar.extractfile(name)
            assert blob is not None
            assert "sha256:" + hashlib.sha256(gzip.decompress(blob.read())).hexdigest() == diff_id
