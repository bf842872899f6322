"""The master side's pure parts: htpasswd, container spec comparison, scripts, facts parsing."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nodecfg import ssh
from nodecfg.credentials import Credentials
from nodecfg.errors import HostError, UsageError
from nodecfg.inventory import RegistryAuth, RegistrySettings, Secret
from nodecfg.registry import container, master, replica, up
from nodecfg.registry.auth import htpasswd_line, htpasswd_matches
from nodecfg.registry.container import ContainerSpec, parse_facts

SPEC = ContainerSpec(image_id="sha256:aaa", port=5000, data_dir="/var/lib/registry", auth=False)


def test_htpasswd_is_bcrypt_and_checkable() -> None:
    line = htpasswd_line(Credentials("puller", Secret("pa:ss word")))
    user, hashed = line.strip().split(":", 1)
    assert user == "puller" and hashed.startswith("$2")
    assert htpasswd_matches(line, Credentials("puller", Secret("pa:ss word")))
    assert not htpasswd_matches(line, Credentials("puller", Secret("other")))
    assert not htpasswd_matches(line, Credentials("someone", Secret("pa:ss word")))
    assert not htpasswd_matches(None, Credentials("puller", Secret("x")))
    assert not htpasswd_matches("garbage", Credentials("puller", Secret("x")))


def test_htpasswd_accepted_by_apache_format_checkers_if_available() -> None:
    # the registry (Go bcrypt) accepts $2b$; cross-check with python's crypt-free bcrypt parse
    line = htpasswd_line(Credentials("u", Secret("p")))
    assert line.count(":") == 1 and line.endswith("\n")


def test_scripts_keep_the_password_off_argv() -> None:
    """The password only travels base64-encoded on the script's stdin, never in its code or argv."""
    settings = RegistrySettings(address="127.0.0.1", auth=RegistryAuth("puller", password_env="X"))
    creds = Credentials("puller", Secret('s3cr"et\\pw'))
    for script in (container.facts_script(settings, creds, 30),
                   container.apply_script(SPEC, "create", settings, 30, htpasswd="puller:$2b$hash\n", auth=creds)):
        assert "s3cr" not in script.command() and "$2b$hash" not in script.command()
        lines = script.stdin.decode().splitlines()
        assert base64.b64decode(lines[0]) == b'user = "puller:s3cr\\"et\\\\pw"\n'
        # and the program is valid shell
        assert subprocess.run(["sh", "-n"], input=script.program, text=True, check=False).returncode == 0
    assert base64.b64decode(lines[1]) == b"puller:$2b$hash\n"  # apply's htpasswd, next on stdin


def test_parse_facts() -> None:
    container = [{"Id": "abc", "Image": "sha256:aaa"}]
    version = {"Version": "20.10.24+dfsg1", "Os": "linux", "Arch": "arm64", "Components": []}
    out = "\n".join([
        f"version\t{json.dumps(version)}",
        'regimage\t{"Id":"sha256:reg","RepoTags":["registry:2"]}',
        f"container\t{json.dumps(container)}",
        "http\t401",
    ])
    facts = parse_facts(out, "master")
    assert facts.docker_version == "20.10.24+dfsg1" and facts.platform == "linux/arm64"
    assert facts.registry_image_id == "sha256:reg"
    assert facts.container == container[0]
    assert facts.http_status == 401
    empty = parse_facts("version\t\ncontainer\t\nhttp\t000\n", "master")
    assert empty.container is None and empty.http_status == 0 and not empty.docker_version
    # docker's API answers one object where `docker inspect` prints a list; an error is no object
    api = parse_facts('container\t{"Id":"abc"}\nregimage\t{"message":"No such image: registry:2"}\n'
                      'holder\t{"message":"No such container: x"}\nholder\t{"Id":"h1"}\n', "master")
    assert api.container == {"Id": "abc"} and api.registry_image_id == "" and api.holders == ({"Id": "h1"},)


# ---------------------------------------------------------------------------------------------
# issue 12: values reach the master's scripts as data, never as shell text

HOSTILE_USER = "u\nNODECFG_EOF\ntouch {pwned}\ncat <<'NODECFG_EOF'"


def _stub_bin(tmp_path: Path) -> Path:
    """`docker` and `curl` stand-ins, so a master script can really run here, unprivileged."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\necho stub-id\n")
    (bin_dir / "curl").write_text("#!/bin/sh\necho 200\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def _run_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, username: str, password: str,
               data_dir: str) -> subprocess.CompletedProcess[str]:
    auth_dir = tmp_path / "auth"
    monkeypatch.setattr(container, "AUTH_DIR", str(auth_dir))
    monkeypatch.setattr(container, "STATE_DIR", str(tmp_path / "state"))
    spec = ContainerSpec("sha256:aaa", 5000, data_dir, auth=True)
    settings = RegistrySettings(address="127.0.0.1", data_dir=data_dir)
    htpasswd = f"{username}:$2b$10$hash\n"
    script = container.apply_script(spec, "recreate", settings, 30, htpasswd=htpasswd,
                                    auth=Credentials(username, Secret(password)))
    env = {"PATH": f"{_stub_bin(tmp_path)}:/usr/bin:/bin"}
    return subprocess.run(script.argv(), input=script.stdin.decode(), text=True, capture_output=True, env=env,
                          cwd=tmp_path, check=False)


def test_a_username_cannot_end_the_htpasswd_here_doc(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The reproduction of issue 12 (2): a newline in the username ended the here-doc and the lines
    after it ran as root. The script is run for real here (stub docker/curl, a temp AUTH_DIR)."""
    pwned = tmp_path / "pwned"
    user = HOSTILE_USER.format(pwned=pwned)
    proc = _run_apply(tmp_path, monkeypatch, user, "pw", str(tmp_path / "data"))
    assert not pwned.exists(), proc.stderr
    # the file holds exactly the bytes it was given
    assert (tmp_path / "auth" / "htpasswd").read_text() == f"{user}:$2b$10$hash\n"


def test_shell_metacharacters_in_values_are_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = "o'brien$x`id`", "p\"w'$(touch pwned)\\`x`"
    data_dir = str(tmp_path / "d $(touch pwned) 'q'")
    proc = _run_apply(tmp_path, monkeypatch, user, password, data_dir)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "pwned").exists()
    assert Path(data_dir).is_dir()
    assert (tmp_path / "auth" / "htpasswd").read_text().startswith(f"{user}:$2b$")


def test_curl_config_holds_the_credentials_on_one_line() -> None:
    """A newline in a value would add curl options (`output = ...`): curl's own escapes instead."""
    script = container.facts_script(RegistrySettings(address="127.0.0.1"), Credentials("a\nurl = x", Secret('p"\\\t\r')),
                                    30)
    assert base64.b64decode(script.stdin.splitlines()[0]).decode() == 'user = "a\\nurl = x:p\\"\\\\\\t\\r"\n'
    with pytest.raises(ValueError, match="NUL"):
        Credentials("a\0", Secret("p")).curl_config()


def test_credentials_never_show_the_password() -> None:
    """Every repr a traceback, a log or a dataclass dump would print: the password is not in it."""
    from dataclasses import dataclass

    from nodecfg.runtimes.base import Want

    creds = Credentials("puller", Secret("hunter2-s3cret"))
    want = Want("m:5000", ("docker.io",), creds)

    @dataclass(frozen=True)
    class Holder:
        creds: Credentials | None

    for shown in (repr(creds), str(creds), repr(want), str(want), repr(Holder(creds)), f"{creds}"):
        assert "hunter2" not in shown and "puller" in shown, shown
    assert creds.authorization() == "Basic " + base64.b64encode(b"puller:hunter2-s3cret").decode()


def test_a_garbled_master_answer_is_one_line() -> None:
    with pytest.raises(HostError, match=r"^master: the master's answer is garbled \(its htpasswd line"):
        parse_facts('version\t{"Version":"1"}\nhtpasswd\tnot base64!!\n', "master")


def test_down_script_passes_its_values_as_arguments() -> None:
    settings = RegistrySettings(address="127.0.0.1", data_dir="/srv/a b;c")
    script = container.down_script(settings, 30, purge=True)
    assert "/srv/a b;c" in script.args and script.args[-1] == "-p"
    assert "a b;c" not in script.program and " '/srv/a b;c' " in script.command()


def test_registry_image_on_neither_side_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 (7): this path raised NameError (`docker` was imported for typing only)."""
    from nodecfg.push import dockerengine

    calls: list[str] = []

    def fake_run(c: object, command: str, **_: object) -> ssh.RunResult:
        calls.append(command)
        return ssh.RunResult(command, 0, 'version\t{"Version":"24.0.7"}\nregimage\t\nhttp\t000\n', "")

    monkeypatch.setattr(dockerengine, "inspect_image", lambda ref: None)
    monkeypatch.setattr(master.ssh, "run", fake_run)
    monkeypatch.setattr(replica.Replica, "_ask_early", lambda self: None)  # no registry answers yet
    with pytest.raises(UsageError, match=r"registry:2 is neither on the master nor on this machine"):
        up.registry_up(None)
    assert len(calls) == 1 and calls[0].startswith("sh -c ")  # facts only: nothing was loaded or started


# ---------------------------------------------------------------------------------------------
# issue 14: pushes go to the registry container's own address, past docker's userland proxy

def _running(port: str = "5000", inner: str = "5000/tcp", networks: dict[str, Any] | None = None,
             running: bool = True) -> dict[str, Any]:
    return {"Id": "c1", "State": {"Running": running},
            "HostConfig": {"PortBindings": {inner: [{"HostIp": "", "HostPort": port}]}},
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}} if networks is None
                                else networks}}


@pytest.mark.parametrize(("running", "route"), [
    (_running(), ("172.17.0.2", 5000)),
    (_running(inner="443/tcp"), ("172.17.0.2", 443)),  # a registry published from another port
    (_running(running=False), None),
    (_running(port="5001"), None),  # it does not publish the inventory's port
    (_running(networks={"host": {"IPAddress": ""}}), None),  # --network host: 127.0.0.1 it is
    (_running(networks={"macvlan0": {"IPAddress": "10.9.0.5"}}), None),  # not the host's own bridge
    (_running(inner="5000/udp"), None),
    (None, None),
])
def test_route_to_the_container(running: dict[str, Any] | None, route: tuple[str, int] | None) -> None:
    assert container.MasterFacts(container=running).route(5000) == route


def test_port_forwards_fall_back_to_loopback_when_sshd_refuses_the_container() -> None:
    """sshd may refuse a forward to the container's address (PermitOpen): 127.0.0.1:<port> then,
    and the refused target is not asked again."""
    import paramiko

    from nodecfg.push import channels as remote

    asked: list[tuple[str, int]] = []

    class Transport:
        logger = __import__("logging").getLogger("test.transport")

        def is_active(self) -> bool:
            return True

        def open_channel(self, kind: str, dest: tuple[str, int], *_: object, **__: object) -> object:
            asked.append(dest)
            if dest[0] != "127.0.0.1":
                raise paramiko.ChannelException(1, "Administratively prohibited")
            return type("Chan", (), {"settimeout": lambda self, t: None})()

    class Client:
        def get_transport(self) -> Transport:
            return Transport()

    c = type("C", (), {"client": Client(), "host": "master"})()
    connect = remote.connector(c, 5000, route=("172.17.0.2", 5000))
    connect().connect()
    connect().connect()
    assert asked == [("172.17.0.2", 5000), ("127.0.0.1", 5000), ("127.0.0.1", 5000)]


# ---------------------------------------------------------------------------------------------
# issue 22: S3 storage — its keys and the http.secret in a 0600 env file, never on a command line

def test_s3_container_spec_keeps_every_secret_off_argv() -> None:
    s3 = container.S3Spec("http://10.0.0.30:8333", "registry", "us-east-1")
    spec = ContainerSpec("sha256:aaa", 5000, "", auth=False, s3=s3)
    args = spec.run_args("registry:2")
    assert "REGISTRY_STORAGE=s3" in args and "REGISTRY_STORAGE_S3_REGIONENDPOINT=http://10.0.0.30:8333" in args
    assert "REGISTRY_STORAGE_S3_SECURE=false" in args and "REGISTRY_STORAGE_S3_FORCEPATHSTYLE=true" in args
    assert args[args.index("--env-file") + 1] == f"{container.AUTH_DIR}/{container.ENV_FILE}"
    assert not any(a.endswith(":/var/lib/registry") for a in args)  # no data directory at all
    assert spec.digest != ContainerSpec("sha256:aaa", 5000, "", auth=False).digest
    env = container.secret_env(Secret("AKIA-1"), Secret("s3cr3t"), Secret("http-s3cret"))
    assert "s3cr3t" not in repr(env) and container.http_secret_of(env) == Secret("http-s3cret")
    settings = RegistrySettings(address="10.0.0.10")
    script = container.apply_script(spec, "create", settings, 30, env_file=env)
    assert "s3cr3t" not in script.command() and "AKIA" not in script.command()
    assert base64.b64decode(script.stdin.splitlines()[-1]) == (
        b"REGISTRY_STORAGE_S3_ACCESSKEY=AKIA-1\nREGISTRY_STORAGE_S3_SECRETKEY=s3cr3t\nREGISTRY_HTTP_SECRET=http-s3cret\n")
    with pytest.raises(UsageError, match="single line"):
        container.secret_env(Secret("a\nb"), Secret("s"), Secret("h"))


def test_the_env_file_round_trips_through_the_facts_as_a_secret() -> None:
    env = "REGISTRY_HTTP_SECRET=kept-one\n"
    facts = parse_facts(f'version\t{{"Version":"1"}}\nenvfile\t{base64.b64encode(env.encode()).decode()}\n', "m")
    assert facts.env_file == Secret(env) and "kept-one" not in repr(facts)
    assert container.http_secret_of(facts.env_file) == Secret("kept-one")
    assert container.http_secret_of(None) is None
    inspect = {"Id": "c1", "Config": {"Env": ["REGISTRY_STORAGE=s3", "REGISTRY_STORAGE_S3_SECRETKEY=s3cr3t",
                                               "REGISTRY_HTTP_SECRET=kept-one", "PATH=/bin"]}}
    facts = parse_facts(f"container\t{json.dumps(inspect)}\n", "m")
    assert facts.container is not None and "s3cr3t" not in json.dumps(facts.container)
    assert facts.container["Config"]["Env"] == ["REGISTRY_STORAGE=s3", "REGISTRY_STORAGE_S3_SECRETKEY=***",
                                                "REGISTRY_HTTP_SECRET=***", "PATH=/bin"]
