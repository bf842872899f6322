"""Pull an image through containerd's CRI ImageService on a node, over SSH: the kubelet's own path.

`pull_via_cri(c, ref)` calls `runtime.v1.ImageService` on the node's containerd socket exactly as the
kubelet does (ImageStatus, ListImages, PullImage, and RemoveImage when the pull brought the image onto the node),
so the answer covers what `ctr` cannot: the CRI plugin's own registry config (config_path/hosts.toml).

The transport is `tunnel.Tunnel` (SSH channels to the node's socket); the messages are
`wire` (protobuf by hand).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from nodecfg.cri.tunnel import NoTransport, SocketGone, Tunnel, squeeze_whitespace
from nodecfg.cri.wire import (
    decode_image_status_response,
    decode_list_images_response,
    decode_pull_image_response,
    image_status_request,
    list_images_request,
    pull_image_request,
    remove_image_request,
)

if TYPE_CHECKING:
    import paramiko
    from fabric import Connection

DEFAULT_SOCKET = "/run/containerd/containerd.sock"
APIS = ("runtime.v1", "runtime.v1alpha2")  # the kubelet speaks v1 (k8s 1.26+); containerd < 1.6 only v1alpha2


@dataclass(frozen=True)
class CriPull:
    status: Literal["ok", "fail", "timeout", "not checked"]  # timeout: no answer within `timeout`
    detail: str
    image_ref: str = ""
    removed: bool = False


class _Rpc:
    def __init__(self, channel: Any, api: str) -> None:
        self.channel, self.api = channel, api

    def call(self, method: str, request: bytes, timeout: float) -> bytes:
        # no (de)serializers: grpcio passes bytes through as they are
        stub = self.channel.unary_unary(f"/{self.api}.ImageService/{method}")
        response: bytes = stub(request, timeout=timeout)
        return response


class _Progress:
    """Where the check is, for the message when it stops."""

    def __init__(self, deadline: float) -> None:
        self.step, self.deadline = "connect", deadline

    def left(self) -> float:
        return max(0.1, self.deadline - time.monotonic())


def pull_via_cri(c: Connection, ref: str, *, socket: str = DEFAULT_SOCKET, become: bool = False,
                 timeout: float = 60) -> CriPull:
    """Pull `ref` through the CRI ImageService on the node behind `c`, as the kubelet would.

    ImageStatus first; PullImage within what is left of `timeout`; then, if the image was not on
    the node before, RemoveImage (also within it), so the next run really pulls again. CRI's RemoveImage drops every
    name of the image, so it is skipped when the same image (by id, from a ListImages taken before
    the pull) was already there under another name. "fail" carries containerd's own one-line
    reason; "not checked" says why no answer was had. Safe to call from several threads.
    """
    import grpc
    import paramiko

    if timeout < 1:
        return CriPull("timeout", "CRI PullImage was not run: the node's smoke-test --timeout was spent before it")
    progress = _Progress(time.monotonic() + timeout)
    transport = c.client.get_transport() if c.client is not None else None
    if transport is None or not transport.is_active():
        return CriPull("not checked", "SSH connection is closed")
    tunnel = Tunnel(transport, socket, become, progress.deadline)
    channel: Any = None
    try:
        tunnel.probe()
        channel = grpc.insecure_channel(tunnel.start(), options=[
            ("grpc.enable_http_proxy", 0),
            ("grpc.max_receive_message_length", 64 << 20),  # ListImages on a node with many images
        ])
        return _steps(channel, ref, progress, tunnel.kind)
    except (grpc.RpcError, SocketGone, NoTransport, ValueError, paramiko.SSHException, OSError) as exc:
        return _outcome(exc, socket, timeout, progress.step, tunnel, transport)
    finally:
        if channel is not None:
            channel.close()
        tunnel.close()


def _steps(channel: Any, ref: str, progress: _Progress, kind: str) -> CriPull:
    import grpc

    progress.step = "ImageStatus"
    rpc: _Rpc | None = None
    for api in APIS:
        try:
            status = _Rpc(channel, api).call("ImageStatus", image_status_request(ref), progress.left())
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED and api != APIS[-1]:
                continue  # an older containerd: the same messages under runtime.v1alpha2
            raise
        rpc = _Rpc(channel, api)
        break
    assert rpc is not None
    present = decode_image_status_response(status) is not None
    before: set[str] = set()
    if not present:
        progress.step = "ListImages"
        listed = rpc.call("ListImages", list_images_request(), progress.left())
        before = {img.id for img in decode_list_images_response(listed)}
    progress.step = "PullImage"
    started = time.monotonic()
    image_ref = decode_pull_image_response(rpc.call("PullImage", pull_image_request(ref), progress.left()))
    took = time.monotonic() - started
    via = "SSH stream-local forwarding" if kind == "streamlocal" else "a python3 socket bridge over SSH"
    detail = f"CRI PullImage{'' if rpc.api == APIS[0] else f' ({rpc.api})'} ok in {took:.2f}s, via {via}"
    if present:
        return CriPull("ok", f"{detail}; the image was already there, kept", image_ref)
    if not image_ref or image_ref in before:
        return CriPull("ok", f"{detail}; kept: the same image is on the node under another name", image_ref)
    progress.step = "RemoveImage"
    try:
        rpc.call("RemoveImage", remove_image_request(ref), progress.left())
    except grpc.RpcError as exc:
        why = squeeze_whitespace(exc.details()) or exc.code().name
        return CriPull("ok", f"{detail}; could not remove it again: {why}", image_ref)
    return CriPull("ok", f"{detail}; removed again", image_ref, removed=True)


def _outcome(exc: Exception, socket: str, timeout: float, step: str, tunnel: Tunnel,
             transport: paramiko.Transport) -> CriPull:
    import grpc

    if isinstance(exc, SocketGone):
        return CriPull("fail", f"containerd CRI socket does not answer ({exc})")
    if isinstance(exc, NoTransport):
        return CriPull("not checked", f"cannot reach {socket} over SSH: {exc}")
    if not transport.is_active():
        return CriPull("not checked", f"SSH connection lost during CRI {step}")
    if isinstance(exc, grpc.RpcError):
        return _rpc_problem(exc, timeout, step, tunnel)
    if isinstance(exc, ValueError):
        return CriPull("not checked", f"CRI {step}: unreadable answer ({exc})")
    return CriPull("not checked", f"CRI {step}: {exc}")


def _rpc_problem(exc: Any, timeout: float, step: str, tunnel: Tunnel) -> CriPull:
    import grpc

    code = exc.code()
    msg = squeeze_whitespace(exc.details()) or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        errors = tunnel.problems()
        gone = [e.removeprefix("socket gone: ") for e in errors if e.startswith("socket gone: ")]
        if errors and not gone:
            return CriPull("not checked", f"CRI {step}: tunnel to the node's socket failed: {errors[-1]}")
        if not gone:  # gRPC names our local end of the tunnel: name the node's socket instead
            msg = re.sub(r"^failed to connect to all addresses; last error: \w+: unix:[^:]*: ", "", msg)
            msg = f"{tunnel.socket_path}: {msg}"
        return CriPull("fail", f"containerd CRI socket does not answer ({gone[-1] if gone else msg})")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        what = "did not finish" if step == "PullImage" else "gave no answer"
        return CriPull("timeout", f"CRI {step} {what} within {timeout:.0f} s: containerd hung?")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return CriPull("not checked", f"containerd serves no CRI image service ({', '.join(APIS)}: {msg}): its "
                       'CRI plugin is off (disabled_plugins = ["cri"]) or it is not the node\'s CRI runtime')
    return CriPull("fail", msg)
