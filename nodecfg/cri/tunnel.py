"""A node's unix socket, reachable as a local one through the node's SSH connection.

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

paramiko internals, on purpose: paramiko has no public way to open a `direct-streamlocal@openssh.com`
channel (`Transport.open_channel` writes the type-specific payload for direct-tcpip, forwarded-tcpip and
x11 only), so `open_streamlocal_channel` repeats open_channel's steps with its own message, through
`Transport._next_channel`, `_channels`, `_send_user_message` and `Channel._set_transport`/`_set_window`.
Those steps are the same in paramiko 3.4 to 5.1; pyproject.toml pins the versions the tests ran on, and
tests/unit/test_paramiko_internals.py fails, saying what to check, when paramiko moves any of them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shlex
import shutil
import socket as socketlib
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko

STREAMLOCAL = "direct-streamlocal@openssh.com"
_GRACE = 2.0  # after one side of a tunnelled connection ends, how long the other may take to follow
_POLL = 0.2

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


def bridge_command(socket_path: str, become: bool, seconds: float) -> str:
    """The bridge on the node, under `timeout -k 2` for the `seconds` left of the node's deadline
    (nodecfg/deadline.py): it never outlives the check."""
    from nodecfg.ssh import wrap_become

    bridge = f"python3 -c {shlex.quote(BRIDGE.strip())} {shlex.quote(socket_path)}"
    return wrap_become(f"exec timeout -k 2 {math.ceil(seconds) + 1} {bridge}", become)


class SocketGone(Exception):
    """The node's socket refused the connection: nothing (containerd) listens there."""


class NoTransport(Exception):
    """Neither channel kind reaches the socket: the check cannot be made from here."""


def squeeze_whitespace(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


class Tunnel:
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
        """An exec channel running the bridge, after its OK; raises SocketGone or NoTransport."""
        import select

        import paramiko

        try:
            chan = self.transport.open_session(timeout=self._remaining())
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise NoTransport(f"cannot open an SSH session ({exc or type(exc).__name__})") from None
        self._track(chan)
        try:
            chan.exec_command(bridge_command(self.socket_path, self.become, self._remaining()))
            out, err = bytearray(), bytearray()
            budget = self._remaining()
            end = time.monotonic() + budget
            while b"\n" not in out:
                wait = end - time.monotonic()
                if wait <= 0:
                    raise NoTransport(f"the socket bridge on the node did not answer within {budget:.3g}s")
                select.select([chan], [], [], min(wait, _POLL))
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(4096)
                if chan.recv_ready():
                    out += chan.recv(4096)
                elif chan.eof_received or chan.closed:
                    why = squeeze_whitespace(err.decode("utf-8", "replace")).removeprefix("sh: 1: ")
                    if not why and chan.exit_status_ready():
                        why = f"exit code {chan.recv_exit_status()}"
                    raise NoTransport(f"the socket bridge did not run on the node ({why or 'no output'})")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            chan.close()
            raise NoTransport(f"SSH channel to the bridge failed ({exc})") from None
        except NoTransport:
            chan.close()
            raise
        line, _, rest = bytes(out).partition(b"\n")
        if line == b"OK":
            return chan, rest
        chan.close()
        words = line.decode("utf-8", "replace").split(" ", 2)
        if len(words) == 3 and words[0] == "ERR":
            if words[1] in _SOCKET_GONE:
                raise SocketGone(f"{self.socket_path}: {words[2]}")
            hint = " (set become: the socket is root's)" if words[1] in ("EACCES", "EPERM") and not self.become else ""
            raise NoTransport(f"cannot open {self.socket_path} on the node: {words[2]}{hint}")
        raise NoTransport(f"the socket bridge said {squeeze_whitespace(line.decode('utf-8', 'replace'))!r}")

    def _open_channel(self) -> tuple[paramiko.Channel, bytes]:
        import paramiko

        if self.kind == "streamlocal":
            try:
                chan = open_streamlocal_channel(self.transport, self.socket_path, self._remaining())
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise NoTransport(f"{STREAMLOCAL} channel: {exc or type(exc).__name__}") from None
            self._track(chan)
            return chan, b""
        return self._open_bridge()

    def probe(self) -> None:
        """Choose the channel kind by opening the first channel (kept for gRPC's first connection).
        Raises SocketGone when the node's socket is not there, NoTransport when no kind works."""
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
        except NoTransport as exc:
            raise NoTransport(f"sshd refused stream-local forwarding ({streamlocal_why}) and {exc}") from None
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
        except (NoTransport, SocketGone) as exc:
            with self._lock:
                self.errors.append(str(exc) if isinstance(exc, NoTransport) else f"socket gone: {exc}")
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
