"""HTTP/1.1 to the registry on the master, spoken straight over SSH channels.

Each HTTP connection is one paramiko `direct-tcpip` channel (what `ssh -L` opens) from the master's
SSH connection to 127.0.0.1:<registry.port> on the master (or, for a push, to the registry
container's own address, past docker's userland proxy, when sshd allows it), so only SSH has to
reach the master: no local listener, no socket file, nothing another local user could connect to. A paramiko Channel is
socket-like (sendall, recv, makefile, settimeout), so `http.client` runs on it unchanged.
Without an inventory (the registry on this machine), a plain TCP connection to 127.0.0.1.

Over TLS (`registry.tls`) the registry's certificate is verified inside the channel, for the
registry's own name, against the CA the nodes trust (`channel_tls.py`): the tunnel ends at
127.0.0.1 but the check is the one a node makes.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
from typing import TYPE_CHECKING, Any

from nodecfg.errors import HostError
from nodecfg.push.api import Connect

if TYPE_CHECKING:
    import paramiko

Tls = tuple[bytes, str]  # (the CA's PEM, the name the certificate must carry)
WINDOW = 8 << 20  # our receive window per channel; replies are small, this only matters for GETs


class _Refusals(logging.Filter):
    """paramiko logs every refused channel open at ERROR, which lands on the user's terminal. Each
    refusal of these channels is nodecfg's to handle: the registry not answering yet (asked again
    later), a forward sshd forbids (the next target), or one named in a HostError."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not re.match(r"Secsh channel \d+ open FAILED", str(record.msg))


_REFUSALS = _Refusals()


class ChannelHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose socket is a direct-tcpip channel over an open SSH transport, to the
    first of `targets` (host, port) on the master that sshd opens; one it refuses is dropped from
    the (shared) list, so the next connection goes straight to the next."""

    def __init__(self, transport: paramiko.Transport, targets: list[tuple[str, int]], timeout: float = 60.0,
                 tls: Tls | None = None) -> None:
        super().__init__(*targets[-1], timeout=timeout)
        self._transport = transport
        self._targets = targets
        self._tls = tls

    def connect(self) -> None:
        import paramiko

        self._transport.logger.addFilter(_REFUSALS)  # once per logger: addFilter skips a filter already there

        while True:
            target = self._targets[0]
            last = len(self._targets) == 1
            try:
                chan = self._transport.open_channel("direct-tcpip", target, ("127.0.0.1", 0), window_size=WINDOW,
                                                    timeout=self.timeout if last else min(self.timeout or 5.0, 5.0))
                break
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if not last and isinstance(exc, paramiko.SSHException):  # refused (PermitOpen), or no answer
                    with contextlib.suppress(ValueError):  # another connection dropped it first
                        self._targets.remove(target)
                    continue
                raise HostError(f"cannot open an SSH port forward to {target[0]}:{target[1]} on the master "
                                f"({exc or type(exc).__name__}); does sshd allow TCP forwarding "
                                "(AllowTcpForwarding)?") from None
        chan.settimeout(self.timeout)
        if self._tls is None:
            self.sock = chan
            return
        import ssl

        from nodecfg.push.channel_tls import TlsOverChannel, client_context

        ca, name = self._tls
        try:
            self.sock = TlsOverChannel(chan, client_context(ca), name)
        except (ssl.SSLError, ConnectionError) as exc:
            chan.close()
            raise HostError(tls_failure(name, self.port, exc)) from None


def peer_certificate(c: Any, port: int, timeout: float = 10.0) -> bytes:
    """The certificate (DER) the registry at 127.0.0.1:`port` on the master serves, read in a TLS
    handshake over one SSH channel (a TCP connection for the LocalConnection). Not verified: it is
    read (expiry.py), not trusted, and nothing is sent after the handshake."""
    import socket
    import ssl

    from nodecfg import ssh
    from nodecfg.push.channel_tls import TlsOverChannel

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if isinstance(c, ssh.LocalConnection):
        raw: Any = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    else:
        transport = c.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostError(f"{c.host}: SSH connection is closed")
        transport.logger.addFilter(_REFUSALS)
        try:
            raw = transport.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=timeout)
        except Exception as exc:  # noqa: BLE001 -- paramiko's refusals come in several types
            why = exc or type(exc).__name__
            raise HostError(f"cannot open an SSH port forward to 127.0.0.1:{port} ({why})") from None
    try:
        raw.settimeout(timeout)
        der = TlsOverChannel(raw, ctx, "localhost").peer_certificate()
    finally:
        raw.close()
    if der is None:
        raise HostError(f"the registry at 127.0.0.1:{port} presented no certificate")
    return der


def tls_failure(name: str, port: int, exc: BaseException) -> str:
    from nodecfg.tlsdiag import classify

    problem = classify(str(exc))
    return (f"the registry at {name}:{port} failed TLS verification: "
            f"{problem or 'TLS handshake failed'} ({exc})")


def direct(address: str, port: int, timeout: float = 60.0, tls: Tls | None = None) -> Connect:
    """TCP to the registry's own address and port, the way the nodes pull (`registry-up
    --direct`): no SSH encryption on either side, for a registry port reachable from here; over
    TLS verified against the CA the nodes trust."""
    if tls is None:
        return lambda: http.client.HTTPConnection(address, port, timeout=timeout)
    from nodecfg.push.channel_tls import client_context

    ctx = client_context(tls[0])
    return lambda: http.client.HTTPSConnection(address, port, timeout=timeout, context=ctx)


def connector(c: Any, port: int, timeout: float = 60.0, tls: Tls | None = None,
              route: tuple[str, int] | None = None) -> Connect:
    """A factory of HTTP connections to the registry: over `c`'s SSH transport to 127.0.0.1:`port`
    on the master, or local TCP when `c` is the LocalConnection (registry-up without an inventory).

    `route`: the registry container's own address and port (MasterFacts.route), where the channels
    go instead when sshd lets them: 127.0.0.1:<port> passes every byte through docker's userland
    proxy, one more copy on the master's CPU (a tenth of a core during a push here)."""
    from nodecfg import ssh

    if isinstance(c, ssh.LocalConnection):
        return lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    targets = [route, ("127.0.0.1", port)] if route else [("127.0.0.1", port)]

    def connect() -> http.client.HTTPConnection:
        transport = c.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostError(f"{c.host}: SSH connection is closed")
        return ChannelHTTPConnection(transport, targets, timeout, tls)

    return connect
