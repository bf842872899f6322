"""TLS over a socket-like object that is not a socket: a paramiko channel (an SSH port forward).

`ssl.SSLContext.wrap_socket` needs a real socket, so the handshake and the records go through an
`ssl.SSLObject` and two memory BIOs, and the result offers what `http.client` uses of a socket:
`sendall`, `makefile("rb")`, `settimeout`, `close`. The registry's certificate is verified against
the CA the inventory names, for the registry's own name, although the bytes travel over SSH to
127.0.0.1 on the master: a registry that presents another certificate is refused, not trusted.
"""

from __future__ import annotations

import io
import ssl
from typing import Any, Protocol

CHUNK = 256 << 10


class _Raw(Protocol):
    def sendall(self, data: bytes) -> Any: ...

    def recv(self, n: int) -> bytes: ...

    def settimeout(self, t: float | None) -> Any: ...

    def close(self) -> Any: ...


class TlsOverChannel:
    """A client TLS session over `raw` (anything with sendall/recv), handshaken on creation."""

    def __init__(self, raw: _Raw, context: ssl.SSLContext, server_hostname: str) -> None:
        self._raw = raw
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_side=False, server_hostname=server_hostname)
        self._eof = False
        self._retry(self._tls.do_handshake)

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self._raw.sendall(data)

    def _fill(self) -> bool:
        data = self._raw.recv(CHUNK)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    def _retry(self, op: Any, *args: Any) -> Any:
        while True:
            try:
                result = op(*args)
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    raise ConnectionResetError("the registry closed the connection during TLS") from None
                continue
            self._flush()
            return result

    # what http.client uses of a socket

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = self._retry(self._tls.write, view[:CHUNK])
            view = view[n:]

    def recv_into(self, buf: memoryview | bytearray) -> int:
        if self._eof:
            return 0
        try:
            return int(self._retry(self._tls.read, len(buf), buf))
        except (ssl.SSLZeroReturnError, ConnectionResetError):
            self._eof = True
            return 0

    def recv(self, n: int) -> bytes:
        buf = bytearray(n)
        got = self.recv_into(buf)
        return bytes(buf[:got])

    def makefile(self, mode: str = "rb", buffering: int = -1) -> io.BufferedReader:
        del mode, buffering
        return io.BufferedReader(_Reader(self), CHUNK)

    def settimeout(self, t: float | None) -> None:
        self._raw.settimeout(t)

    def getpeercert(self) -> Any:
        return self._tls.getpeercert()

    def peer_certificate(self) -> bytes | None:
        """The server's certificate as DER (also with verification off, where getpeercert() is empty)."""
        return self._tls.getpeercert(binary_form=True)

    def close(self) -> None:
        self._raw.close()


class _Reader(io.RawIOBase):
    def __init__(self, conn: TlsOverChannel) -> None:
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self._conn.recv_into(memoryview(b).cast("B"))


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    """Verify the registry's certificate against exactly this CA (not the system's store)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode("ascii"))
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
