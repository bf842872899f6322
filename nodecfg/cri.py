"""Pull an image through containerd's CRI ImageService on a node, over SSH: the kubelet's own path.

`pull_via_cri(c, ref)` calls `runtime.v1.ImageService` on the node's containerd socket exactly as the
kubelet does (ImageStatus, ListImages, PullImage, and RemoveImage when the pull brought the image onto the node),
so the answer covers what `ctr` cannot: the CRI plugin's own registry config (config_path/hosts.toml).

How the bytes travel: grpcio talks to a unix socket in a private temp dir (0700) on this machine. Each
connection gRPC opens there is joined to one SSH channel that ends at the node's socket:
- `direct-streamlocal@openssh.com` (OpenSSH stream-local forwarding, `ssh -L local:/remote.sock`), when
  sshd allows it (AllowStreamLocalForwarding and AllowTcpForwarding both yes or local, the defaults; seen
  with OpenSSH 9.2: `AllowTcpForwarding no` refuses stream-local too) and the login user may open the socket;
- otherwise an exec channel running a tiny stdin/stdout <-> unix socket bridge in the node's python3,
  through sudo when `become`. The bridge says `OK` or `ERR <errno> <text>` before any byte of the
  stream, so a missing socket (containerd down) is told apart from a bridge that cannot run.
sshd answers every failed stream-local open with the same "open failed", whatever the cause, so it is
never taken as containerd's answer: only the bridge's connect error or a gRPC answer is. When no
transport works the result is "not checked", with the reason; never a false failure.

Protobuf without protoc: the few messages are hand-encoded. Field numbers, from the CRI API
(k8s.io/cri-api pkg/apis/runtime/v1/api.proto, package runtime.v1; v1alpha2 uses the same numbers):
    ImageSpec            { string image = 1; map<string,string> annotations = 2; ... }
    ImageFilter          { ImageSpec image = 1; }
    ListImagesRequest    { ImageFilter filter = 1; }
    ListImagesResponse   { repeated Image images = 1; }
    Image                { string id = 1; repeated string repo_tags = 2; repeated string repo_digests = 3;
                           uint64 size = 4; ... }
    ImageStatusRequest   { ImageSpec image = 1; bool verbose = 2; }
    ImageStatusResponse  { Image image = 1; map<string,string> info = 2; }   image unset: not present
    PullImageRequest     { ImageSpec image = 1; AuthConfig auth = 2; PodSandboxConfig sandbox_config = 3; }
    PullImageResponse    { string image_ref = 1; }
    RemoveImageRequest   { ImageSpec image = 1; }
    RemoveImageResponse  { }
PullImage is sent without auth (registry credentials for a mirror live in hosts.toml) and without a
sandbox config, as `crictl pull` does.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import shutil
import socket as socketlib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import paramiko
    from fabric import Connection

DEFAULT_SOCKET = "/run/containerd/containerd.sock"
STREAMLOCAL = "direct-streamlocal@openssh.com"
APIS = ("runtime.v1", "runtime.v1alpha2")  # the kubelet speaks v1 (k8s 1.26+); containerd < 1.6 only v1alpha2
_GRACE = 2.0  # after one side of a tunnelled connection ends, how long the other may take to follow
_POLL = 0.2


@dataclass(frozen=True)
class CriPull:
    status: Literal["ok", "fail", "not checked"]
    detail: str
    image_ref: str = ""
    removed: bool = False


# --- protobuf wire format: varints and length-delimited fields are all these messages need ---------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def encode_varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1  # int64 negatives: ten-byte two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return encode_varint(field << 3 | wire)


def encode_bytes(field: int, value: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message), always written."""
    return _tag(field, _LEN) + encode_varint(len(value)) + value


def encode_string(field: int, value: str) -> bytes:
    """A proto3 string: omitted when empty."""
    return encode_bytes(field, value.encode()) if value else b""


def encode_bool(field: int, value: bool) -> bytes:
    """A proto3 bool: omitted when false."""
    return _tag(field, _VARINT) + b"\x01" if value else b""


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def decode_fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Every field of one message: number -> values in wire order (ints for varint and fixed-width
    fields, bytes for length-delimited ones). Unknown fields are kept, groups are refused."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if field == 0:
            raise ValueError("field number 0")
        if wire == _VARINT:
            value, pos = decode_varint(buf, pos)
        elif wire == _LEN:
            size, pos = decode_varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if pos + width > len(buf):
                raise ValueError("truncated fixed-width field")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(field, []).append(value)
    return fields


def _strings(fields: dict[int, list[int | bytes]], field: int) -> tuple[str, ...]:
    return tuple(v.decode("utf-8", "replace") for v in fields.get(field, []) if isinstance(v, bytes))


def _last_bytes(fields: dict[int, list[int | bytes]], field: int) -> bytes | None:
    values = [v for v in fields.get(field, []) if isinstance(v, bytes)]
    return values[-1] if values else None  # proto3: the last occurrence of a singular field wins


@dataclass(frozen=True)
class CriImage:
    id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    size: int = 0


def image_spec(ref: str) -> bytes:
    return encode_string(1, ref)


def image_status_request(ref: str, verbose: bool = False) -> bytes:
    return encode_bytes(1, image_spec(ref)) + encode_bool(2, verbose)


def pull_image_request(ref: str) -> bytes:
    return encode_bytes(1, image_spec(ref))


def remove_image_request(ref: str) -> bytes:
    return encode_bytes(1, image_spec(ref))


def list_images_request() -> bytes:
    return b""  # no filter: every image


def decode_image(buf: bytes) -> CriImage:
    f = decode_fields(buf)
    ids = _strings(f, 1)
    size = [v for v in f.get(4, []) if isinstance(v, int)]
    return CriImage(ids[-1] if ids else "", _strings(f, 2), _strings(f, 3), size[-1] if size else 0)


def decode_image_status_response(buf: bytes) -> CriImage | None:
    """The image, or None when the runtime does not have it (ImageStatusResponse.image unset)."""
    raw = _last_bytes(decode_fields(buf), 1)
    return None if raw is None else decode_image(raw)


def decode_list_images_response(buf: bytes) -> tuple[CriImage, ...]:
    return tuple(decode_image(v) for v in decode_fields(buf).get(1, []) if isinstance(v, bytes))


def decode_pull_image_response(buf: bytes) -> str:
    refs = _strings(decode_fields(buf), 1)
    return refs[-1] if refs else ""


# --- SSH channels to the node's socket ----------------------------------------------------------------

def streamlocal_open_message(chanid: int, window_size: int, max_packet_size: int,
                             socket_path: str) -> paramiko.Message:
    """SSH_MSG_CHANNEL_OPEN for `direct-streamlocal@openssh.com` (OpenSSH PROTOCOL, section 2.4):
    the generic header, then string socket path, string reserved (""), uint32 reserved (0)."""
    from paramiko import Message
    from paramiko.common import cMSG_CHANNEL_OPEN

    m = Message()
    m.add_byte(cMSG_CHANNEL_OPEN)
    m.add_string(STREAMLOCAL)
    m.add_int(chanid)
    m.add_int(window_size)
    m.add_int(max_packet_size)
    m.add_string(socket_path)
    m.add_string("")
    m.add_int(0)
    return m


class _QuietRefusals(logging.Filter):
    """paramiko logs every refused channel open at ERROR, which would land on the user's terminal. A
    refused stream-local open is expected (the bridge takes over): drop that line, for our opens only."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.opens: set[tuple[int | None, int]] = set()  # (transport thread, channel id)

    def filter(self, record: logging.LogRecord) -> bool:
        m = re.match(r"Secsh channel (\d+) open FAILED", str(record.msg))
        if m is None:
            return True
        with self.lock:
            return (record.thread, int(m[1])) not in self.opens


_QUIET = _QuietRefusals()


def open_streamlocal_channel(transport: paramiko.Transport, socket_path: str,
                             timeout: float) -> paramiko.Channel:
    """A channel to the unix socket `socket_path` on the server, as `ssh -L x:/path` opens it.

    paramiko's `Transport.open_channel` cannot add this channel type's payload, so this does what it
    does (register the channel, send CHANNEL_OPEN, wait for the confirmation) with our message.
    Raises paramiko.SSHException if the server refuses or does not answer within `timeout`.
    """
    from paramiko import Channel, SSHException

    t: Any = transport  # the channel table and sender are paramiko internals, as open_channel uses them
    if not transport.is_active():
        raise SSHException("SSH session not active")
    t.logger.addFilter(_QUIET)  # once per logger: addFilter skips a filter already there
    window, packet = transport.default_window_size, transport.default_max_packet_size
    with transport.lock:
        chanid: int = t._next_channel()
        message = streamlocal_open_message(chanid, window, packet, socket_path)
        chan = Channel(chanid)
        t._channels.put(chanid, chan)
        event = threading.Event()
        transport.channel_events[chanid] = event
        transport.channels_seen[chanid] = True
        c: Any = chan
        c._set_transport(transport)
        c._set_window(window, packet)
    key = (transport.ident, chanid)
    handed_off = False
    with _QUIET.lock:
        _QUIET.opens.add(key)
    t._send_user_message(message)
    end = time.monotonic() + timeout
    try:
        while not event.wait(0.1):
            if not transport.is_active():
                raise transport.get_exception() or SSHException("SSH session closed")
            if time.monotonic() > end:
                # an answer that comes later opens a channel nobody reads: close it then
                threading.Thread(target=_close_when_open, args=(event, chan, key), daemon=True).start()
                handed_off = True
                raise SSHException(f"no answer to the {STREAMLOCAL} channel open within {timeout:g}s")
    finally:
        if not handed_off:
            with _QUIET.lock:
                _QUIET.opens.discard(key)
    opened: paramiko.Channel | None = t._channels.get(chanid)
    if opened is None:
        raise transport.get_exception() or SSHException(f"{STREAMLOCAL} channel refused")
    return opened


def _close_when_open(event: threading.Event, chan: paramiko.Channel, key: tuple[int | None, int]) -> None:
    if event.wait(60):
        with contextlib.suppress(Exception):
            chan.close()
    with _QUIET.lock:
        _QUIET.opens.discard(key)


# Runs in the node's python3 (3.5+): connect, report, then copy stdin -> socket and socket -> stdout;
# after stdin's EOF it waits at most 5 s of silence for the socket to finish.
BRIDGE = r"""
import errno, os, select, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    os.write(1, ("ERR %s %s\n" % (errno.errorcode.get(e.errno, "E?"), e.strerror)).encode())
    sys.exit(3)
os.write(1, b"OK\n")
fds = [0, s]
try:
    while fds:
        ready = select.select(fds, [], [], None if 0 in fds else 5)[0]
        if not ready:
            sys.exit(0)  # our side is gone and the socket stays silent: don't linger
        for f in ready:
            if f is s:
                d = s.recv(65536)
                if not d:
                    sys.exit(0)
                while d:
                    d = d[os.write(1, d):]
            else:
                d = os.read(0, 65536)
                if d:
                    s.sendall(d)
                else:
                    fds.remove(0)
                    s.shutdown(socket.SHUT_WR)
except OSError:
    pass
"""
_SOCKET_GONE = ("ENOENT", "ECONNREFUSED", "ENOTSOCK", "ENOTDIR")  # nothing listens at the path


def bridge_command(socket_path: str, become: bool) -> str:
    from nodecfg.ssh import wrap_become

    return wrap_become(f"exec python3 -c {shlex.quote(BRIDGE.strip())} {shlex.quote(socket_path)}", become)


class _SocketGone(Exception):
    """The node's socket refused the connection: nothing (containerd) listens there."""


class _NoTransport(Exception):
    """Neither channel kind reaches the socket: the check cannot be made from here."""


def _one_line(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


class _Tunnel:
    """A local unix socket whose connections each become one SSH channel to the node's socket."""

    def __init__(self, transport: paramiko.Transport, socket_path: str, become: bool, deadline: float) -> None:
        self.transport, self.socket_path, self.become, self.deadline = transport, socket_path, become, deadline
        self.kind = ""
        self.errors: list[str] = []  # per-connection problems after the probe, for the final message
        self._spare: tuple[paramiko.Channel, bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[Any] = set()  # sockets and channels to close at the end
        self._threads: list[threading.Thread] = []
        self._dir: str | None = None
        self._listener: socketlib.socket | None = None

    def _remaining(self) -> float:
        return max(0.5, self.deadline - time.monotonic())

    def problems(self) -> list[str]:
        with self._lock:
            return list(self.errors)

    def _track(self, obj: Any) -> None:
        with self._lock:
            self._open.add(obj)

    def _open_bridge(self) -> tuple[paramiko.Channel, bytes]:
        """An exec channel running the bridge, after its OK; raises _SocketGone or _NoTransport."""
        import select

        import paramiko

        try:
            chan = self.transport.open_session(timeout=self._remaining())
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _NoTransport(f"cannot open an SSH session ({exc or type(exc).__name__})") from None
        self._track(chan)
        try:
            chan.exec_command(bridge_command(self.socket_path, self.become))
            out, err = bytearray(), bytearray()
            budget = self._remaining()
            end = time.monotonic() + budget
            while b"\n" not in out:
                wait = end - time.monotonic()
                if wait <= 0:
                    raise _NoTransport(f"the socket bridge on the node did not answer within {budget:.3g}s")
                select.select([chan], [], [], min(wait, _POLL))
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(4096)
                if chan.recv_ready():
                    out += chan.recv(4096)
                elif chan.eof_received or chan.closed:
                    why = _one_line(err.decode("utf-8", "replace")).removeprefix("sh: 1: ")
                    if not why and chan.exit_status_ready():
                        why = f"exit code {chan.recv_exit_status()}"
                    raise _NoTransport(f"the socket bridge did not run on the node ({why or 'no output'})")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            chan.close()
            raise _NoTransport(f"SSH channel to the bridge failed ({exc})") from None
        except _NoTransport:
            chan.close()
            raise
        line, _, rest = bytes(out).partition(b"\n")
        if line == b"OK":
            return chan, rest
        chan.close()
        words = line.decode("utf-8", "replace").split(" ", 2)
        if len(words) == 3 and words[0] == "ERR":
            if words[1] in _SOCKET_GONE:
                raise _SocketGone(f"{self.socket_path}: {words[2]}")
            hint = " (set become: the socket is root's)" if words[1] in ("EACCES", "EPERM") and not self.become else ""
            raise _NoTransport(f"cannot open {self.socket_path} on the node: {words[2]}{hint}")
        raise _NoTransport(f"the socket bridge said {_one_line(line.decode('utf-8', 'replace'))!r}")

    def _open_channel(self) -> tuple[paramiko.Channel, bytes]:
        import paramiko

        if self.kind == "streamlocal":
            try:
                chan = open_streamlocal_channel(self.transport, self.socket_path, self._remaining())
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise _NoTransport(f"{STREAMLOCAL} channel: {exc or type(exc).__name__}") from None
            self._track(chan)
            return chan, b""
        return self._open_bridge()

    def probe(self) -> None:
        """Choose the channel kind by opening the first channel (kept for gRPC's first connection).
        Raises _SocketGone when the node's socket is not there, _NoTransport when no kind works."""
        import paramiko

        try:
            chan = open_streamlocal_channel(self.transport, self.socket_path, self._remaining())
        except (paramiko.SSHException, OSError, EOFError) as exc:
            # sshd says the same for every cause (forwarding off, no permission, no socket)
            streamlocal_why = getattr(exc, "text", "") or str(exc) or type(exc).__name__
        else:
            self._track(chan)
            self.kind, self._spare = "streamlocal", (chan, b"")
            return
        try:
            self._spare = self._open_bridge()
        except _NoTransport as exc:
            raise _NoTransport(f"sshd refused stream-local forwarding ({streamlocal_why}) and {exc}") from None
        self.kind = "bridge"

    def start(self) -> str:
        """Listen locally; returns the gRPC target."""
        base = tempfile.gettempdir()
        self._dir = tempfile.mkdtemp(prefix="nodecfg-cri-", dir=base if len(base) < 60 else "/tmp")
        path = str(Path(self._dir) / "cri.sock")  # mkdtemp made the dir 0700: only we can connect
        listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        self._listener = listener
        listener.bind(path)
        listener.listen(8)
        listener.settimeout(_POLL)
        self._spawn(self._accept_loop, listener)
        return "unix:" + path

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="nodecfg-cri")
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socketlib.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._track(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socketlib.socket) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        try:
            chan, first = spare or self._open_channel()
        except (_NoTransport, _SocketGone) as exc:
            with self._lock:
                self.errors.append(str(exc) if isinstance(exc, _NoTransport) else f"socket gone: {exc}")
            conn.close()
            return
        _pump(conn, chan, first, self._stop)

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            spare, self._spare = self._spare, None
            objs, threads = list(self._open), list(self._threads)
        if spare is not None:
            spare[0].close()
        for thread in threads:
            thread.join(timeout=_POLL * 3)
        for obj in objs:
            with contextlib.suppress(Exception):
                obj.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def _pump(conn: socketlib.socket, chan: paramiko.Channel, first: bytes, stop: threading.Event) -> None:
    """Copy bytes both ways until both sides end (or one ended _GRACE ago, or `stop`); half-closes
    are passed on (EOF from gRPC -> channel EOF -> bridge shuts the socket's write side)."""
    import select

    import paramiko

    local_open = remote_open = True
    ended_at: float | None = None
    try:
        if first:
            conn.sendall(first)
        while (local_open or remote_open) and not stop.is_set():
            if not (local_open and remote_open):
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at > _GRACE:
                    break
            watch: list[Any] = ([conn] if local_open else []) + ([chan] if remote_open else [])
            ready = select.select(watch, [], [], _POLL)[0]
            if conn in ready:
                data = conn.recv(65536)
                if data:
                    chan.sendall(data)
                else:
                    local_open = False
                    chan.shutdown_write()
            if chan in ready:
                while chan.recv_stderr_ready():
                    chan.recv_stderr(4096)  # the bridge only writes there if it breaks
                if chan.recv_ready() or chan.eof_received or chan.closed:
                    data = chan.recv(65536)
                    if data:
                        conn.sendall(data)
                    else:
                        remote_open = False
                        with contextlib.suppress(OSError):
                            conn.shutdown(socketlib.SHUT_WR)
    except (OSError, ValueError, paramiko.SSHException, EOFError):
        pass  # ValueError: select on a socket closed under us
    finally:
        chan.close()
        conn.close()


# --- the check ----------------------------------------------------------------------------------------

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
    the node before, RemoveImage, so the next run really pulls again. CRI's RemoveImage drops every
    name of the image, so it is skipped when the same image (by id, from a ListImages taken before
    the pull) was already there under another name. "fail" carries containerd's own one-line
    reason; "not checked" says why no answer was had. Safe to call from several threads.
    """
    import grpc
    import paramiko

    progress = _Progress(time.monotonic() + timeout)
    transport = c.client.get_transport() if c.client is not None else None
    if transport is None or not transport.is_active():
        return CriPull("not checked", "SSH connection is closed")
    tunnel = _Tunnel(transport, socket, become, progress.deadline)
    channel: Any = None
    try:
        tunnel.probe()
        channel = grpc.insecure_channel(tunnel.start(), options=[
            ("grpc.enable_http_proxy", 0),
            ("grpc.max_receive_message_length", 64 << 20),  # ListImages on a node with many images
        ])
        return _steps(channel, ref, timeout, progress, tunnel.kind)
    except (grpc.RpcError, _SocketGone, _NoTransport, ValueError, paramiko.SSHException, OSError) as exc:
        return _outcome(exc, socket, timeout, progress.step, tunnel, transport)
    finally:
        if channel is not None:
            channel.close()
        tunnel.close()


def _steps(channel: Any, ref: str, timeout: float, progress: _Progress, kind: str) -> CriPull:
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
        rpc.call("RemoveImage", remove_image_request(ref), max(progress.left(), min(timeout, 10.0)))
    except grpc.RpcError as exc:
        why = _one_line(exc.details()) or exc.code().name
        return CriPull("ok", f"{detail}; could not remove it again: {why}", image_ref)
    return CriPull("ok", f"{detail}; removed again", image_ref, removed=True)


def _outcome(exc: Exception, socket: str, timeout: float, step: str, tunnel: _Tunnel,
             transport: paramiko.Transport) -> CriPull:
    import grpc

    if isinstance(exc, _SocketGone):
        return CriPull("fail", f"containerd CRI socket does not answer ({exc})")
    if isinstance(exc, _NoTransport):
        return CriPull("not checked", f"cannot reach {socket} over SSH: {exc}")
    if not transport.is_active():
        return CriPull("not checked", f"SSH connection lost during CRI {step}")
    if isinstance(exc, grpc.RpcError):
        return _rpc_problem(exc, timeout, step, tunnel)
    if isinstance(exc, ValueError):
        return CriPull("not checked", f"CRI {step}: unreadable answer ({exc})")
    return CriPull("not checked", f"CRI {step}: {exc}")


def _rpc_problem(exc: Any, timeout: float, step: str, tunnel: _Tunnel) -> CriPull:
    import grpc

    code = exc.code()
    msg = _one_line(exc.details()) or code.name
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
        if step == "PullImage":
            return CriPull("fail", f"CRI PullImage did not finish within {timeout:g}s")
        return CriPull("fail", f"containerd CRI {step} gave no answer within {timeout:g}s")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return CriPull("not checked", f"containerd serves no CRI image service ({', '.join(APIS)}: {msg}): its "
                       'CRI plugin is off (disabled_plugins = ["cri"]) or it is not the node\'s CRI runtime')
    return CriPull("fail", msg)
