"""nodecfg.cri without a node: the hand-made protobuf, the stream-local CHANNEL_OPEN, the bridge."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paramiko import Message

from nodecfg import cri
from nodecfg.cri.tunnel import BRIDGE, Tunnel, bridge_command, streamlocal_open_message
from nodecfg.cri.wire import (
    CriImage,
    decode_fields,
    decode_image_status_response,
    decode_list_images_response,
    decode_pull_image_response,
    decode_varint,
    encode_bytes,
    encode_string,
    encode_varint,
    image_status_request,
    pull_image_request,
    remove_image_request,
)

PAUSE = "registry.k8s.io/pause:3.9"
# PullImageRequest{image: ImageSpec{image: PAUSE}}: field 1 LEN 27 { field 1 LEN 25 "registry.k8s.io/pause:3.9" }
PAUSE_PULL = b"\x0a\x1b\x0a\x19registry.k8s.io/pause:3.9"


@pytest.mark.parametrize(("value", "wire"), [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
    (2**32, b"\x80\x80\x80\x80\x10"), (-1, b"\xff" * 9 + b"\x01"),
])
def test_varint_known_bytes(value: int, wire: bytes) -> None:
    assert encode_varint(value) == wire
    assert decode_varint(wire, 0) == (value & (2**64 - 1), len(wire))


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    wire = encode_varint(value)
    assert decode_varint(b"\x99" + wire + b"\x01", 1) == (value, 1 + len(wire))


@given(st.dictionaries(st.integers(min_value=1, max_value=2**29 - 1),
                       st.lists(st.one_of(st.integers(min_value=0, max_value=2**64 - 1), st.binary()),
                                min_size=1, max_size=3)))
def test_fields_round_trip(fields: dict[int, list[int | bytes]]) -> None:
    wire = b"".join(encode_bytes(n, v) if isinstance(v, bytes) else encode_varint(n << 3) + encode_varint(v)
                    for n, values in fields.items() for v in values)
    assert decode_fields(wire) == fields


def test_requests_known_bytes() -> None:
    assert pull_image_request(PAUSE) == PAUSE_PULL
    assert remove_image_request(PAUSE) == PAUSE_PULL  # RemoveImageRequest{ImageSpec image = 1}: same shape
    assert image_status_request(PAUSE) == PAUSE_PULL
    assert image_status_request(PAUSE, verbose=True) == PAUSE_PULL + b"\x10\x01"  # bool verbose = 2
    assert encode_string(1, "") == b""  # proto3: an empty string is not written


def _image(id_: str, tags: list[str], digests: list[str], size: int) -> bytes:
    return (encode_string(1, id_) + b"".join(encode_string(2, t) for t in tags)
            + b"".join(encode_string(3, d) for d in digests) + encode_varint(4 << 3) + encode_varint(size)
            + encode_bytes(7, encode_string(1, "ignored ImageSpec")) + encode_varint(8 << 3) + b"\x01")


def test_image_status_response_with_image() -> None:
    image = _image("sha256:abc", ["127.0.0.1:5000/pause:3.9", "registry.k8s.io/pause:3.9"],
                   ["registry.k8s.io/pause@sha256:def"], 321_000)
    info_entry = encode_string(1, "info") + encode_string(2, '{"x": 1}')  # map<string,string> info = 2
    unknown = encode_varint(9 << 3 | 5) + struct.pack("<I", 7) + encode_varint(10 << 3 | 1) + struct.pack("<Q", 8)
    wire = encode_bytes(1, image) + encode_bytes(2, info_entry) + unknown
    assert decode_image_status_response(wire) == CriImage(
        "sha256:abc", ("127.0.0.1:5000/pause:3.9", "registry.k8s.io/pause:3.9"),
        ("registry.k8s.io/pause@sha256:def",), 321_000)


def test_image_status_response_without_image() -> None:
    assert decode_image_status_response(b"") is None
    assert decode_image_status_response(encode_bytes(2, encode_string(1, "k"))) is None  # only info
    # an Image with every field at its default is still an image
    assert decode_image_status_response(encode_bytes(1, b"")) == CriImage("")


def test_pull_and_list_responses() -> None:
    assert decode_pull_image_response(encode_string(1, "sha256:0123")) == "sha256:0123"
    assert decode_pull_image_response(b"") == ""
    wire = encode_bytes(1, _image("sha256:a", ["x:1"], [], 1)) + encode_bytes(1, _image("sha256:b", [], ["y@sha256:c"], 2))
    assert [i.id for i in decode_list_images_response(wire)] == ["sha256:a", "sha256:b"]
    assert decode_list_images_response(b"") == ()


@pytest.mark.parametrize("wire", [
    b"\x08",  # varint field, no value
    b"\x0a\x05abc",  # length 5, 3 bytes
    b"\x0b",  # start group (wire type 3)
    b"\x0d\x01\x02",  # fixed32 cut short
    b"\x00\x01",  # field number 0
    b"\x08" + b"\xff" * 11,  # varint longer than 10 bytes
])
def test_decode_refuses_broken_input(wire: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        decode_fields(wire)


def _ssh_string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def test_streamlocal_channel_open_payload() -> None:
    m = streamlocal_open_message(7, 2097152, 32768, "/run/containerd/containerd.sock")
    assert m.asbytes() == (
        bytes([90])  # SSH_MSG_CHANNEL_OPEN
        + _ssh_string(b"direct-streamlocal@openssh.com")
        + struct.pack(">III", 7, 2097152, 32768)  # sender channel, initial window, maximum packet
        + _ssh_string(b"/run/containerd/containerd.sock")
        + _ssh_string(b"")  # reserved
        + struct.pack(">I", 0)  # reserved
    )
    back = Message(m.asbytes())
    assert back.get_byte() == bytes([90])
    assert back.get_text() == "direct-streamlocal@openssh.com"
    assert [back.get_int() for _ in range(3)] == [7, 2097152, 32768]
    assert back.get_text() == "/run/containerd/containerd.sock"


def test_bridge_command() -> None:
    """The bridge runs under `timeout -k` on the node for what is left of the node's deadline."""
    compile(BRIDGE, "<bridge>", "exec")
    plain = bridge_command("/run/containerd/containerd.sock", become=False, seconds=11.2)
    assert plain.startswith("exec timeout -k 2 13 python3 -c '")
    assert plain.endswith(" /run/containerd/containerd.sock")
    assert bridge_command("/run/x y.sock", become=True, seconds=3).startswith("sudo -n -H -- sh -c ")


def _bridge(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", BRIDGE, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_bridge_carries_bytes_and_half_close(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:  # read until EOF, then answer and close: needs the bridge to pass on EOF
        conn, _ = server.accept()
        got = b""
        while chunk := conn.recv(65536):
            got += chunk
        conn.sendall(b"got " + got)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    out, _ = _bridge(path).communicate(b"hello", timeout=10)
    server.close()
    assert out == b"OK\ngot hello"


def test_bridge_reports_a_missing_socket(tmp_path: Path) -> None:
    proc = _bridge(tmp_path / "none.sock")
    out, _ = proc.communicate(b"", timeout=10)
    assert out.startswith(b"ERR ENOENT ") and proc.returncode == 3


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def _problem(code: grpc.StatusCode, details: str, errors: tuple[str, ...] = (), step: str = "PullImage") -> Any:
    tunnel = Tunnel(transport=cast(Any, None), socket_path="/run/containerd/containerd.sock", become=False, deadline=0)
    tunnel.errors.extend(errors)
    return cri._rpc_problem(_FakeRpcError(code, details), 60, step, tunnel)


def test_rpc_problems_are_never_false_failures() -> None:
    msg = 'failed to pull and unpack image "x": failed to resolve reference "x":\n  connection refused'
    r = _problem(grpc.StatusCode.UNKNOWN, msg)
    assert (r.status, r.detail) == ("fail", 'failed to pull and unpack image "x": failed to resolve reference "x": '
                                            "connection refused")
    r = _problem(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN: "
                 "unix:/tmp/nodecfg-cri-x/cri.sock: Connection reset by peer", step="ImageStatus")
    assert (r.status, r.detail) == ("fail", "containerd CRI socket does not answer "
                                            "(/run/containerd/containerd.sock: Connection reset by peer)")
    r = _problem(grpc.StatusCode.UNAVAILABLE, "Socket closed", ("socket gone: /run/c.sock: Connection refused",))
    assert (r.status, r.detail) == ("fail", "containerd CRI socket does not answer (/run/c.sock: Connection refused)")
    assert _problem(grpc.StatusCode.UNAVAILABLE, "Socket closed", ("cannot open an SSH session",)).status == "not checked"
    assert _problem(grpc.StatusCode.UNIMPLEMENTED, "unknown service").status == "not checked"
    r = _problem(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert (r.status, r.detail) == ("timeout", "CRI PullImage did not finish within 60 s: containerd hung?")
    r = _problem(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", step="ImageStatus")
    assert (r.status, r.detail) == ("timeout", "CRI ImageStatus gave no answer within 60 s: containerd hung?")
