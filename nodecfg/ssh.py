"""SSH: one Fabric `Connection` per host, and a lean `run()` over it.

`connect(host)` builds a Fabric Connection with the host's user, port, key, timeouts and host-key
policy; `connect(host, fabric=False)` the same paramiko connection without Fabric (`Session`), for
registry-up's one master, where importing Fabric and invoke (~0.13 s) is a fifth of an unchanged
run, and configure-nodes' and smoke-test's nodes (~30 ms of CPU a run: issue 24); paramiko itself
is imported without invoke until something needs it (`_import_paramiko`).

`run(c, command, stdin=...)` executes one command on it and returns a `RunResult`; stdin may be
bytes or an iterable of byte chunks (an image stream), so a whole plan or a secret travels on stdin
and never appears in a process list. `become` wraps the command in non-interactive sudo.

Functions take the connection as their first argument, as Fabric tasks do, so a user's fabfile can
call them with its own connections.
"""

from __future__ import annotations

import contextlib
import functools
import select
import shlex
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from nodecfg.errors import HostError, UnreachableError

if TYPE_CHECKING:
    import paramiko
    from fabric import Connection

    from nodecfg.inventory import Host, Secret, SshSettings

_KNOWN_HOSTS_LOCK = threading.Lock()


def _import_paramiko() -> None:
    """Import paramiko without invoke when nothing has imported invoke yet.

    paramiko imports invoke for one thing, running the commands of `Match exec` lines in
    ssh_config; invoke imports unittest.mock and asyncio, ~0.13 s on a small machine. Fabric
    needs invoke, and `_give_paramiko_invoke()` hands it over whenever Fabric is imported or an
    ssh_config with `Match exec` is read (paramiko.config's module global `invoke`: a paramiko
    internal, checked by tests/unit/test_paramiko_internals.py)."""
    import sys

    if "paramiko" in sys.modules or "invoke" in sys.modules:
        return
    sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` raises ImportError
    try:
        import paramiko  # noqa: F401
    finally:
        if sys.modules.get("invoke", 0) is None:
            del sys.modules["invoke"]


def preload() -> None:
    """Import paramiko now (without invoke, as `_import_paramiko` says), before a connection is
    made in another thread: an import there would compete with this thread's for the one GIL."""
    _import_paramiko()
    import paramiko  # noqa: F401


def _give_paramiko_invoke() -> None:
    """The invoke paramiko would have imported (see _import_paramiko), for `Match exec`."""
    import invoke
    import paramiko.config

    if getattr(paramiko.config, "invoke", None) is None:
        paramiko.config.invoke = invoke  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RunResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def brief(self) -> str:
        """The last meaningful line of output, for one-line error messages."""
        for text in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
            if lines:
                return lines[-1]
        return f"exit code {self.exit_code}"


def _host_key_policy(mode: str, known_hosts: Path) -> paramiko.MissingHostKeyPolicy:
    _import_paramiko()
    import paramiko

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        """OpenSSH's StrictHostKeyChecking=accept-new: learn unknown hosts, refuse changed keys."""

        def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                             key: paramiko.PKey) -> None:
            client.get_host_keys().add(hostname, key.get_name(), key)
            with _KNOWN_HOSTS_LOCK:
                known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with known_hosts.open("a") as fh:
                    fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")

    class Ignore(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, *_: object) -> None:
            return None

    if mode == "strict":
        return paramiko.RejectPolicy()
    if mode == "off":
        return Ignore()
    return AcceptNew()


def apply_ssh_config(host: Host, config_text: str | None) -> tuple[Host, str]:
    """The host's settings with ~/.ssh/config filled in where the inventory said nothing, as ssh
    reads it (first match wins); and the address to connect to (HostName)."""
    import re
    from dataclasses import replace

    _import_paramiko()
    import paramiko

    if not config_text:
        return host, host.address
    if re.search(r"^\s*match\b.*\bexec\b", config_text, re.IGNORECASE | re.MULTILINE):
        _give_paramiko_invoke()
    cfg = paramiko.SSHConfig.from_text(config_text).lookup(host.address)
    s = host.ssh
    updates: dict[str, Any] = {}
    if "user" in cfg and "user" not in s.explicit:
        updates["user"] = cfg["user"]
    if "port" in cfg and "port" not in s.explicit and str(cfg["port"]).isdigit():
        updates["port"] = int(cfg["port"])
    if "identityfile" in cfg and "key" not in s.explicit:
        found = [Path(f).expanduser() for f in cfg["identityfile"] if Path(f).expanduser().is_file()]
        if found:
            updates["key"] = found[0]
    if "proxyjump" in cfg and "gateway" not in s.explicit and cfg["proxyjump"].lower() != "none":
        updates["gateway"] = cfg["proxyjump"].split(",")[0]
    if "userknownhostsfile" in cfg and "known_hosts" not in s.explicit:
        updates["known_hosts"] = Path(cfg["userknownhostsfile"].split()[0]).expanduser()
    if "connecttimeout" in cfg and "connect_timeout" not in s.explicit and cfg["connecttimeout"].isdigit():
        updates["connect_timeout"] = float(cfg["connecttimeout"])
    return replace(host, ssh=replace(s, **updates)), cfg.get("hostname", host.address)


@functools.cache
def _user_ssh_config() -> str | None:
    try:
        return Path("~/.ssh/config").expanduser().read_text()
    except OSError:
        return None


def parse_gateway(spec: str, defaults: SshSettings) -> tuple[str, str, int]:
    """`[user@]host[:port]` of a jump host -> (user, host, port): as `ssh -J`, port 22 unless
    given; the user is the host's own unless given."""
    from nodecfg.inventory import split_gateway

    try:
        user, host, port = split_gateway(spec)
    except ValueError:
        # the inventory's gateways are checked when it loads; this one came from ~/.ssh/config
        raise HostError(f"jump host {spec!r} (ProxyJump in ~/.ssh/config) is not [user@]host[:port]") from None
    return user or defaults.user, host, port or 22


_PASSPHRASES: dict[Path, Secret] = {}


def unlock_keys(keys: Iterable[Path], ask: Callable[[str], str] | None) -> None:
    """Before any host is contacted: every encrypted key gets its passphrase, asked once per key.

    Keys an ssh-agent holds need nothing (paramiko asks the agent first). Without a terminal to
    ask on (`ask` None), an encrypted key is a usage error that says what to do.
    """
    import os

    _import_paramiko()
    import paramiko

    from nodecfg.errors import UsageError
    from nodecfg.inventory import Secret

    for key in dict.fromkeys(keys):
        if key in _PASSPHRASES:
            continue
        try:
            paramiko.PKey.from_path(key)
            continue
        except (paramiko.PasswordRequiredException, TypeError):
            pass  # TypeError: what cryptography raises for an encrypted OpenSSH-format key
        except (paramiko.SSHException, OSError, ValueError) as exc:
            raise UsageError(f"SSH key {key}: cannot be read ({exc})") from None
        if os.environ.get("SSH_AUTH_SOCK"):
            continue  # the agent may hold it; if not, authentication fails with the reason
        if ask is None:
            raise UsageError(f"SSH key {key} is encrypted: add it to ssh-agent (ssh-add {key}) "
                             "or run nodecfg from a terminal to be asked for its passphrase")
        passphrase = ask(f"Passphrase for {key}: ")
        try:
            paramiko.PKey.from_path(key, password=passphrase.encode())  # type: ignore[arg-type]
        except (paramiko.SSHException, ValueError, TypeError):
            raise UsageError(f"SSH key {key}: wrong passphrase") from None
        _PASSPHRASES[key] = Secret(passphrase)


_GATEWAYS: dict[tuple[str, str, int], paramiko.SSHClient] = {}
_GATEWAYS_LOCK = threading.Lock()


def _gateway_client(host: Host) -> paramiko.SSHClient:
    """One shared, open connection per jump host: every node behind it tunnels through it."""
    from dataclasses import replace

    s = host.ssh
    assert s.gateway is not None
    user, address, port = parse_gateway(s.gateway, s)
    with _GATEWAYS_LOCK:
        client = _GATEWAYS.get((user, address, port))
        transport = client.get_transport() if client else None
        if client is None or transport is None or not transport.is_active():
            from nodecfg.inventory import Host as HostT

            gw_host = HostT(name=f"gateway {address}", address=address,
                            ssh=replace(s, user=user, port=port, gateway=None, become=False))
            client = _open_client(gw_host, None, fabric=False).client
            _GATEWAYS[(user, address, port)] = client
        return client


def close_gateways() -> None:
    with _GATEWAYS_LOCK:
        for client in _GATEWAYS.values():
            with contextlib.suppress(Exception):
                client.close()
        _GATEWAYS.clear()


def connect(host: Host, *, fabric: bool = True, give_up_at: float | None = None) -> Connection:
    """A Fabric Connection for `host`, opened (with `fabric=False` a `Session`: the same paramiko
    connection without importing Fabric). Raises HostError with the reason if it can't be.

    With `ssh.gateway`, the connection is tunnelled (direct-tcpip) through a shared connection to
    the jump host, as `ssh -J` does.

    `give_up_at` (a time.monotonic()): the connection's socket is shut down then, wherever paramiko
    waits on it (the connect, the banner, a command, a channel), so everything on it fails at once;
    `close()` calls that off (nodecfg/deadline.py).
    """
    _import_paramiko()
    import paramiko

    sock = None
    host, target = apply_ssh_config(host, _user_ssh_config())
    s = host.ssh
    if s.gateway:
        try:
            gw = _gateway_client(host)
        except HostError as exc:
            raise UnreachableError(f"{host.address}: through gateway {s.gateway}: {exc}") from None
        transport = gw.get_transport()
        assert transport is not None
        try:
            sock = transport.open_channel("direct-tcpip", (target, s.port), ("127.0.0.1", 0),
                                          timeout=_capped(s.connect_timeout, give_up_at))
        except (paramiko.SSHException, OSError) as exc:
            raise UnreachableError(f"{s.user}@{host.address}:{s.port}: unreachable through gateway "
                                   f"{s.gateway} ({exc})") from None
    return _open_client(host, sock, target, fabric=fabric, give_up_at=give_up_at)


def _capped(seconds: float, give_up_at: float | None) -> float:
    """`seconds`, or less when `give_up_at` comes sooner."""
    return seconds if give_up_at is None else max(0.1, min(seconds, give_up_at - time.monotonic()))


_WATCHDOGS: weakref.WeakKeyDictionary[Any, threading.Timer] = weakref.WeakKeyDictionary()


def _cut_at(client: paramiko.SSHClient, sock: Any, when: float) -> None:
    """Shut `sock` (a TCP socket, or a channel through the jump host) down at `when`."""
    def cut() -> None:
        with contextlib.suppress(Exception):
            if isinstance(sock, socket.socket):
                sock.shutdown(socket.SHUT_RDWR)
            else:
                sock.close()

    timer = threading.Timer(max(0.0, when - time.monotonic()), cut)
    timer.daemon = True
    _WATCHDOGS[client] = timer
    timer.start()


def _gcm_first(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """A paramiko Transport that offers AES-GCM first (paramiko's own order puts it last, after CTR
    with an HMAC): one pass of C per packet instead of a cipher and an HMAC object made in Python
    for each 32 KB, on both ends; what a push of image layers through the connection spends its
    CPU on. Every other cipher stays offered, in paramiko's order, for servers without GCM."""
    import paramiko

    t = paramiko.Transport(sock, **kwargs)
    opts = t.get_security_options()
    gcm = tuple(c for c in opts.ciphers if c.endswith("-gcm@openssh.com"))
    opts.ciphers = gcm + tuple(c for c in opts.ciphers if c not in gcm)
    return t


@dataclass(frozen=True, eq=False)
class Session:
    """An open SSH connection without Fabric: what nodecfg uses of a Fabric Connection (`client`,
    `host`, `close()`), so `run` and every function here take either."""

    host: str
    user: str
    port: int
    client: paramiko.SSHClient

    def close(self) -> None:
        self.client.close()


def _open_client(host: Host, sock: object, target: str | None = None, *, fabric: bool = True,
                 give_up_at: float | None = None) -> Connection:
    _import_paramiko()
    import paramiko

    s = host.ssh
    kwargs: dict[str, Any] = {
        "banner_timeout": s.connect_timeout,
        "auth_timeout": s.connect_timeout,
    }
    if s.key is not None:
        kwargs["key_filename"] = str(s.key)
        if s.key in _PASSPHRASES:
            kwargs["passphrase"] = _PASSPHRASES[s.key].reveal()
    if sock is not None:
        kwargs["sock"] = sock
    client = paramiko.SSHClient()
    known_hosts = s.known_hosts or Path("~/.ssh/known_hosts").expanduser()
    if s.host_key_checking != "off" and known_hosts.exists():
        with _KNOWN_HOSTS_LOCK:
            client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(_host_key_policy(s.host_key_checking, known_hosts))
    c: Connection
    if fabric:
        from fabric import Config
        from fabric import Connection as FabricConnection

        _give_paramiko_invoke()
        # ~/.ssh/config was applied above, with the inventory's precedence: Fabric must not redo it
        c = FabricConnection(target or host.address, user=s.user, port=s.port, connect_timeout=s.connect_timeout,
                             connect_kwargs=kwargs, config=Config(overrides={"load_ssh_configs": False}))
        c.client = client
        opening = c.open
    else:
        c = cast("Connection", Session(target or host.address, s.user, s.port, client))

        def opening() -> None:  # what Fabric's Connection.open() asks of paramiko
            client.connect(target or host.address, port=s.port, username=s.user, timeout=s.connect_timeout,
                           transport_factory=_gcm_first, **kwargs)
    where = f"{s.user}@{host.address}:{s.port}"
    try:
        if give_up_at is not None:  # our own socket, to cut at give_up_at
            if sock is None:
                sock = socket.create_connection((target or host.address, s.port),
                                                timeout=_capped(s.connect_timeout, give_up_at))
            kwargs["sock"] = sock
            if fabric:
                c.connect_kwargs["sock"] = sock
            _cut_at(client, sock, give_up_at)
        opening()
    except paramiko.BadHostKeyException:
        raise HostError(
            f"host key for {where} has CHANGED (it differs from {known_hosts}); refusing to connect. "
            "If the host was rebuilt, remove its old key with: ssh-keygen -R "
            f"{host.address if s.port == 22 else f'[{host.address}]:{s.port}'}"
            f" -f {known_hosts}"
        ) from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise HostError(f"{where}: host key unknown and host_key_checking is strict") from None
        if isinstance(exc, paramiko.AuthenticationException):
            raise HostError(f"{where}: SSH authentication failed ({exc})") from None
        raise HostError(f"{where}: SSH error: {exc}") from None
    except TimeoutError:
        raise UnreachableError(f"{where}: unreachable (no answer within {s.connect_timeout:g}s)") from None
    except OSError as exc:
        raise UnreachableError(f"{where}: unreachable ({exc.strerror or exc})") from None
    return c


def close(c: Connection | LocalConnection) -> None:
    client = getattr(c, "client", None)
    timer = _WATCHDOGS.pop(client, None) if client is not None else None
    if timer is not None:
        timer.cancel()
    with contextlib.suppress(Exception):
        c.close()


def wrap_become(command: str, become: bool, prompt: str | None = None) -> str:
    """`command` run as root through sudo when `become`: non-interactive (`sudo -n`), or, with
    `prompt` (`--ask-become-pass`), sudo reading the password from stdin after printing `prompt` on
    stderr; the command itself then prints `become_ok(prompt)` before it starts. `run` answers the
    prompt only when it appears, and sends the command's stdin only after the ok line: a sudo that
    asks for nothing (NOPASSWD, cached credentials) never gets the password on its stdin."""
    if not become:
        return command
    if prompt is None:
        return f"sudo -n -H -- sh -c {shlex.quote(command)}"
    inner = f"printf '%s\\n' {shlex.quote(become_ok(prompt))}; exec sh -c {shlex.quote(command)}"
    return f"sudo -S -p {shlex.quote(prompt)} -H -- sh -c {shlex.quote(inner)}"


def become_prompt() -> str:
    """A prompt no program prints by chance: sudo's prompt is recognised by it alone."""
    import secrets

    return f"[nodecfg-sudo-{secrets.token_hex(8)}] password: "


def become_ok(prompt: str) -> str:
    return prompt.split("]", 1)[0].lstrip("[") + "-ok"


def _sudo_handshake(chan: paramiko.Channel, prompt: str, password: Secret, deadline: float | None,
                    host: str) -> tuple[bytes, bytes]:
    """Wait for sudo: answer its prompt once with the password, until the command's ok line comes.
    Returns what came after the ok line on stdout, and stderr so far (without the prompt)."""
    ok = (become_ok(prompt) + "\n").encode()
    wanted = prompt.encode()
    out, err = bytearray(), bytearray()
    answered = False
    while True:
        if ok in out:
            return bytes(out.split(ok, 1)[1]), bytes(err)
        if wanted in err:
            if answered:
                raise HostError(f"{host}: sudo refused the become password (asked again)")
            err = bytearray(err.replace(wanted, b"", 1))
            chan.sendall((password.reveal() + "\n").encode())
            answered = True
            continue
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
            raise HostError(f"{host}: sudo failed: {lines[-1].strip() if lines else 'no answer'}")
        wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
        if deadline is not None and wait == 0:
            raise HostError(f"{host}: sudo did not answer in time")
        select.select([chan], [], [], wait)
        while chan.recv_ready():
            out += chan.recv(65536)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)


def run(c: Connection | LocalConnection, command: str, *, stdin: bytes | Iterable[bytes] | None = None,
        become: bool = False, become_password: Secret | None = None,
        timeout: float | None = None) -> RunResult:
    """Run `command` over `c`, feeding `stdin`, and collect its output and exit code.

    A failed command is a RunResult with a non-zero exit code, not an exception; a broken
    connection or a timeout raises HostError.
    """
    _import_paramiko()
    import paramiko

    if isinstance(c, LocalConnection):
        return run_local(command, stdin=stdin, timeout=timeout)
    prompt = become_prompt() if become and become_password is not None else None
    full = wrap_become(command, become, prompt)
    transport = c.client.get_transport()
    if transport is None or not transport.is_active():
        raise HostError(f"{c.host}: SSH connection is closed")
    deadline = time.monotonic() + timeout if timeout else None
    try:
        chan = transport.open_session(timeout=timeout or 30)
        chan.exec_command(full)
        out, err = bytearray(), bytearray()
        if prompt is not None and become_password is not None:
            try:
                first_out, first_err = _sudo_handshake(chan, prompt, become_password, deadline, c.host)
            except HostError:
                chan.close()
                raise
            out += first_out
            err += first_err
        if stdin is not None:
            chunks = [stdin] if isinstance(stdin, bytes) else stdin
            for chunk in chunks:
                chan.sendall(chunk)
        chan.shutdown_write()
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if deadline is not None and wait == 0:
                chan.close()
                raise HostError(f"{c.host}: command timed out after {timeout:g}s")
            step = min(wait, 0.5) if wait is not None else 0.5
            if chan.eof_received and not chan.exit_status_ready() and not chan.recv_ready() \
                    and not chan.recv_stderr_ready():
                # all output is in; only the exit status is to come. The channel's pipe stays
                # readable after EOF, so a select would return at once, again and again (~300 turns
                # a command, ~3 ms of CPU here, holding the GIL the transport thread needs to read
                # that status): wait for the status itself (bench/profile_node.py, issue 24)
                chan.status_event.wait(step)
                continue
            select.select([chan], [], [], step)
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            drained = not chan.recv_ready() and not chan.recv_stderr_ready()
            if chan.exit_status_ready() and drained and (chan.closed or chan.eof_received):
                break  # exit status in, and nothing left that raced with it
        code = chan.recv_exit_status()
        chan.close()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise HostError(f"{c.host}: SSH connection lost: {exc}") from None
    return RunResult(command, code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


class LocalConnection:
    """Stands in for a Connection when the "master" is this machine (registry-up without -i)."""

    host = "localhost"

    def close(self) -> None:
        return None


def run_local(command: str, *, stdin: bytes | Iterable[bytes] | None = None,
              timeout: float | None = None) -> RunResult:
    """`run` on this machine: the same contract, through `sh -c`."""
    import subprocess

    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    if stdin is None or isinstance(stdin, bytes):
        data = stdin or b""
    else:  # a stream: feed it from a thread so a chatty command can't deadlock us
        chunks = stdin
        assert proc.stdin is not None
        pipe = proc.stdin

        def feed() -> None:
            with contextlib.suppress(BrokenPipeError):
                for chunk in chunks:
                    pipe.write(chunk)
            with contextlib.suppress(BrokenPipeError):
                pipe.close()

        threading.Thread(target=feed, daemon=True).start()
        proc.stdin = None  # communicate() must not touch it
        data = None
    try:
        out, err = proc.communicate(input=data, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise HostError(f"localhost: command timed out after {timeout:g}s") from None
    return RunResult(command, proc.returncode, out.decode("utf-8", "replace"),
                     err.decode("utf-8", "replace"))
