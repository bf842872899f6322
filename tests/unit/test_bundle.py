"""Bundles: the pure parts (images.list, platforms, index filtering, auth challenges, sources,
index.json), the bundle file round trip, and the registry client against a fake registry on
loopback (bearer and Basic auth, redirects, Range resume, digest checks, proxies, timeouts, abort)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from nodecfg.bundle import auth
from nodecfg.bundle.client import RegistryClient, proxy_for
from nodecfg.bundle.inspect import inspect_bundle, verify_bundle
from nodecfg.bundle.layout import IndexEntry, WorkDir, entry_from, index_document, write_bundle
from nodecfg.bundle.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    descriptor,
    filter_index,
    media_type_of,
    parse_platform,
    sha256_digest,
)
from nodecfg.bundle.sources import Endpoint, endpoint_for, parse_images_list, parse_source_option, parse_sources
from nodecfg.errors import BundleError, FetchError, UsageError
from nodecfg.inventory import Secret

# -- images.list ------------------------------------------------------------------------------


def test_images_list_format() -> None:
    text = ("# kubespray contrib/offline/temp/images.list\n\n"
            "registry.k8s.io/pause:3.9\n"
            "  quay.io/calico/node:v3.27.3   # trailing comment\n"
            "\t\n#docker.io/library/nginx:1.25\n"
            "docker.io/library/nginx:1.25-alpine\r\n")
    assert parse_images_list(text, "images.list") == [
        "registry.k8s.io/pause:3.9", "quay.io/calico/node:v3.27.3", "docker.io/library/nginx:1.25-alpine"]


@pytest.mark.parametrize(("text", "words"), [
    ("pause:3.9\nNot A Ref\n", "images.list:2: image 'Not A Ref'"),
    ("\n\nquay.io/x@sha256:" + "a" * 64 + "\n", "images.list:3: image 'quay.io/x@sha256:"),
    ("UPPER/case:1\n", "images.list:1: image 'UPPER/case:1': invalid repository name component"),
])
def test_images_list_errors_name_the_line(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=r"images\.list") as info:
        parse_images_list(text, "images.list")
    assert words in str(info.value)


# -- platforms and index filtering ------------------------------------------------------------


def test_parse_platform() -> None:
    assert parse_platform("linux/amd64") == Platform("linux", "amd64")
    assert str(parse_platform("linux/arm/v7")) == "linux/arm/v7"
    for bad in ("linux", "linux/", "/amd64", "linux/amd64/v8/x", "Linux/AMD64", "linux amd64"):
        with pytest.raises(ValueError, match="os/arch"):
            parse_platform(bad)


def test_platform_covers() -> None:
    arm64, arm64_v8 = Platform("linux", "arm64"), Platform("linux", "arm64", "v8")
    assert arm64.covers(arm64_v8) and arm64_v8.covers(arm64)  # arm64 means v8
    assert Platform("linux", "arm").covers(Platform("linux", "arm", "v6"))  # no variant asked: all
    assert not Platform("linux", "arm", "v7").covers(Platform("linux", "arm", "v6"))
    assert not Platform("linux", "amd64").covers(Platform("windows", "amd64"))


def _desc(n: int, os_: str, arch: str, variant: str = "", **annotations: str) -> dict[str, Any]:
    plat = {"os": os_, "architecture": arch, **({"variant": variant} if variant else {})}
    d: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": f"sha256:{n:064x}", "size": 100 + n, "platform": plat}
    return {**d, "annotations": annotations} if annotations else d


INDEX = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
    _desc(1, "linux", "amd64"), _desc(2, "linux", "arm64", "v8"), _desc(3, "linux", "arm", "v7"),
    _desc(4, "unknown", "unknown", **{"vnd.docker.reference.type": "attestation-manifest",
                                      "vnd.docker.reference.digest": f"sha256:{1:064x}"}),
    _desc(5, "unknown", "unknown", **{"vnd.docker.reference.type": "attestation-manifest",
                                      "vnd.docker.reference.digest": f"sha256:{2:064x}"}),
], "annotations": {"org.opencontainers.image.created": "2024-01-01"}}


def test_filter_index_keeps_the_platform_and_its_attestation() -> None:
    body = json.dumps(INDEX).encode()
    slim = filter_index(body, [Platform("linux", "amd64")])
    assert slim is not None
    doc = json.loads(slim)
    assert [m["digest"][-1] for m in doc["manifests"]] == ["1", "4"]
    assert doc["annotations"] == INDEX["annotations"] and doc["mediaType"] == OCI_INDEX


def test_filter_index_several_platforms_and_no_change() -> None:
    body = json.dumps(INDEX).encode()
    slim = filter_index(body, [Platform("linux", "arm64"), Platform("linux", "arm")])
    assert slim is not None
    assert [m["digest"][-1] for m in json.loads(slim)["manifests"]] == ["2", "3", "5"]
    every = [Platform("linux", "amd64"), Platform("linux", "arm64"), Platform("linux", "arm")]
    assert filter_index(body, every) is None  # nothing dropped: upstream's bytes and digest stay


def test_filter_index_without_the_platform_names_what_it_has() -> None:
    with pytest.raises(ValueError, match=r"no manifest for linux/s390x \(it has: linux/amd64, linux/arm/v7, "
                                         r"linux/arm64/v8\)"):
        filter_index(json.dumps(INDEX).encode(), [Platform("linux", "s390x")])


def test_docker_manifest_list_filters_too() -> None:
    doc = {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {**_desc(1, "linux", "amd64"), "mediaType": DOCKER_MANIFEST},
        {**_desc(2, "linux", "arm64"), "mediaType": DOCKER_MANIFEST}]}
    slim = filter_index(json.dumps(doc).encode(), [Platform("linux", "arm64")])
    assert slim is not None and json.loads(slim)["mediaType"] == DOCKER_LIST


def test_media_type_of() -> None:
    assert media_type_of(b'{"schemaVersion":2,"mediaType":"%s"}' % DOCKER_MANIFEST.encode()) == DOCKER_MANIFEST
    assert media_type_of(b'{"schemaVersion":2,"config":{},"layers":[]}', OCI_MANIFEST + "; charset=utf-8") \
        == OCI_MANIFEST
    assert media_type_of(b'{"schemaVersion":2,"manifests":[]}') == OCI_INDEX
    with pytest.raises(ValueError, match="schema 1"):
        media_type_of(b'{"schemaVersion":1,"fsLayers":[]}')
    with pytest.raises(ValueError, match="unsupported manifest media type"):
        media_type_of(b'{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.config.v1+json"}')


def test_descriptor_validation() -> None:
    assert descriptor(_desc(1, "linux", "amd64")).platform == Platform("linux", "amd64")
    for bad in ({"mediaType": OCI_MANIFEST, "digest": "sha512:" + "a" * 128, "size": 1},
                {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": -1},
                {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": True}):
        with pytest.raises(ValueError, match=r"digest|size"):
            descriptor(bad)


# -- auth -------------------------------------------------------------------------------------


def test_parse_docker_hub_challenge() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/busybox:pull"')
    c = auth.parse_challenge(header)
    assert c == auth.Challenge("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                                          "scope": "repository:library/busybox:pull"})
    assert auth.token_url(c, "ignored") == ("https://auth.docker.io/token?service=registry.docker.io&"
                                            "scope=repository%3Alibrary%2Fbusybox%3Apull")


def test_parse_challenge_quoting_and_schemes() -> None:
    c = auth.parse_challenge('bearer  realm = "https://q.io/t?a=1", scope="repository:a/b:pull,push",'
                             'error="insufficient_scope",note="say \\"hi\\""')
    assert c is not None and c.scheme == "bearer"
    assert c.params["scope"] == "repository:a/b:pull,push" and c.params["note"] == 'say "hi"'
    assert auth.token_url(c, "x").startswith("https://q.io/t?a=1&scope=")  # the realm's own query kept
    basic = auth.parse_challenge('Basic realm="Registry Realm"')
    assert basic == auth.Challenge("basic", {"realm": "Registry Realm"})
    assert auth.parse_challenge("") is None
    ping = auth.parse_challenge('Bearer realm="https://ghcr.io/token",service="ghcr.io"')
    assert ping is not None and "scope=repository%3Aorg%2Fimg%3Apull" in auth.token_url(ping, "org/img")
    with pytest.raises(ValueError, match="realm"):
        auth.token_url(auth.Challenge("bearer", {"realm": "/relative"}), "x")


def test_token_from() -> None:
    assert auth.token_from(b'{"token":"a","access_token":"a"}') == "a"
    assert auth.token_from(b'{"access_token":"b"}') == "b"
    for bad in (b"{}", b"not json", b'{"token": 5}'):
        with pytest.raises(ValueError, match="no token"):
            auth.token_from(bad)


def test_docker_config_auths() -> None:
    hub = base64.b64encode(b"me:s3cret:with:colons").decode()
    text = json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": hub},
                                 "quay.io": {"username": "robot", "password": "pw"},
                                 "https://mirror.corp:5000": {"auth": base64.b64encode(b"m:p").decode()},
                                 "empty.io": {}},
                       "credsStore": "desktop"})
    auths = auth.parse_docker_auths(text, "config.json")
    hub_creds = auth.credentials_for(auths, "registry-1.docker.io")
    assert hub_creds == auth.Credentials("me", Secret("s3cret:with:colons"))
    assert auth.credentials_for(auths, "quay.io") == auth.Credentials("robot", Secret("pw"))
    assert auth.credentials_for(auths, "mirror.corp:5000") is not None
    assert auth.credentials_for(auths, "empty.io") is None
    assert "s3cret" not in repr(hub_creds)
    with pytest.raises(UsageError, match=r"config\.json: not valid JSON"):
        auth.parse_docker_auths("{", "config.json")


# -- sources ----------------------------------------------------------------------------------


def test_default_endpoints() -> None:
    assert endpoint_for("docker.io", {}) == Endpoint("https", "registry-1.docker.io")
    assert endpoint_for("registry.k8s.io", {}) == Endpoint("https", "registry.k8s.io")
    assert endpoint_for("localhost:5000", {}) == Endpoint("http", "localhost:5000")
    assert endpoint_for("127.0.0.9:5000", {}) == Endpoint("http", "127.0.0.9:5000")
    assert endpoint_for("[::1]:5000", {}) == Endpoint("http", "[::1]:5000")
    assert endpoint_for("10.0.0.1:5000", {}).scheme == "https"


def test_sources_replace_upstreams() -> None:
    sources = parse_sources({"docker.io": "https://harbor.corp/dockerhub/", "index.docker.io": "https://harbor.corp",
                             "registry.k8s.io": "http://127.0.0.1:5055"})
    assert set(sources) == {"docker.io", "registry.k8s.io"}  # Hub's names are one registry
    assert endpoint_for("registry.k8s.io", sources) == Endpoint("http", "127.0.0.1:5055")
    prefixed = parse_sources({"docker.io": "https://harbor.corp/dockerhub/"})["docker.io"]
    assert prefixed.repository("library/busybox") == "dockerhub/library/busybox"
    assert prefixed.url("dockerhub/library/busybox", "blobs", "sha256:x") == \
        "https://harbor.corp/v2/dockerhub/library/busybox/blobs/sha256:x"
    assert parse_source_option("quay.io=https://q.mirror:8443") == ("quay.io", Endpoint("https", "q.mirror:8443"))


@pytest.mark.parametrize(("raw", "words"), [
    ({"docker.io": "ftp://x"}, "bundle.sources.docker.io: invalid URL 'ftp://x'"),
    ({"docker.io": "https://u:p@mirror"}, "credentials do not belong in the URL"),
    ({"docker.io": "https://mirror/v2/"}, "leave out /v2"),
    ({"docker.io": "https://mirror:99999"}, "invalid URL"),
    ({"docker.io": "https://mirror/Upper"}, "not a repository prefix"),
    ({"docker.io": 5}, "expected a URL"),
    ({"not a host": "https://mirror"}, "is not a registry host"),
])
def test_bad_sources(raw: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError, match=r"bundle\.sources") as info:
        parse_sources(raw)
    assert words in str(info.value)
    with pytest.raises(ValueError, match="HOST=URL"):
        parse_source_option("docker.io")


# -- the bundle file --------------------------------------------------------------------------


def test_index_document() -> None:
    top = Descriptor(OCI_INDEX, sha256_digest(b"new"), 3)
    doc = json.loads(index_document([
        IndexEntry("registry.k8s.io/pause:3.9", top, sha256_digest(b"old"), ("linux/amd64", "linux/arm64")),
        IndexEntry("docker.io/library/busybox:1.36", Descriptor(DOCKER_MANIFEST, sha256_digest(b"m"), 1))]))
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_INDEX
    first, second = doc["manifests"]
    assert first == {"mediaType": OCI_INDEX, "digest": top.digest, "size": 3, "annotations": {
        "org.opencontainers.image.ref.name": "registry.k8s.io/pause:3.9",
        "io.containerd.image.name": "registry.k8s.io/pause:3.9",
        "io.nodecfg.bundle.original-digest": sha256_digest(b"old"),
        "io.nodecfg.bundle.platforms": "linux/amd64,linux/arm64"}}
    assert "io.nodecfg.bundle.original-digest" not in second["annotations"]
    back = entry_from(descriptor(first))
    assert back.original_digest == sha256_digest(b"old") and back.platforms == ("linux/amd64", "linux/arm64")


def _image(work: WorkDir) -> tuple[IndexEntry, list[Descriptor]]:
    config = json.dumps({"os": "linux", "architecture": "arm64", "variant": "v8"}).encode()
    layers = [b"layer one" * 1000, b"layer two"]
    for blob in (config, *layers):
        work.put(blob)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha256_digest(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": sha256_digest(x), "size": len(x)} for x in layers]}).encode()
    work.put(manifest)
    top = Descriptor(OCI_MANIFEST, sha256_digest(manifest), len(manifest))
    blobs = [top, *(Descriptor("x", sha256_digest(b), len(b)) for b in (config, *layers))]
    return IndexEntry("quay.io/org/app:1", top), blobs


def _write(tmp_path: Path, name: str) -> tuple[Path, list[Descriptor]]:
    work = WorkDir(tmp_path / f"{name}.partial")
    entry, blobs = _image(work)
    out = tmp_path / name
    write_bundle(out, work, index_document([entry]), blobs)
    work.remove()
    return out, blobs


def test_bundle_round_trip_is_deterministic(tmp_path: Path) -> None:
    out, blobs = _write(tmp_path, "a.tar")
    again, _ = _write(tmp_path, "b.tar")
    assert out.read_bytes() == again.read_bytes()
    assert not (tmp_path / "a.tar.partial").exists()
    result = verify_bundle(out)
    assert (result.images, result.blobs, result.blob_bytes) == (1, 4, sum(b.size for b in blobs))
    info = inspect_bundle(out)
    assert [i.platforms for i in info.images] == [("linux/arm64/v8",)]
    assert info.images[0].size == sum(b.size for b in blobs)


def test_verify_names_a_corrupt_layer(tmp_path: Path) -> None:
    out, blobs = _write(tmp_path, "a.tar")
    data = bytearray(out.read_bytes())
    at = data.index(b"layer one")
    data[at] ^= 1
    out.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"blob {blobs[2].digest} \(layer of quay.io/org/app:1\) is corrupt"):
        verify_bundle(out)


def test_work_dir_is_locked(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "x.partial")
    with pytest.raises(UsageError, match="another `nodecfg bundle create`"):
        WorkDir(tmp_path / "x.partial")
    work.close()
    WorkDir(tmp_path / "x.partial").close()


# -- the client against a fake registry -------------------------------------------------------


@dataclass
class Fake:
    """A registry on 127.0.0.1 whose answers the test scripts: path -> handler(request) -> reply."""

    routes: dict[str, Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]] = field(
        default_factory=dict)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("http", self.netloc)


@pytest.fixture
def fakes() -> Iterator[Callable[[], Fake]]:
    servers: list[ThreadingHTTPServer] = []

    def start() -> Fake:
        fake = Fake()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *_a: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                fake.seen.append((self.path, dict(self.headers.items())))
                status, headers, body = fake.routes.get(path, lambda _h: (404, {}, b'{"errors":[{"code":'
                                                                                    b'"MANIFEST_UNKNOWN"}]}'))(self)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if len(body) < int(headers.get("Content-Length", len(body))):
                    self.close_connection = True  # the connection drops mid-body

            def do_CONNECT(self) -> None:  # as a proxy: tunnels refused
                fake.seen.append((f"CONNECT {self.path}", dict(self.headers.items())))
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        fake.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(server)
        return fake

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": {}, "layers": []}).encode()


def _bearer(fake: Fake, repo: str, path: str, reply: tuple[int, dict[str, str], bytes]
            ) -> Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]:
    def handle(h: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if h.headers.get("Authorization") != "Bearer T0K":
            challenge = (f'Bearer realm="http://{fake.netloc}/token",service="fake",'
                         f'scope="repository:{repo}:pull"')
            return 401, {"WWW-Authenticate": challenge}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'
        return reply
    fake.routes[path] = handle
    return handle


def test_bearer_token_flow(fakes: Callable[[], Fake], tmp_path: Path) -> None:
    fake = fakes()
    blob = b"blob bytes" * 100
    _bearer(fake, "library/app", "/v2/library/app/manifests/1", (200, {"Content-Type": DOCKER_MANIFEST}, MANIFEST))
    _bearer(fake, "library/app", f"/v2/library/app/blobs/{sha256_digest(blob)}", (200, {}, blob))
    fake.routes["/token"] = lambda _h: (200, {"Content-Type": "application/json"}, b'{"access_token":"T0K"}')
    client = RegistryClient(auths=dict)
    m = client.get_manifest(fake.endpoint, "library/app", "1", what="app")
    assert (m.media_type, m.body) == (DOCKER_MANIFEST, MANIFEST)
    dest = tmp_path / "blob"
    client.fetch_blob(fake.endpoint, "library/app", Descriptor("x", sha256_digest(blob), len(blob)), dest,
                      lambda _n: None, what="blob")
    assert dest.read_bytes() == blob
    tokens = [parse_qs(urlsplit(p).query) for p, _ in fake.seen if p.startswith("/token")]
    assert tokens == [{"service": ["fake"], "scope": ["repository:library/app:pull"]}]  # one token, reused
    paths = [urlsplit(p).path.rpartition("/")[2] for p, _ in fake.seen]
    assert paths == ["1", "token", "1", sha256_digest(blob)]  # the blob went with the cached token at once
    assert fake.seen[-1][1]["Authorization"] == "Bearer T0K"


def test_basic_credentials_go_to_the_token_server(fakes: Callable[[], Fake]) -> None:
    fake = fakes()
    _bearer(fake, "org/app", "/v2/org/app/manifests/1", (200, {}, MANIFEST))
    basic = "Basic " + base64.b64encode(b"me:pw").decode()
    fake.routes["/token"] = lambda h: ((200, {}, b'{"token":"T0K"}') if h.headers.get("Authorization") == basic
                                       else (401, {}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'))
    creds = {fake.netloc: auth.Credentials("me", Secret("pw"))}
    RegistryClient(auths=lambda: creds).get_manifest(fake.endpoint, "org/app", "1", what="app")
    with pytest.raises(FetchError, match=r"token server 127.0.0.1:\d+ refused an anonymous token \(HTTP 401: "
                                         r"UNAUTHORIZED\)"):
        RegistryClient(auths=dict).get_manifest(fake.endpoint, "org/app", "1", what="app")


def test_basic_challenge(fakes: Callable[[], Fake]) -> None:
    fake = fakes()
    basic = "Basic " + base64.b64encode(b"me:pw").decode()
    fake.routes["/v2/app/manifests/1"] = lambda h: ((200, {}, MANIFEST) if h.headers.get("Authorization") == basic
                                                    else (401, {"WWW-Authenticate": 'Basic realm="r"'}, b""))
    creds = {fake.netloc: auth.Credentials("me", Secret("pw"))}
    assert RegistryClient(auths=lambda: creds).get_manifest(fake.endpoint, "app", "1", what="app").body == MANIFEST
    with pytest.raises(FetchError, match=r"asks for a login.*docker login 127\.0\.0\.1"):
        RegistryClient(auths=dict).get_manifest(fake.endpoint, "app", "1", what="app")


def test_redirect_never_carries_authorization_elsewhere(fakes: Callable[[], Fake], tmp_path: Path) -> None:
    registry, cdn = fakes(), fakes()
    blob = b"layer" * 1000
    path = f"/v2/app/blobs/{sha256_digest(blob)}"
    _bearer(registry, "app", path, (307, {"Location": f"http://{cdn.netloc}/signed?x=1"}, b""))
    registry.routes["/token"] = lambda _h: (200, {}, b'{"token":"T0K"}')
    cdn.routes["/signed"] = lambda _h: (200, {}, blob)
    RegistryClient(auths=dict).fetch_blob(registry.endpoint, "app", Descriptor("x", sha256_digest(blob), len(blob)),
                                          tmp_path / "b", lambda _n: None, what="blob")
    assert (tmp_path / "b").read_bytes() == blob
    assert [p for p, _ in cdn.seen] == ["/signed?x=1"]
    assert "Authorization" not in cdn.seen[0][1]


def _ranged(blob: bytes) -> Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]:
    def handle(h: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        spec = h.headers.get("Range", "")
        if spec.startswith("bytes="):
            start = int(spec[6:].rstrip("-"))
            return 206, {"Content-Range": f"bytes {start}-{len(blob) - 1}/{len(blob)}"}, blob[start:]
        return 200, {}, blob
    return handle


def test_blob_resumes_from_its_part_file(fakes: Callable[[], Fake], tmp_path: Path) -> None:
    fake = fakes()
    blob = bytes(range(256)) * 400
    desc = Descriptor("x", sha256_digest(blob), len(blob))
    fake.routes[f"/v2/app/blobs/{desc.digest}"] = _ranged(blob)
    dest = tmp_path / "blob"
    (tmp_path / "blob.part").write_bytes(blob[:40000])
    progress: list[int] = []
    fetched = RegistryClient(auths=dict).fetch_blob(fake.endpoint, "app", desc, dest, progress.append, what="b")
    assert dest.read_bytes() == blob and not (tmp_path / "blob.part").exists()
    assert fetched == len(blob) - 40000 and sum(progress) == len(blob)
    assert fake.seen[0][1]["Range"] == "bytes=40000-"


def test_dropped_connection_resumes_in_the_same_run(fakes: Callable[[], Fake], tmp_path: Path) -> None:
    fake = fakes()
    blob = bytes(range(256)) * 400
    desc = Descriptor("x", sha256_digest(blob), len(blob))
    ranged, calls = _ranged(blob), []

    def flaky(h: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        calls.append(h.headers.get("Range"))
        if len(calls) == 1:
            return 200, {"Content-Length": str(len(blob))}, blob[:30000]
        return ranged(h)

    fake.routes[f"/v2/app/blobs/{desc.digest}"] = flaky
    dest = tmp_path / "blob"
    fetched = RegistryClient(auths=dict).fetch_blob(fake.endpoint, "app", desc, dest, lambda _n: None, what="b")
    assert dest.read_bytes() == blob
    assert calls == [None, "bytes=30000-"] and fetched == len(blob)  # 30000 bytes, then the rest


def test_blob_that_does_not_match_its_digest(fakes: Callable[[], Fake], tmp_path: Path) -> None:
    fake = fakes()
    blob = b"the real bytes"
    desc = Descriptor("x", sha256_digest(blob), len(blob))
    fake.routes[f"/v2/app/blobs/{desc.digest}"] = lambda _h: (200, {}, b"the fake bytes")
    with pytest.raises(FetchError, match=f"blob {desc.digest} from http://127.0.0.1:.* does not match its digest"):
        RegistryClient(auths=dict).fetch_blob(fake.endpoint, "app", desc, tmp_path / "b", lambda _n: None, what="b")
    assert list(tmp_path.iterdir()) == []


def test_manifest_errors(fakes: Callable[[], Fake]) -> None:
    fake = fakes()
    client = RegistryClient(auths=dict)
    with pytest.raises(FetchError, match=r"app:9: not found at http://127.0.0.1:\d+ \(HTTP 404: MANIFEST_UNKNOWN\)"):
        client.get_manifest(fake.endpoint, "app", "9", what="app:9")
    wrong = "sha256:" + "0" * 64
    fake.routes[f"/v2/app/manifests/{wrong}"] = lambda _h: (200, {}, MANIFEST)
    with pytest.raises(FetchError, match="served a manifest whose digest is"):
        client.get_manifest(fake.endpoint, "app", wrong, what="app")
    fake.routes["/v2/app/manifests/old"] = lambda _h: (200, {}, b'{"schemaVersion":1}')
    with pytest.raises(FetchError, match="schema 1"):
        client.get_manifest(fake.endpoint, "app", "old", what="app")
    fake.routes["/v2/app/manifests/limited"] = lambda _h: (429, {}, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}')
    with pytest.raises(FetchError, match="rate-limiting"):
        client.get_manifest(fake.endpoint, "app", "limited", what="app")


def test_redirect_to_a_registry_that_challenges_again(fakes: Callable[[], Fake]) -> None:
    """registry.k8s.io answers with a 307 to a regional registry, which wants its own token."""
    front, regional = fakes(), fakes()
    front.routes["/v2/pause/manifests/3.9"] = lambda _h: (
        307, {"Location": f"http://{regional.netloc}/v2/k8s-artifacts-prod/images/pause/manifests/3.9"}, b"")
    _bearer(regional, "k8s-artifacts-prod/images/pause", "/v2/k8s-artifacts-prod/images/pause/manifests/3.9",
            (200, {}, MANIFEST))
    regional.routes["/token"] = lambda _h: (200, {}, b'{"token":"T0K"}')
    client = RegistryClient(auths=dict)
    for _ in range(2):
        assert client.get_manifest(front.endpoint, "pause", "3.9", what="pause").body == MANIFEST
    assert all("Authorization" not in headers for _, headers in front.seen)
    tokens = [parse_qs(urlsplit(p).query)["scope"] for p, _ in regional.seen if p.startswith("/token")]
    assert tokens == [["repository:k8s-artifacts-prod/images/pause:pull"]]  # asked once, then cached


# -- proxies, timeouts, abort ------------------------------------------------------------------


@pytest.mark.parametrize(("env", "scheme", "netloc", "proxy"), [
    ({}, "https", "registry-1.docker.io", None),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "https", "registry-1.docker.io", "proxy:3128"),
    ({"https_proxy": "proxy:3128"}, "https", "quay.io", "proxy:3128"),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "http", "mirror:5000", None),  # only https goes there
    ({"HTTP_PROXY": "http://proxy"}, "http", "mirror:5000", "proxy:80"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "quay.io,.corp"}, "https", "quay.io", None),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "quay.io,.corp"}, "https", "reg.corp:443", None),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "quay.io,.corp"}, "https", "ghcr.io", "proxy:3128"),
    ({"HTTP_PROXY": "http://proxy:3128"}, "http", "127.0.0.1:5000", None),  # loopback: never
    ({"HTTP_PROXY": "http://proxy:3128"}, "http", "localhost:5000", None),
    ({"HTTP_PROXY": "http://proxy:3128"}, "http", "[::1]:5000", None),
])
def test_proxy_for(env: dict[str, str], scheme: str, netloc: str, proxy: str | None,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = proxy_for(scheme, netloc)
    assert (found[0] if found else None) == proxy


def test_through_an_http_proxy_with_its_credentials(fakes: Callable[[], Fake], monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = fakes()  # answers the absolute URL it is asked for, as a forwarding proxy would
    proxy.routes["/v2/app/manifests/1"] = lambda _h: (200, {}, MANIFEST)
    monkeypatch.setenv("HTTP_PROXY", f"http://me:p%40ss@{proxy.netloc}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    got = RegistryClient(auths=dict).get_manifest(Endpoint("http", "mirror.corp:5000"), "app", "1", what="app")
    assert got.body == MANIFEST
    path, headers = proxy.seen[0]
    assert path == "http://mirror.corp:5000/v2/app/manifests/1"
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"me:p@ss").decode()


def test_https_goes_through_the_proxy_tunnel(fakes: Callable[[], Fake], monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = fakes()
    monkeypatch.setenv("HTTPS_PROXY", f"http://me:pw@{proxy.netloc}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(FetchError, match=rf"^app: cannot reach https://registry.corp through the proxy "
                                         rf"{proxy.netloc}: Tunnel connection failed: 403 Forbidden$"):
        RegistryClient(auths=dict).get_manifest(Endpoint("https", "registry.corp"), "app", "1", what="app")
    path, headers = proxy.seen[0]
    assert path == "CONNECT registry.corp:443"
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"me:pw").decode()


def test_loopback_is_never_proxied(fakes: Callable[[], Fake], monkeypatch: pytest.MonkeyPatch) -> None:
    registry, proxy = fakes(), fakes()
    registry.routes["/v2/app/manifests/1"] = lambda _h: (200, {}, MANIFEST)
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.netloc}")
    assert RegistryClient(auths=dict).get_manifest(registry.endpoint, "app", "1", what="app").body == MANIFEST
    assert proxy.seen == [] and len(registry.seen) == 1


class _Silent:
    """A TCP server on 127.0.0.1 that accepts, reads the request, then answers what it is told
    (headers and part of a body, or nothing) and holds the connection until released."""

    def __init__(self, answer: bytes) -> None:
        self.answer, self.accepted, self.release = answer, 0, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(self.answer)
            self.release.wait(20)

    def close(self) -> None:
        self.release.set()
        self.sock.close()


def test_an_unanswered_request_times_out() -> None:
    server = _Silent(b"")
    try:
        started = time.monotonic()
        with pytest.raises(FetchError, match=rf"^app: cannot reach http://127.0.0.1:{server.port}: timed out$"):
            RegistryClient(auths=dict, timeout=0.3).get_manifest(Endpoint("http", f"127.0.0.1:{server.port}"),
                                                                 "app", "1", what="app")
        assert server.accepted == 1 and time.monotonic() - started < 5  # a fresh connection: not tried again
    finally:
        server.close()


def test_a_keep_alive_connection_the_server_closed_is_reopened_once() -> None:
    """The server answers one request per connection, then closes it without saying so."""
    server = _Silent(f"HTTP/1.1 200 OK\r\nContent-Length: {len(MANIFEST)}\r\n\r\n".encode() + MANIFEST)
    server.release.set()  # close each connection after its answer
    try:
        client = RegistryClient(auths=dict)
        ep = Endpoint("http", f"127.0.0.1:{server.port}")
        for _ in range(3):
            assert client.get_manifest(ep, "app", "1", what="app").body == MANIFEST
        assert server.accepted == 3
    finally:
        server.close()


def test_a_refused_connection_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed: nothing listens there
    with pytest.raises(FetchError, match=rf"^app: cannot reach http://127.0.0.1:{port}: Connection refused$"):
        RegistryClient(auths=dict).get_manifest(Endpoint("http", f"127.0.0.1:{port}"), "app", "1", what="app")


def test_abort_cuts_a_stalled_body_at_once(tmp_path: Path) -> None:
    size = 1 << 20
    server = _Silent(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode() + b"x" * 1000)
    client = RegistryClient(auths=dict)
    got: list[int] = []
    failed: list[BaseException] = []

    def fetch() -> None:
        try:
            client.fetch_blob(Endpoint("http", f"127.0.0.1:{server.port}"), "app",
                              Descriptor("x", "sha256:" + "0" * 64, size), tmp_path / "b", got.append, what="b")
        except FetchError as exc:
            failed.append(exc)

    try:
        worker = threading.Thread(target=fetch)
        worker.start()
        deadline = time.monotonic() + 10
        while sum(got) < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        client.abort()
        worker.join(10)
        assert not worker.is_alive() and time.monotonic() - started < 2
        assert [str(e) for e in failed] == ["b: interrupted"]
        assert (tmp_path / "b.part").stat().st_size == 1000  # kept for the next run
    finally:
        server.close()
        client.close()


# -- the CLI's edges --------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "words"), [
    (["bundle"], "choose an action: create, inspect, verify"),
    (["bundle", "create"], "the following arguments are required: -o/--output"),
    (["bundle", "create", "-o", "x.tar", "--platform", "amd64"], "--platform: expected os/arch"),
    (["bundle", "create", "-o", "x.tar", "--source", "docker.io"], "--source: expected HOST=URL"),
    (["bundle", "create", "-o", "x.tar", "--images-file", "/nonexistent/images.list"],
     "/nonexistent/images.list: images file not found"),
    (["bundle", "create", "-o", "/nonexistent/dir/x.tar", "--images-file", "__images__"], "does not exist"),
    (["bundle", "inspect", "/nonexistent.tar"], "/nonexistent.tar: no such bundle file"),
    (["bundle", "create", "-i", "/nonexistent/inv.yaml", "-o", "x.tar"], "inventory file not found"),
])
def test_bundle_usage_errors_are_one_line_exit_2(argv: list[str], words: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from nodecfg.cli import main

    images = tmp_path / "images.list"
    images.write_text("busybox:1.36\n")
    assert main([str(images) if a == "__images__" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
