"""An upstream stand-in for bundle tests, all on loopback: Debian's docker-registry (the real
distribution registry) fed through its HTTP API, and a small front proxy that answers like Docker
Hub (bearer-token challenge + token endpoint), logs every request and can stall a transfer."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REGISTRY_BIN = "/usr/bin/docker-registry"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
TOKEN = "standin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(files: dict[str, bytes]) -> bytes:
    """A gzipped tar layer, byte-for-byte reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


class Registry:
    """docker-registry serving a temp directory on 127.0.0.1:<free port>."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "data").mkdir(parents=True)
        config = root / "config.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                          f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
                          f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.log = (root / "registry.log").open("w")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"docker-registry did not start: {(root / 'registry.log').read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()

    def _call(self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
              ) -> http.client.HTTPResponse:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.netloc, timeout=10)
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers=headers or {})
        return conn.getresponse()

    def push_blob(self, repo: str, data: bytes) -> str:
        """POST an upload, then PUT the whole blob with its digest (a monolithic upload)."""
        resp = self._call("POST", f"{self.url}/v2/{repo}/blobs/uploads/")
        resp.read()
        assert resp.status == 202, resp.status
        location = resp.getheader("Location") or ""
        url = location if location.startswith("http") else self.url + location
        sep = "&" if "?" in url else "?"
        resp = self._call("PUT", f"{url}{sep}digest={digest(data)}", data,
                          {"Content-Type": "application/octet-stream"})
        resp.read()
        assert resp.status == 201, (resp.status, resp.reason)
        return digest(data)

    def push_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        resp = self._call("PUT", f"{self.url}/v2/{repo}/manifests/{reference}", body, {"Content-Type": media_type})
        text = resp.read()
        assert resp.status == 201, (resp.status, text)
        assert resp.getheader("Docker-Content-Digest") == digest(body)
        return digest(body)

    def manifest_digest(self, repo: str, reference: str) -> str:
        """What a client pulling by tag sees: HEAD with the usual Accept list."""
        resp = self._call("HEAD", f"{self.url}/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT})
        resp.read()
        assert resp.status == 200, resp.status
        return resp.getheader("Docker-Content-Digest") or ""


@dataclass
class Image:
    """One pushed image manifest (one platform)."""

    manifest: bytes
    media_type: str
    platform: tuple[str, str]
    blobs: dict[str, int]  # digest -> size (config, layers)

    @property
    def digest(self) -> str:
        return digest(self.manifest)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.manifest)}
        if self.platform[0]:
            d["platform"] = {"os": self.platform[0], "architecture": self.platform[1]}
        return {**d, **extra}


def push_image(reg: Registry, repo: str, platform: tuple[str, str], layers: list[bytes], *, oci: bool,
               tag: str | None = None, extra_config: dict[str, Any] | None = None) -> Image:
    config = json.dumps({"architecture": platform[1], "os": platform[0],
                         "rootfs": {"type": "layers", "diff_ids": [digest(gzip.decompress(x)) for x in layers]},
                         **(extra_config or {})}).encode()
    blobs = {reg.push_blob(repo, config): len(config)}
    for data in layers:
        blobs[reg.push_blob(repo, data)] = len(data)
    manifest_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    body = json.dumps({
        "schemaVersion": 2, "mediaType": manifest_type,
        "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "digest": digest(x), "size": len(x)}
                   for x in layers],
    }, indent=3).encode()
    reg.push_manifest(repo, tag or digest(body), body, manifest_type)
    return Image(body, manifest_type, platform, blobs)


def push_index(reg: Registry, repo: str, tag: str, children: list[dict[str, Any]], *, oci: bool) -> bytes:
    """Push an index (OCI) or manifest list (docker); returns its bytes."""
    media_type = OCI_INDEX if oci else DOCKER_LIST
    body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": children}, indent=3).encode()
    reg.push_manifest(repo, tag, body, media_type)
    return body


# -- the front: bearer tokens, a request log, stalls ----------------------------------------------


@dataclass
class Logged:
    path: str
    range: str
    status: int
    sent: int
    authorization: str


@dataclass
class Front:
    """A proxy to the registry that wants a bearer token like Docker Hub and logs requests."""

    upstream: str
    port: int = field(default_factory=free_port)
    log: list[Logged] = field(default_factory=list)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    stall_digest: str = ""  # a blob whose transfer stops after `stall_after` bytes
    stall_after: int = 1 << 20
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Front:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                front.handle(self)

            def do_HEAD(self) -> None:
                front.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def blob_gets(self, since: int = 0) -> list[Logged]:
        return [e for e in self.log[since:] if "/blobs/" in e.path]

    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        if parts.path == "/token":
            self.token_requests.append(parse_qs(parts.query))
            self._reply(h, 200, json.dumps({"token": TOKEN, "expires_in": 300}).encode(),
                        {"Content-Type": "application/json"})
            return
        authorization = h.headers.get("Authorization", "")
        if parts.path.startswith("/v2/") and authorization != f"Bearer {TOKEN}":
            repo = parts.path[4:].rsplit("/", 2)[0]
            challenge = (f'Bearer realm="{self.url}/token",service="standin",'
                         f'scope="repository:{repo}:pull"')
            self._reply(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                        {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
            self.log.append(Logged(parts.path, "", 401, 0, authorization))
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("accept", "range")}
        conn = http.client.HTTPConnection(urlsplit(self.upstream).netloc, timeout=30)
        conn.request(h.command, h.path, headers=headers)
        resp = conn.getresponse()
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "date", "server"):
                h.send_header(k, v)
        h.end_headers()
        entry = Logged(parts.path, h.headers.get("Range", ""), resp.status, 0, authorization)
        self.log.append(entry)
        stall = bool(self.stall_digest) and parts.path.endswith(self.stall_digest) and h.command == "GET"
        try:
            while chunk := resp.read(64 << 10):
                if stall and entry.sent + len(chunk) > self.stall_after:
                    chunk = chunk[: self.stall_after - entry.sent]
                    h.wfile.write(chunk)
                    h.wfile.flush()
                    entry.sent += len(chunk)
                    self.stalled.set()
                    self.release.wait(60)
                    h.close_connection = True
                    return
                h.wfile.write(chunk)
                entry.sent += len(chunk)
        except OSError:
            h.close_connection = True
        finally:
            conn.close()


def registry_available() -> bool:
    return shutil.which(REGISTRY_BIN) is not None
