"""smoke-test's reach probe over TLS (scripts/probe.sh under dash) against a real TLS server on
loopback, with the node's CA file: each client's own words become one named diagnosis."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nodecfg.images import parse_ref
from nodecfg.registry import tls
from nodecfg.smoke import SmokePlan, diagnose, probe_script

NOW = dt.datetime.now(dt.UTC)
CA, CA_KEY = tls.make_ca(NOW)


class _V2(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self.do_GET()

    def log_message(self, *_: object) -> None:
        return None


def _server(tmp: Path, names: tuple[str, ...], now: dt.datetime, plain: bool = False) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _V2)
    if not plain:
        cert, key = tls.make_server_cert(CA, CA_KEY, names, now)
        (tmp / "srv.crt").write_bytes(cert)
        (tmp / "srv.key").write_bytes(key)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tmp / "srv.crt", tmp / "srv.key")
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


CASES = {
    # id: (server names, server "now", plain HTTP server, the node's CA, expected check status, words)
    "good": (("127.0.0.1",), NOW, False, CA, "ok", "-> 200"),
    "wrong CA": (("127.0.0.1",), NOW, False, tls.make_ca(NOW)[0], "FAIL", "unknown authority"),
    "name mismatch": (("registry.test",), NOW, False, CA, "FAIL", "name mismatch"),
    "expired": (("127.0.0.1",), NOW - dt.timedelta(days=400), False, CA, "FAIL", "expired certificate"),
    "plain HTTP registry": (("127.0.0.1",), NOW, True, CA, "FAIL", "HTTPS spoken to an HTTP registry"),
}


@pytest.fixture(params=["curl", "wget", "python3"])
def tool_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = request.param
    for t in (tool, "timeout", "cat", "mktemp", "rm", "base64", "awk", "grep", "tail"):
        found = sys.executable if t == "python3" else shutil.which(t)
        assert found, t  # the test needs the real tool: fail, never skip
        (bin_dir / t).symlink_to(found)
    yield tool, bin_dir


@pytest.mark.parametrize("case", list(CASES))
def test_reach_over_tls_is_diagnosed_by_name(tmp_path: Path, tool_path: tuple[str, Path], case: str) -> None:
    names, now, plain, node_ca, status, words = CASES[case]
    tool, bin_dir = tool_path
    (tmp_path / "node-ca.crt").write_bytes(node_ca)
    server = _server(tmp_path, names, now, plain)
    ep = f"127.0.0.1:{server.server_address[1]}"
    plan = SmokePlan(ep, parse_ref("docker.io/library/busybox:1.36"), None, (), False, "https")
    script = probe_script(plan, None)
    args = list(script.args)
    cas = [i + 1 for i, a in enumerate(args) if a == "-C"]
    assert cas  # every runtime that trusts a CA through a file names it
    for i in cas:  # the node's CA files, here: one in the test's directory
        args[i] = str(tmp_path / "node-ca.crt")
    try:
        out = subprocess.run(["/bin/dash", "-c", script.program, "nodecfg", *args], capture_output=True,
                             text=True, check=False, env={"PATH": str(bin_dir)}, timeout=30).stdout
    finally:
        server.shutdown()
    check = diagnose(out, plan, "n")[0]
    assert check.name == "registry"
    assert (check.status, words in check.detail) == (status, True), (tool, out, check)
    if status == "ok":
        assert f"CA {tmp_path / 'node-ca.crt'}" in check.detail


def test_no_ca_on_the_node_is_named(tmp_path: Path) -> None:
    plan = SmokePlan("127.0.0.1:9", parse_ref("busybox:1.36"), None, (), False, "https")
    script = probe_script(plan, None)
    args = [str(tmp_path / "absent.crt") if prev == "-C" else a
            for prev, a in zip(("", *script.args), script.args, strict=False)]
    out = subprocess.run(["/bin/dash", "-c", script.program, "nodecfg", *args], capture_output=True, text=True,
                         check=False, env={"PATH": "/usr/bin:/bin"}, timeout=30).stdout
    check = diagnose(out, plan, "n")[0]
    assert check.status == "FAIL" and "holds no CA" in check.detail and "configure-nodes" in check.detail
