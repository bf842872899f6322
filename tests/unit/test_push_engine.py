"""The push pipeline from this machine's engine, without a lab: the manifest, the `docker save`
stream (docker's legacy layout: a layer linked to its first copy), and `pipeline.push` of an
`EngineSource` against the fake registry of test_push_bundle: only missing blobs are saved and sent,
tags last, a re-run asks only for the tags."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import docker
import pytest

from nodecfg.bundle.manifests import DOCKER_MANIFEST, Descriptor
from nodecfg.images import parse_ref
from nodecfg.push import dockersave, engine_source, pipeline
from nodecfg.push.api import Target, config_digest
from nodecfg.push.source import SourceImage
from tests.unit.test_push_bundle import Fake, serve_fake


@pytest.fixture
def fake() -> Iterator[Fake]:
    yield from serve_fake()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(name: str, data: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _config(layers: Sequence[bytes], tag: str) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"t": tag}},
                       "rootfs": {"type": "layers", "diff_ids": [_sha(x) for x in layers]}}).encode()


def _image(ref: str, config: bytes, layers: Sequence[bytes]) -> dict[str, Any]:
    """What the engine's inspect answers for it."""
    return {"Id": _sha(config), "RootFS": {"Layers": [_sha(x) for x in layers]},
            "Size": len(config) + sum(map(len, layers)), "ref": ref}


def _save(images: Sequence[tuple[bytes, Sequence[bytes]]], chunk: int = 7000) -> Iterator[bytes]:
    """A `docker save` stream as docker 20.10 writes it: <v1 id>/{VERSION,json,layer.tar}, a layer
    already written once linked to it, <id>.json, manifest.json, repositories."""
    raw = io.BytesIO()
    seen: dict[str, str] = {}
    manifest = []
    with tarfile.open(fileobj=raw, mode="w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for n, (config, layers) in enumerate(images):
            names = []
            for i, data in enumerate(layers):
                v1 = hashlib.sha256(f"{n}/{i}".encode()).hexdigest()
                add(f"{v1}/VERSION", b"1.0")
                add(f"{v1}/json", b'{"id":"%s"}' % v1.encode())
                if _sha(data) in seen:
                    link = tarfile.TarInfo(f"{v1}/layer.tar")
                    link.type, link.linkname = tarfile.SYMTYPE, f"../{seen[_sha(data)]}/layer.tar"
                    tar.addfile(link)
                else:
                    add(f"{v1}/layer.tar", data)
                    seen[_sha(data)] = v1
                names.append(f"{v1}/layer.tar")
            add(f"{_sha(config)[7:]}.json", config)
            manifest.append({"Config": f"{_sha(config)[7:]}.json", "RepoTags": None, "Layers": names})
        add("manifest.json", json.dumps(manifest).encode())
        add("repositories", b"{}")
    data = raw.getvalue()
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]


BASE = _layer("bin/sh", b"base" * 5000)
BIG = _layer("big", bytes(range(256)) * 9000)  # > 2 MB: more than one chunk
SMALL = _layer("small", b"small")
APP_CONFIG, TOOL_CONFIG = _config([BASE, BIG], "app"), _config([BASE, SMALL], "tool")
APP = _image("quay.io/org/app:1", APP_CONFIG, [BASE, BIG])
TOOL = _image("docker.io/library/tool:2", TOOL_CONFIG, [BASE, SMALL])
SAVES = {APP["Id"]: (APP_CONFIG, [BASE, BIG]), TOOL["Id"]: (TOOL_CONFIG, [BASE, SMALL])}


def test_manifest_is_docker_schema2_with_uncompressed_layers() -> None:
    config = Descriptor(engine_source.DOCKER_CONFIG, APP["Id"], len(APP_CONFIG))
    layers = [Descriptor(engine_source.LAYER_TAR, d, 10) for d in APP["RootFS"]["Layers"]]
    body = engine_source.manifest(config, layers)
    assert body == engine_source.manifest(config, layers)  # the same image, the same digest
    doc = json.loads(body)
    assert doc["mediaType"] == DOCKER_MANIFEST and doc["config"]["digest"] == APP["Id"]
    assert [x["mediaType"] for x in doc["layers"]] == ["application/vnd.docker.image.rootfs.diff.tar"] * 2
    assert config_digest(body) == APP["Id"]
    assert config_digest(b"not json") == ""


def test_plan_mounts_what_a_repository_has_and_uploads_the_rest() -> None:
    app = SourceImage("a", parse_ref("quay.io/org/app:1"), (APP["Id"], _sha(BASE), _sha(BIG)), 0, config=APP["Id"])
    tool = SourceImage("t", parse_ref("docker.io/library/tool:2"), (TOOL["Id"], _sha(BASE), _sha(SMALL)), 0,
                       config=TOOL["Id"])
    jobs = pipeline.plan_blobs([app, tool], {("org/app", _sha(BASE)): len(BASE)})
    assert [(j.digest, j.first, j.mount_from) for j in jobs if j.mount_from] == [(_sha(BASE), "library/tool", "org/app")]
    assert {j.digest for j in jobs if j.mount_from is None} == {APP["Id"], _sha(BIG), TOOL["Id"], _sha(SMALL)}
    everything = {(img.repo, d): 1 for img in (app, tool) for d in img.blobs}
    assert pipeline.plan_blobs([app, tool], everything) == []


def test_save_stream_spools_only_wanted_blobs_once() -> None:
    spool = dockersave.Spool()
    seen: list[tuple[str, int]] = []
    wanted = {_sha(BASE), _sha(BIG), TOOL["Id"]}
    try:
        seen += dockersave.saved_blobs(_save([SAVES[APP["Id"]], SAVES[TOOL["Id"]]]), wanted, spool)
        assert sorted(seen) == sorted([(_sha(BASE), len(BASE)), (_sha(BIG), len(BIG)), (TOOL["Id"], len(TOOL_CONFIG))])
        offset, size = spool.offset(_sha(BIG))
        spool.file.seek(offset)
        assert spool.file.read(size) == BIG
        with pytest.raises(dockersave.PushError, match="not in this run's docker save"):
            spool.offset(_sha(SMALL))
    finally:
        spool.close()


def _push(fake: Fake, images: Sequence[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
          ) -> tuple[list[pipeline.ImageResult], Any, list[list[str]]]:
    import http.client

    saves: list[list[str]] = []

    def save_stream(_client: object, ids: Sequence[str]) -> Iterator[bytes]:
        saves.append(list(ids))
        return _save([SAVES[i] for i in ids])

    class Presave:  # started by `prepare` as soon as the tags are known; the stream is the stand-in's
        def __init__(self, _client: object, ids: Sequence[str]) -> None:
            self.ids = list(dict.fromkeys(ids))

        def stream(self, ids: Sequence[str]) -> Iterator[bytes] | None:
            return save_stream(None, self.ids) if set(ids) <= set(self.ids) else None

        def close(self) -> None:
            return None

    monkeypatch.setattr(engine_source, "save_stream", save_stream)
    monkeypatch.setattr(engine_source, "Presave", Presave)
    docs = {parse_ref(i["ref"]).upstream: i for i in images}
    monkeypatch.setattr(engine_source.dockerengine, "inspect_image", docs.get)
    refs = [parse_ref(i["ref"]) for i in images]
    source = engine_source.EngineSource(refs, {r.target: i["ref"] for r, i in zip(refs, images, strict=True)},
                                        lambda _m: None)
    source._client = object()  # type: ignore[assignment]  # no engine: save_stream is the stand-in
    try:
        results, stats = pipeline.push(
            source, Target("fake", lambda: http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)),
            progress=lambda _m: None, width=3)
    finally:
        source.close()
    return results, stats, saves


def test_push_sends_what_is_missing_then_tags_and_a_rerun_sends_nothing(
        fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.blobs["org/app"] = {_sha(BASE): BASE}  # the registry has the base layer in one repository
    results, stats, saves = _push(fake, [APP, TOOL], monkeypatch)
    assert [r.outcome for r in results] == ["pushed", "pushed"], [r.error for r in results]
    assert saves == [[APP["Id"], TOOL["Id"]]]  # one docker save for both
    assert sorted(stats.uploaded) == sorted([APP["Id"], _sha(BIG), TOOL["Id"], _sha(SMALL)])
    assert stats.mounted == 1  # the base layer into library/tool, never sent
    for img, config in ((APP, APP_CONFIG), (TOOL, TOOL_CONFIG)):
        ref = parse_ref(img["ref"])
        body = fake.manifests[(ref.path, ref.tag)]
        doc = json.loads(body)
        assert doc["config"] == {"mediaType": engine_source.DOCKER_CONFIG, "size": len(config), "digest": img["Id"]}
        assert [x["digest"] for x in doc["layers"]] == img["RootFS"]["Layers"]
        assert fake.blobs[ref.path][img["Id"]] == config
    puts = [path for method, path in fake.log if method == "PUT"]
    for repo in ("org/app", "library/tool"):  # each image tagged after every blob of its own
        mine = [p for p in puts if p.startswith(f"/v2/{repo}/")]
        assert mine[-1].startswith(f"/v2/{repo}/manifests/") and sum("/manifests/" in p for p in mine) == 1

    fake.log.clear()
    results, stats, saves = _push(fake, [APP, TOOL], monkeypatch)
    assert [r.outcome for r in results] == ["skipped", "skipped"]
    assert saves == [] and stats.uploaded == []
    assert sorted(fake.log) == sorted([("GET", "/v2/org/app/manifests/1"), ("GET", "/v2/library/tool/manifests/2")])


def test_a_tag_on_another_image_is_pushed_again_from_the_registrys_blobs(
        fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    _push(fake, [APP], monkeypatch)
    fake.manifests[("org/app", "1")] = b'{"schemaVersion": 2, "config": {"digest": "sha256:' + b"0" * 64 + b'"}}'
    results, stats, saves = _push(fake, [APP], monkeypatch)
    assert [r.outcome for r in results] == ["pushed"]
    assert saves == [] and stats.uploaded == []  # every blob was there: the manifest is made from their sizes
    assert config_digest(fake.manifests[("org/app", "1")]) == APP["Id"]


def test_direct_goes_to_the_registry_address_and_port_ssh_does_not() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from nodecfg.inventory import RegistrySettings
    from nodecfg.push import channels
    from nodecfg.registry.master import Master

    settings = RegistrySettings(address="fd00::5", port=5001)
    with ThreadPoolExecutor(1) as pool:
        master = Master(None, 30, pool)  # no inventory: the registry on this machine
        conn = master.connector(settings, direct=True)()
        assert (conn.host, conn.port, conn.timeout) == ("fd00::5", 5001, 30)
        local = master.connector(settings)()
        assert (local.host, local.port) == ("127.0.0.1", 5001)
    assert channels.direct("10.0.0.5", 5000)().host == "10.0.0.5"


def test_two_targets_of_one_image_are_saved_once(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    other = {**APP, "ref": "docker.io/org/app2:1"}
    results, stats, saves = _push(fake, [APP, other], monkeypatch)
    assert [r.outcome for r in results] == ["pushed", "pushed"] and saves == [[APP["Id"]]]
    assert stats.mounted == 3  # config and both layers into the second repository, sent once


@dataclass
class _Engine:
    """A docker engine on 127.0.0.1 that answers `GET /v1.43/images/get?names=...` only."""

    reply: tuple[int, bytes] = (200, b"x" * 10 + b"y")
    asked: list[list[str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def docker_engine() -> Iterator[_Engine]:
    engine = _Engine()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_a: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            status, body = engine.reply if parts.path == "/v1.43/images/get" else (404, b"{}")
            engine.asked.append(parse_qs(parts.query).get("names", []))
            self.send_response(status)
            self.send_header("Content-Type", "application/x-tar" if status == 200 else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    engine.url = f"tcp://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield engine
    server.shutdown()
    server.server_close()


def _client(engine: _Engine) -> docker.DockerClient:
    return docker.DockerClient(base_url=engine.url, version="1.43", timeout=10)


def test_one_save_of_several_images_through_the_sdk(docker_engine: _Engine) -> None:
    stream = dockersave.save_stream(_client(docker_engine), ["sha256:a", "sha256:b"])
    assert b"".join(stream) == b"x" * 10 + b"y"
    assert docker_engine.asked == [["sha256:a", "sha256:b"]]  # one request for both


def test_a_save_the_engine_refuses_is_one_line(docker_engine: _Engine) -> None:
    docker_engine.reply = (404, b'{"message":"reference does not exist"}')
    with pytest.raises(dockersave.PushError, match=r"^docker save on this machine failed \(HTTP 404: "
                                                   r"reference does not exist\)$"):
        b"".join(dockersave.save_stream(_client(docker_engine), ["sha256:a"]))
    stopped = docker.DockerClient(base_url="tcp://127.0.0.1:9", version="1.43", timeout=10)  # nothing listens
    with pytest.raises(dockersave.PushError, match="docker save on this machine failed"):
        b"".join(dockersave.save_stream(stopped, ["sha256:a"]))


def test_a_presave_serves_the_images_it_asked_for_and_is_closed(docker_engine: _Engine) -> None:
    early = dockersave.Presave(_client(docker_engine), ["sha256:a", "sha256:b", "sha256:a"])
    assert early.stream(["sha256:c"]) is None  # not asked for: a fresh save is needed
    stream = early.stream(["sha256:b"])
    assert stream is not None and b"".join(stream) == b"x" * 10 + b"y"
    early.close()
    assert docker_engine.asked == [["sha256:a", "sha256:b"]]
    unused = dockersave.Presave(_client(docker_engine), ["sha256:c"])
    unused.close()
    response = unused._response.result(timeout=10)
    deadline = time.monotonic() + 10  # the close runs as the answer comes, on the presave's thread
    while not response.raw.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert response.raw.closed
