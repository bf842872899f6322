"""This machine's engine asked over its unix socket (nodecfg/push/dockerengine.py), against a real HTTP
server on a unix socket; the SDK client made only on first use."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from nodecfg.push import dockerengine

DOC = {"Id": "sha256:abc", "RootFS": {"Layers": ["sha256:l1"]}, "Size": 42}


class _Engine(BaseHTTPRequestHandler):
    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Engine.asked.append(self.path)
        found = self.path == "/images/registry.example:5000/lib/busybox:1.36/json"
        body = json.dumps(DOC if found else {"message": "No such image"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *_: object) -> None:
        return None


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "docker.sock"
    server = _Server(str(path), _Engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    yield path
    server.shutdown()
    server.server_close()


def test_inspect_over_the_socket(engine: Path) -> None:
    assert dockerengine.inspect_image("registry.example:5000/lib/busybox:1.36") == DOC
    assert dockerengine.inspect_image("nothere:1") is None
    assert _Engine.asked[-1] == "/images/nothere:1/json"


def test_another_engine_or_no_socket_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    with pytest.raises(dockerengine.EngineUnavailable):
        dockerengine.inspect_image("busybox:1.36")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'absent.sock'}")
    with pytest.raises(dockerengine.EngineUnavailable):
        dockerengine.inspect_image("busybox:1.36")
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setenv("DOCKER_CONTEXT", "remote")
    assert dockerengine.socket_path() is None
