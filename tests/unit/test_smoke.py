"""smoke-test diagnoses from raw probe output (a fixture table)."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nodecfg.credentials import Credentials
from nodecfg.images import parse_ref
from nodecfg.inventory import Secret
from nodecfg.smoke import SmokePlan, diagnose, probe_script

EP = "10.1.1.1:5000"
PLAN = SmokePlan(EP, parse_ref("docker.io/library/busybox:1.36"),
                 parse_ref("docker.io/library/busybox:1.36"), ("docker.io", "registry.k8s.io"), False)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# `containerd config dump` as 1.x writes it (double quotes) and as 2.x does (single quotes, version 3)
DUMP_1X = 'version = 2\n[plugins]\n  [plugins."io.containerd.grpc.v1.cri".registry]\n    config_path = "/etc/containerd/certs.d"\n'
DUMP_2X = "version = 3\n[plugins]\n  [plugins.'io.containerd.cri.v1.images'.registry]\n    config_path = '/etc/containerd/certs.d'\n"
DUMP_2X_UNSET = "version = 3\n[plugins]\n  [plugins.'io.containerd.cri.v1.images'.registry]\n    config_path = ''\n"

HEALTHY = [
    "unit.docker\tactive\tenabled",
    "unit.containerd\tactive\tenabled",
    "reach\tcurl\t0\t200",
    "docker.info\te30=",
    f"docker.pull\t0\t{b64(EP + '/library/busybox:1.36')}",
    f"docker.mirror\t0\t{b64('docker.io/library/busybox:1.36')}",
    f"containerd.dump\t{b64(DUMP_1X)}",
    "containerd.certs\t/etc/containerd/certs.d",
    "containerd.pull\t0\t" + b64("done"),
    "cri\tok\t",
]


def with_lines(*replace: str) -> str:
    keys = {r.split("\t")[0] for r in replace}
    kept = [ln for ln in HEALTHY
            if ln.split("\t")[0] not in keys]
    return "\n".join(kept + [r for r in replace if not r.endswith("\tDROP")])


CASES = [
    ("healthy", "\n".join(HEALTHY), {}, True),
    ("refused", with_lines("reach\tcurl\t7\t000"), {"registry": "connection refused"}, False),
    ("timeout", with_lines("reach\tcurl\t28\t000"), {"registry": "no answer within 5s"}, False),
    ("401-no-auth", with_lines("reach\tcurl\t0\t401"), {"registry": "inventory has no registry.auth"}, False),
    ("https-expected", with_lines(
        f"docker.pull\t1\t{b64('Error response from daemon: Get https://' + EP + '/v2/: http: server gave HTTP response to HTTPS client')}"),
     {"docker": "HTTP answered where HTTPS was expected"}, False),
    ("manifest-unknown", with_lines(
        f"docker.pull\t1\t{b64('Error response from daemon: manifest for x not found: manifest unknown: manifest unknown')}"),
     {"docker": "manifest unknown"}, False),
    # containerd tries the mirror (404), falls back to the upstream and reports the offline DNS error
    ("manifest-404-fallback", with_lines(
        "manifest\t404",
        f"containerd.pull\t1\t{b64('ctr: failed to resolve reference: lookup registry-1.docker.io: i/o timeout')}"),
     {"containerd": "manifest unknown: the registry at " + EP}, False),
    # auth on: the mirror says 401 to docker (no Docker Hub key), dockerd falls back to the Hub
    ("mirror-401-hub-fallback", with_lines(
        "reach\tcurl\t0\t401", "reach.auth\t200",
        f"docker.mirror\t1\t{b64('Error response from daemon: Get https://registry-1.docker.io/v2/: dial tcp: lookup registry-1.docker.io: connection refused')}"),
     {"docker mirror": "https://index.docker.io/v1/"}, False),
    ("unauthorized", with_lines(
        f"containerd.pull\t1\t{b64('ctr: failed to resolve reference: pulling from host ' + EP + ' failed with status code: 401 Unauthorized')}"),
     {"containerd": "401"}, False),
    ("no-hosts-toml", with_lines("containerd.pull\tnomirror\t"),
     {"containerd": "no mirror config for docker.io"}, False),
    ("no-docker-mirror", with_lines("docker.mirror\tnomirror\t"),
     {"docker mirror": "registry-mirrors does not list"}, False),
    ("config-path-missing", with_lines(f"containerd.dump\t{b64(DUMP_2X_UNSET)}"),
     {"config_path": "not in effect"}, False),
    ("containerd-2-dump", with_lines(f"containerd.dump\t{b64(DUMP_2X)}"), {}, True),
    ("containerd-silent", with_lines("containerd.dump\t"), {"config_path": "does not answer"}, False),
    # a node without curl and wget: python3 or bash speak HTTP; with none of them, not checked
    ("python3-200", with_lines("reach\tpython3\t0\t200"), {}, True),
    ("bash-200", with_lines("reach\tbash\t0\t200"), {}, True),
    ("bash-refused", with_lines("reach\tbash\t7\t000"), {"registry": "connection refused"}, False),
    ("no-http-tool", with_lines("reach\tnone\t\t"), {}, True),
    ("cri-ignores-config-path", with_lines(
        f"cri\tfail\t{b64('failed to resolve reference registry.k8s.io/pause:3.9: dial tcp: lookup registry.k8s.io: no such host')}"),
     {"cri": "config_path not honoured by the CRI image service"}, False),
    ("cri-ignores-config-path-list", with_lines(
        f"containerd.dump\t{b64(DUMP_2X.replace('/etc/containerd/certs.d', '/etc/containerd/certs.d:/etc/docker/certs.d'))}",
        f"cri\tfail\t{b64('failed to resolve image: lookup registry-1.docker.io: connection refused')}"),
     {"cri": "is a list, which containerd 2's transfer service does not split"}, False),
    ("cri-manifest-unknown", with_lines(
        "manifest\t404", "containerd.pull\t1\t" + b64("not found"),
        f"cri\tfail\t{b64('failed to resolve reference: not found')}"),
     {"cri": "manifest unknown"}, False),
    ("cri-not-checked", with_lines(f"cri\tnot checked\t{b64('no way to reach the CRI socket')}"), {}, True),
    ("docker-masked", "\n".join([ln for ln in HEALTHY if not ln.startswith("docker")
                                 and ln != "unit.docker\tactive\tenabled"] +
                                ["unit.docker\tinactive\tmasked"]),
     {}, True),
    ("docker-down", "\n".join([ln for ln in HEALTHY if not ln.startswith("docker")
                               and ln != "unit.docker\tactive\tenabled"] +
                              ["unit.docker\tfailed\tenabled"]),
     {"docker": "runtime down"}, False),
]


@pytest.mark.parametrize(("output", "expected", "passes"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_diagnose(output: str, expected: dict[str, str], passes: bool) -> None:
    checks = {c.name: c for c in diagnose(output, PLAN, "node1 (10.1.1.2)")}
    failed = {n for n, c in checks.items() if c.status == "FAIL"}
    assert (not failed) == passes, checks
    for name, words in expected.items():
        assert checks[name].status == "FAIL"
        assert words in checks[name].detail, checks[name].detail
    if passes and "docker" in checks and checks["docker"].status == "skip":
        assert checks["docker"].detail == "masked"


def test_unreachable_names_node() -> None:
    checks = diagnose(with_lines("reach\tcurl\t7\t000"), PLAN, "node1 (10.1.1.2)")
    assert "from node1 (10.1.1.2)" in checks[0].detail


def test_probe_script_is_valid_shell_and_keeps_secret_encoded() -> None:
    script = probe_script(PLAN, Credentials("puller", Secret("pw-123")))
    assert subprocess.run(["sh", "-n"], input=script.program, text=True, check=False).returncode == 0
    # the credentials travel on stdin, base64-encoded, decoded into a 0600 file: never in the command
    assert "pw-123" not in script.command() and b"pw-123" not in script.stdin
    assert base64.b64decode(script.stdin) == b'user = "puller:pw-123"\n'
    assert probe_script(PLAN, None).stdin == b""
    # a mirror pull is only attempted when the node's config names the registry
    assert "nomirror" in script.program
    args = script.args
    assert args[args.index("-i") + 1] == f"{EP}/library/busybox:1.36"
    assert args[args.index("-h") + 1] == "docker.io/library/busybox:1.36"


def test_no_http_tool_is_not_a_failure() -> None:
    checks = {c.name: c for c in diagnose(with_lines("reach\tnone\t\t"), PLAN, "n")}
    assert checks["registry"].status == "skip"
    assert "not checked" in checks["registry"].detail


class _V2(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401 if self.path == "/v2/" else 404)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


@pytest.mark.parametrize("tools", [("python3", "bash"), ("bash",), ()])
def test_reach_probe_without_curl_or_wget(tmp_path: Path, tools: tuple[str, ...]) -> None:
    """Under dash (Debian's sh), with only `tools` on PATH: python3 or bash speak HTTP to a real
    server on loopback and report its status; with neither, `none`. Never a false failure."""
    import shutil

    server = ThreadingHTTPServer(("127.0.0.1", 0), _V2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = str(server.server_address[1])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (*tools, "timeout", "cat", "mktemp", "rm", "base64", "awk"):
        found = sys.executable if tool == "python3" else shutil.which(tool)  # not pyenv's shim
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    plan = SmokePlan(f"127.0.0.1:{port}", parse_ref("docker.io/library/busybox:1.36"), None, (), False)
    script = probe_script(plan, None)
    try:
        out = subprocess.run(["/bin/dash", "-c", script.program, "nodecfg", *script.args], capture_output=True,
                             text=True, check=False, env={"PATH": str(bin_dir)}, timeout=30).stdout
    finally:
        server.shutdown()
    expected = f"reach\t{tools[0]}\t0\t401" if tools else "reach\tnone\t\t"
    assert [ln for ln in out.splitlines() if ln.startswith("reach")] == [expected], out
