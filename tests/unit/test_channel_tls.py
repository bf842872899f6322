"""TLS over a socket-like object (nodecfg/push/channel_tls.py) against a real TLS HTTP server on loopback."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodecfg.push.channel_tls import TlsOverChannel, client_context
from nodecfg.registry import tls

NOW = dt.datetime.now(dt.UTC)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        del args

    def do_GET(self) -> None:
        body = b"x" * 300_000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        n = int(self.headers["Content-Length"])
        digest = hashlib.sha256(self.rfile.read(n)).hexdigest().encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(digest)))
        self.end_headers()
        self.wfile.write(digest)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, bytes]]:
    d: Path = tmp_path_factory.mktemp("tls")
    ca_pem, ca_key = tls.make_ca(NOW)
    cert, key = tls.make_server_cert(ca_pem, ca_key, ("registry.test", "127.0.0.1"), NOW)
    (d / "c.pem").write_bytes(cert)
    (d / "k.pem").write_bytes(key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "c.pem", d / "k.pem")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd.server_address[1], ca_pem
    httpd.shutdown()


def _conn(port: int, ca: bytes, name: str) -> http.client.HTTPConnection:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.sock = TlsOverChannel(raw, client_context(ca), name)  # type: ignore[assignment]
    return conn


def test_get_and_put_over_tls_keep_alive(server: tuple[int, bytes]) -> None:
    port, ca = server
    conn = _conn(port, ca, "registry.test")
    for _ in range(2):  # one connection, two requests each way
        conn.request("GET", "/v2/")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"x" * 300_000
        data = bytes(range(256)) * 20_000  # 5 MB
        conn.request("PUT", "/blob", body=data, headers={"Content-Length": str(len(data))})
        resp = conn.getresponse()
        assert resp.status == 201 and resp.read() == hashlib.sha256(data).hexdigest().encode()
    conn.close()


def test_wrong_ca_is_refused(server: tuple[int, bytes]) -> None:
    port, _ = server
    other = tls.make_ca(NOW)[0]
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _conn(port, other, "registry.test")


def test_wrong_name_is_refused(server: tuple[int, bytes]) -> None:
    port, ca = server
    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|match"):
        _conn(port, ca, "other.test")
