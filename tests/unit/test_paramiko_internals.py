"""The paramiko internals nodecfg relies on, checked on the installed paramiko.

- nodecfg/cri/tunnel.py's `open_streamlocal_channel`: the names and signatures of the private
  methods it calls, the source of the paramiko steps it copies, and a stream-local channel opened,
  refused and timed out against a real in-process paramiko SSH server.
- nodecfg/ssh.py: paramiko imports without invoke, and `Match exec` runs with the invoke handed to
  the module global `paramiko.config.invoke`.

When one of these fails, paramiko moved something nodecfg relies on. For tunnel.py: read paramiko's
new `Transport.open_channel`, `_parse_channel_open_success` and `_parse_channel_open_failure`, bring
`open_streamlocal_channel` in line, then update the fingerprints below. For ssh.py: read the top of
paramiko/config.py and `_import_paramiko` / `_give_paramiko_invoke`. Then set the paramiko pin in
pyproject.toml to the versions checked.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import tokenize
from collections.abc import Iterator

import paramiko
import pytest

from nodecfg import ssh
from nodecfg.cri.tunnel import STREAMLOCAL, open_streamlocal_channel

WHAT_TO_DO = ("paramiko {version} moved an internal that {where} uses ({what}); see the docstring of "
              "tests/unit/test_paramiko_internals.py for what to check and update")

# The token stream (no comments, docstrings or layout) of the paramiko functions whose steps
# open_streamlocal_channel repeats or relies on: the same in paramiko 3.4.0, 4.0.0, 5.0.0 and 5.1.0.
FINGERPRINTS = {
    "open_channel": "46b9aedc5cd1f80e",
    "_parse_channel_open_success": "a36c5664a46a8506",
    "_parse_channel_open_failure": "60b6aec4d40b0669",
}

# name -> the parameters it must take (what tunnel.py passes)
METHODS = {
    (paramiko.Transport, "_next_channel"): ["self"],
    (paramiko.Transport, "_send_user_message"): ["self", "data"],
    (paramiko.Channel, "__init__"): ["self", "chanid"],
    (paramiko.Channel, "_set_transport"): ["self", "transport"],
    (paramiko.Channel, "_set_window"): ["self", "window_size", "max_packet_size"],
}


def _loud(what: str, where: str = "nodecfg/cri/tunnel.py's open_streamlocal_channel") -> str:
    return WHAT_TO_DO.format(version=paramiko.__version__, what=what, where=where)


def fingerprint(func: object) -> str:
    """sha256 of a function's tokens, its docstring, comments and line layout left out."""
    source = textwrap.dedent(inspect.getsource(func))  # type: ignore[arg-type]
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT, tokenize.ENDMARKER)]
    body = tokens[next(i for i, t in enumerate(tokens) if t.string == ":") + 1:]  # after `def ...(...)...:`
    if body and body[0].type == tokenize.STRING:
        body = body[1:]  # the docstring
    return hashlib.sha256(" ".join(t.string for t in body).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_the_paramiko_steps_open_streamlocal_channel_copies_are_unchanged(name: str) -> None:
    got = fingerprint(getattr(paramiko.Transport, name))
    assert got == FINGERPRINTS[name], _loud(f"Transport.{name} changed: fingerprint {got}")


@pytest.mark.parametrize(("owner", "name"), list(METHODS))
def test_the_private_methods_keep_their_signatures(owner: type, name: str) -> None:
    method = getattr(owner, name, None)
    assert callable(method), _loud(f"{owner.__name__}.{name} is gone")
    params = list(inspect.signature(method).parameters)
    assert params == METHODS[(owner, name)], _loud(f"{owner.__name__}.{name}{params} takes other arguments")


def test_the_channel_open_message_type_is_there() -> None:
    from paramiko.common import cMSG_CHANNEL_OPEN

    assert cMSG_CHANNEL_OPEN == bytes([90]), _loud("paramiko.common.cMSG_CHANNEL_OPEN")


# -- a real paramiko SSH server over a socketpair ---------------------------------------------------


class _Server(paramiko.ServerInterface):
    """Logs in anyone (auth none); answers stream-local opens as told, after `answer` is set."""

    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.kinds: list[str] = []
        self.answer = threading.Event()
        self.answer.set()

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        self.kinds.append(kind)
        self.answer.wait(10)
        if kind == STREAMLOCAL and self.accept:
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _Pair:
    def __init__(self, accept: bool) -> None:
        a, b = socket.socketpair()
        self.server = _Server(accept)
        self.server_side = paramiko.Transport(b)
        self.server_side.add_server_key(paramiko.ECDSAKey.generate())
        self.server_side.start_server(threading.Event(), server=self.server)  # returns at once
        self.client = paramiko.Transport(a)
        self.client.start_client(timeout=10)
        self.client.auth_none("nodecfg")

    def close(self) -> None:
        self.server.answer.set()
        self.client.close()
        self.server_side.close()


@pytest.fixture
def pair() -> Iterator[_Pair]:
    p = _Pair(accept=True)
    yield p
    p.close()


@pytest.fixture
def refusing() -> Iterator[_Pair]:
    p = _Pair(accept=False)
    yield p
    p.close()


def test_a_streamlocal_channel_carries_bytes_both_ways(pair: _Pair) -> None:
    chan = open_streamlocal_channel(pair.client, "/run/containerd/containerd.sock", 10)
    far = pair.server_side.accept(10)
    assert far is not None and pair.server.kinds == [STREAMLOCAL], _loud("the channel did not reach the server")
    chan.sendall(b"ping" * 10000)
    got = b""
    while len(got) < 40000:
        got += far.recv(65536)
    far.sendall(got[::-1])
    back = b""
    while len(back) < 40000:
        back += chan.recv(65536)
    assert back == b"gnip" * 10000, _loud("bytes did not round-trip through the channel")
    chan.close()
    assert far.recv(10) == b"", _loud("closing the channel did not reach the server")


def test_a_refused_open_raises_and_its_log_line_is_dropped(refusing: _Pair,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="paramiko")
    with pytest.raises(paramiko.SSHException) as info:
        open_streamlocal_channel(refusing.client, "/nowhere.sock", 10)
    assert isinstance(info.value, paramiko.ChannelException), _loud(f"a refusal raised {info.value!r}")
    refused = [r for r in caplog.records if "open FAILED" in r.getMessage()]
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not refused and not failed, _loud(
        f"the refusal was logged ({[r.getMessage() for r in failed]}): _QuietRefusals no longer matches it")
    # the transport goes on: a second open is answered too
    with pytest.raises(paramiko.ChannelException):
        open_streamlocal_channel(refusing.client, "/nowhere.sock", 10)


def test_an_unanswered_open_times_out_and_a_late_channel_is_closed(pair: _Pair) -> None:
    pair.server.answer.clear()
    with pytest.raises(paramiko.SSHException, match=r"no answer .* within 0\.3s"):
        open_streamlocal_channel(pair.client, "/slow.sock", 0.3)
    pair.server.answer.set()  # the server now says yes: nobody reads that channel, so nodecfg closes it
    far = pair.server_side.accept(10)
    assert far is not None
    far.settimeout(10)
    assert far.recv(10) == b"", _loud("a channel opened after the timeout was not closed")


# -- nodecfg/ssh.py: paramiko without invoke, then invoke handed over --------------------------------

SSH_PY = "nodecfg/ssh.py's _import_paramiko / _give_paramiko_invoke"


def test_paramiko_imports_without_invoke() -> None:
    probe = ("import sys\nfrom nodecfg import ssh\nssh.preload()\nimport paramiko.config\n"
             "print('invoke' in sys.modules, paramiko.config.invoke)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.split() == ["False", "None"], _loud(
        f"importing paramiko without invoke gave {proc.stdout.strip()!r} {proc.stderr.strip()[-300:]!r}", SSH_PY)


def test_match_exec_runs_with_the_invoke_handed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    import paramiko.config

    assert hasattr(paramiko.config, "invoke"), _loud("paramiko.config.invoke is gone", SSH_PY)
    monkeypatch.setattr(paramiko.config, "invoke", None)  # as imported by ssh._import_paramiko
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # invoke.run reads stdin; pytest's refuses
    ssh._give_paramiko_invoke()
    config = paramiko.SSHConfig.from_text("Match exec true\n    User matched\n")
    assert config.lookup("node")["user"] == "matched", _loud("Match exec did not run", SSH_PY)
