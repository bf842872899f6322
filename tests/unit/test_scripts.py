"""The node scripts as files: shellcheck over every file and every program nodecfg assembles, the
one codec of their output, and the scripts themselves run under dash against a fake root (the paths
are arguments) with stub systemctl / docker / containerd commands: facts, apply (atomic write,
backup, mode kept, compare-and-swap, reload and verify) and rollback, without a node."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from nodecfg import configure, runtimes, scripts, smoke, tagged
from nodecfg.configure import NodePlan, apply_script, parse_apply, parse_facts, rollback_script
from nodecfg.images import parse_ref
from nodecfg.runtimes.base import SmokePlan, Want
from nodecfg.runtimes.common import FileChange, FileFact, FileState, RuntimePlan
from nodecfg.runtimes.containerd import check_effect as containerd_effect
from nodecfg.runtimes.docker import check_effect as docker_effect
from tests.unit.nodesh import FakeNode, fake_node, stub_bin

EP = "10.1.1.1:5000"
SHELLCHECK = shutil.which("shellcheck")
# per file, variables set in one file and read in another are not errors (the programs are checked
# whole); in a program, the runtimes' functions that program does not call read globals it never sets
CROSS_FILE = "SC2034,SC2154"
UNCALLED = "SC2154"


def _shellcheck(path: Path, *extra: str) -> None:
    assert SHELLCHECK, "shellcheck is not installed (Debian package shellcheck; scripts/setup.sh installs it)"
    proc = subprocess.run([SHELLCHECK, "-s", "sh", "-S", "style", *extra, str(path)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", scripts.names())
def test_every_script_file_passes_shellcheck(name: str) -> None:
    _shellcheck(Path(scripts.__file__).parent / name, "-e", CROSS_FILE)


NODE_MAINS = ("facts.sh", "apply.sh", "rollback.sh", "probe.sh", "call.sh")
MASTER_MAINS = ("master_facts.sh", "master_apply.sh", "master_down.sh", "master_copy.sh", "master_record.sh",
                "master_prune.sh")  # after master.sh


def _libraries(main: str) -> list[str]:
    if main in MASTER_MAINS:
        return [scripts.read("master.sh")]
    return [rt.shell() for rt in runtimes.registered()]


def _programs() -> dict[str, str]:
    return {main: scripts.program(main, _libraries(main), strip=False)
            for main in (*NODE_MAINS, *MASTER_MAINS)}


@pytest.mark.parametrize("main", sorted(_programs()))
def test_every_assembled_program_passes_shellcheck(main: str, tmp_path: Path) -> None:
    path = tmp_path / main
    path.write_text(_programs()[main])
    _shellcheck(path, "-e", UNCALLED)


def test_the_stripped_program_is_the_same_code() -> None:
    for main, text in _programs().items():
        stripped = scripts.program(main, _libraries(main))
        assert "\n#" not in stripped and len(stripped) < len(text)
        assert subprocess.run(["/bin/dash", "-n"], input=stripped, text=True, check=False).returncode == 0


def test_no_python_formatting_left_in_the_scripts() -> None:
    """No doubled braces of an f-string; docker's Go templates (single-quoted `--format` values, and
    master_down.sh's label lookup and mount template) are the only `{{` there."""
    for name in scripts.names():
        text = re.sub(r"--format '[^']*'|\{\{index \.Config\.Labels \\\"\$l\\\"\}\}|mount='\{\{range [^']*'"
                      r"|\"present\$tab\{\{\.Id\}\}\"", "", scripts.read(name))
        assert "{{" not in text.replace("'{{json .}}'", ""), name
        assert "{{{{" not in scripts.read(name), name


# ---------------------------------------------------------------------------------------------
# the codec


def test_codec_round_trip_and_refusals() -> None:
    line = tagged.encode("docker.pull", "0", "b64==", "")
    assert line == "docker.pull\t0\tb64==\t\n"
    (rec,) = tagged.decode(line)
    assert rec == tagged.Record("docker.pull", ("0", "b64==", "")) and rec.rest == "0\tb64==\t"
    assert rec.field(1) == "b64==" and rec.field(7) == ""
    assert tagged.last_values("a\t1\nb\nA\t2\na\t3\n") == {"a": ["3"], "b": [], "A": ["2"]}
    with pytest.raises(ValueError, match="tab or a newline"):
        tagged.encode("x", "a\tb")
    assert tagged.b64text(base64.b64encode(b"hi").decode()) == "hi" and tagged.b64text("not b64!") == "not b64!"


def test_the_shell_rec_and_the_codec_agree(tmp_path: Path) -> None:
    node = fake_node(tmp_path)
    out = node.run(scripts.script("call.sh", [], ["rec", "tag.x", "a b", "", "c'd $(x)"])).stdout
    assert out == tagged.encode("tag.x", "a b", "", "c'd $(x)") + tagged.encode("end", "call")


# ---------------------------------------------------------------------------------------------
# facts, apply and rollback against a fake root


def _active(node: FakeNode, unit: str, pid: str = "0") -> None:
    node.unit(unit, LoadState="loaded", ActiveState="active", SubState="running", Result="success",
              UnitFileState="enabled", ActiveEnterTimestampMonotonic="123", MainPID=pid, Job="")


def test_facts_on_a_fake_root(tmp_path: Path) -> None:
    node = fake_node(tmp_path)
    _active(node, "docker.service")
    _active(node, "containerd.service")
    daemon = node.path("/etc/docker/daemon.json")
    daemon.parent.mkdir(parents=True)
    daemon.write_bytes(b'{"debug": true}\n')
    daemon.chmod(0o600)
    certs = node.path("/etc/containerd/certs.d")
    (certs / "docker.io").mkdir(parents=True)
    (certs / "docker.io" / "hosts.toml").write_text('server = "https://registry-1.docker.io"\n')
    out = node.run(configure.facts_script((str(daemon), str(node.path("/etc/missing.toml"))),
                                          (str(certs),))).stdout
    facts = parse_facts(out)
    docker = facts.runtimes["docker"].service
    assert docker.installed and docker.active and docker.version == "20.10.24+dfsg1"
    assert facts.runtimes["containerd"].service.version == "1.6.20~ds1"
    assert not facts.runtimes["containers"].service.installed  # no crio, no podman on this PATH
    got = facts.file(str(daemon))
    assert got is not None and got.data == b'{"debug": true}\n' and got.mode == 0o600
    assert facts.file(str(node.path("/etc/missing.toml"))) == FileFact(
        str(node.path("/etc/missing.toml")), FileState.ABSENT)
    hosts = facts.file(str(certs / "docker.io" / "hosts.toml"))
    assert hosts is not None and hosts.exists
    # one systemctl call for every unit's state
    shows = [c for c in node.calls() if c.startswith("systemctl show")]
    assert shows == ["systemctl show docker.service containerd.service crio.service -p Id -p LoadState "
                     "-p ActiveState -p UnitFileState -p ActiveEnterTimestampMonotonic -p MainPID -p ExecStart "
                     "-p DropInPaths"]


def test_facts_turn_every_units_block_into_its_lines(tmp_path: Path) -> None:
    """facts.sh turns `systemctl show`'s blocks into `unit.` lines: each property of each unit."""
    node = fake_node(tmp_path)
    node.unit("docker.service", LoadState="loaded", ActiveState="active", UnitFileState="enabled",
              MainPID="4242", ExecStart="{ path=/usr/bin/dockerd ; argv[]=/usr/bin/dockerd -H fd:// ; ignore_errors=no }",
              DropInPaths="/etc/systemd/system/docker.service.d/a.conf /run/systemd/system/docker.service.d/b.conf")
    node.unit("containerd.service", LoadState="masked", ActiveState="inactive", UnitFileState="masked")
    facts = parse_facts(node.run(configure.facts_script()).stdout)
    docker = facts.runtimes["docker"].service
    assert docker.active and docker.main_pid == 4242
    assert docker.exec_start == ("/usr/bin/dockerd", "-H", "fd://")
    assert docker.drop_ins == ("/etc/systemd/system/docker.service.d/a.conf",
                               "/run/systemd/system/docker.service.d/b.conf")
    assert facts.runtimes["containerd"].service.masked and not facts.runtimes["containerd"].service.active
    assert not facts.runtimes["containers"].service.installed and not facts.systemd_error


def test_facts_ask_docker_its_version_by_ping_and_fork_nothing_for_a_missing_runtime(tmp_path: Path) -> None:
    node = fake_node(tmp_path, stubs=("systemctl", "curl", "dockerd"))
    _active(node, "docker.service")
    out = node.run(configure.facts_script()).stdout
    facts = parse_facts(out)
    assert facts.runtimes["docker"].service.version == "20.10.24+dfsg1"
    assert not facts.runtimes["containerd"].service.installed
    assert facts.runtimes["containerd"].service.version == ""
    calls = node.calls()
    assert [c for c in calls if c.startswith("curl")] == [
        "curl -s -o /dev/null -D - --max-time 2 --unix-socket /var/run/docker.sock http://docker/_ping"]
    assert not [c for c in calls if c.startswith("dockerd")]  # the daemon answered: no binary started


def test_facts_fall_back_to_the_binary_when_dockerd_does_not_answer(tmp_path: Path) -> None:
    node = fake_node(tmp_path, stubs=("systemctl", "dockerd"))  # no curl: as on a minimal node
    _active(node, "docker.service")
    facts = parse_facts(node.run(configure.facts_script()).stdout)
    assert facts.runtimes["docker"].service.version == "20.10.24+dfsg1"
    assert "dockerd --version" in node.calls()


def test_facts_remember_a_binarys_version_under_its_identity(tmp_path: Path) -> None:
    """lib.sh `version_of`: `containerd --version` once; the cached answer while the binary is the
    same file, unchanged; asked again when it is replaced or rewritten; a cache dir open to others,
    or an entry under another identity, is never believed."""
    node = fake_node(tmp_path)
    _active(node, "containerd.service")
    cache = tmp_path / "vc"

    def version() -> str:
        out = node.run(configure.facts_script(version_cache=str(cache))).stdout
        return parse_facts(out).runtimes["containerd"].service.version

    def asked() -> int:
        return node.calls().count("containerd --version")

    assert version() == "1.6.20~ds1" and asked() == 1
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert version() == "1.6.20~ds1" and asked() == 1  # remembered
    binary = node.stub / "bin" / "containerd"
    new = binary.with_name("containerd.new")  # an upgrade: a new file renamed over the old one
    new.write_text(binary.read_text().replace("1.6.20~ds1 1.6.20~ds1-1", "2.1.9 2.1.9-1"))
    new.chmod(0o755)
    new.rename(binary)
    assert version() == "2.1.9" and asked() == 2
    assert version() == "2.1.9" and asked() == 2
    time.sleep(1.1)  # rewritten in place, same size: its ctime moves
    binary.write_text(binary.read_text().replace("2.1.9 2.1.9-1", "2.1.8 2.1.8-1"))
    assert version() == "2.1.8" and asked() == 3
    entry = cache / "containerd.version"
    key = entry.read_text().split(" ", 1)[0]
    entry.write_text(f"{key} containerd lie 9.9.9 x\n")
    cache.chmod(0o755)  # open to others: not believed, not written
    assert version() == "2.1.8" and asked() == 4
    assert "lie" in entry.read_text()
    cache.chmod(0o700)
    entry.write_text("1:2:3:4:5 containerd lie 9.9.9 x\n")  # another binary's identity
    assert version() == "2.1.8" and asked() == 5


def test_facts_remember_the_running_dockerds_version_under_its_image(tmp_path: Path) -> None:
    """The running dockerd is asked (/_ping) once per image it runs (/proc/<pid>/exe's identity)."""
    node = fake_node(tmp_path)
    _active(node, "docker.service", pid=str(os.getpid()))  # a process of ours stands in for dockerd
    script = configure.facts_script(version_cache=str(tmp_path / "vc"))
    for _ in range(2):
        assert parse_facts(node.run(script).stdout).runtimes["docker"].service.version == "20.10.24+dfsg1"
    assert len([c for c in node.calls() if "docker/_ping" in c]) == 1
    assert not [c for c in node.calls() if c.startswith("dockerd")]


def test_facts_say_absent_without_a_process_and_stat_every_file_at_once(tmp_path: Path) -> None:
    node = fake_node(tmp_path)
    _active(node, "docker.service")
    real_stat = (node.stub / "bin" / "stat").resolve()
    (node.stub / "bin" / "stat").unlink()
    stub_bin(node.stub, stat=f'#!/bin/sh\necho "stat $*" >> "$STUB/calls"\nexec {real_stat} "$@"\n')
    plain = node.path("/etc/plain")
    plain.parent.mkdir(parents=True)
    plain.write_text("x")
    paths = (str(node.path("/etc/docker/daemon.json")),  # its dir is missing: absent
             str(plain / "daemon.json"),  # under a file: "Not a directory", absent
             str(node.path("/etc/a.json")), str(node.path("/etc/b.json")))
    for p in paths[2:]:
        Path(p).write_text("{}")
    facts = parse_facts(node.run(configure.facts_script(paths)).stdout)
    assert [facts.file(p).state for p in paths] == [  # type: ignore[union-attr]
        FileState.ABSENT, FileState.ABSENT, FileState.EXISTS, FileState.EXISTS]
    assert [facts.file(p).data for p in paths[2:]] == [b"{}", b"{}"]  # type: ignore[union-attr]
    stats = [c for c in node.calls() if c.startswith("stat")]
    # one stat for every readable file (this machine's own runtime configs among them), none for the absent
    assert len(stats) == 1 and stats[0].startswith("stat -L -c %a %u %g %s -- "), stats
    assert f" {paths[2]} {paths[3]}" in stats[0] and paths[0] not in stats[0] and paths[1] not in stats[0]


def _docker_info(endpoint: str, mirror: bool) -> str:
    return json.dumps({"RegistryConfig": {"IndexConfigs": {endpoint: {"Name": endpoint, "Secure": False}},
                                          "Mirrors": [f"http://{endpoint}/"] if mirror else []}})


def _exists(path: Path) -> FileFact:
    st = path.stat()
    return FileFact(str(path), FileState.EXISTS, path.read_bytes(), str(path), st.st_mode & 0o7777,
                    st.st_uid, st.st_gid)


def _docker_node(tmp_path: Path) -> tuple[FakeNode, Path, FileChange, dict[str, FileFact]]:
    node = fake_node(tmp_path)
    _active(node, "docker.service")
    _active(node, "containerd.service")
    daemon = node.path("/etc/docker/daemon.json")
    daemon.parent.mkdir(parents=True)
    daemon.write_text('{"debug": true}\n')
    daemon.chmod(0o600)
    new = '{\n  "debug": true,\n  "insecure-registries": ["10.1.1.1:5000"]\n}\n'
    change = FileChange(str(daemon), new, 0o644, '{"debug": true}\n', "x", validate="json")
    return node, daemon, change, {str(daemon): _exists(daemon)}


def test_apply_writes_backs_up_reloads_and_verifies(tmp_path: Path) -> None:
    node, daemon, change, files = _docker_node(tmp_path)
    (node.stub / "docker-info.json").write_text(_docker_info(EP, mirror=False))
    plan = NodePlan((RuntimePlan("docker", "configure", files=(change,), action="reload"),))
    out = node.run(apply_script(plan, files, Want(EP, ()), 5, "S1")).stdout
    report = parse_apply(out)
    assert report.complete and not report.invalid and not report.conflicts
    bak = f"{daemon}.nodecfg-S1.bak"
    assert report.written == {str(daemon): bak}
    assert daemon.read_text() == change.content and daemon.stat().st_mode & 0o777 == 0o600  # mode kept
    assert Path(bak).read_text() == '{"debug": true}\n'
    assert not list(daemon.parent.glob(".nodecfg.*"))
    assert "systemctl --no-block reload docker.service" in node.calls()
    assert report.values["settled.docker"] == "active\trunning\tsuccess\t"
    assert docker_effect(report.values["docker.info"], EP, False) is None
    assert configure._runtime_error(plan["docker"], report.values, Want(EP, ()), 5) is None
    assert report.values["after.docker"] == "active\t123"


def test_apply_verify_is_bounded_when_the_change_does_not_show(tmp_path: Path) -> None:
    node, _, change, files = _docker_node(tmp_path)
    (node.stub / "docker-info.json").write_text(_docker_info("other:5000", mirror=False))
    plan = NodePlan((RuntimePlan("docker", "configure", files=(change,), action="reload"),))
    start = time.monotonic()
    report = parse_apply(node.run(apply_script(plan, files, Want(EP, ()), 1, "S")).stdout)
    assert time.monotonic() - start < 10
    assert report.complete
    assert "does not list 10.1.1.1:5000" in (configure._runtime_error(plan["docker"], report.values,
                                                                      Want(EP, ()), 1) or "")


def test_apply_changes_nothing_when_a_file_changed_since_facts(tmp_path: Path) -> None:
    node, daemon, change, files = _docker_node(tmp_path)
    plan = NodePlan((RuntimePlan("docker", "configure", files=(change,), action="reload"),))
    daemon.write_text('{"theirs": 1}\n')
    report = parse_apply(node.run(apply_script(plan, files, Want(EP, ()), 5, "S")).stdout)
    assert report.complete and not report.written
    assert report.conflicts == {str(daemon): "changed on the node since its facts were read"}
    assert daemon.read_text() == '{"theirs": 1}\n' and not list(daemon.parent.glob("*.bak"))
    assert not [c for c in node.calls() if "--no-block" in c]  # nothing reloaded


def test_apply_refused_by_the_runtime_writes_nothing(tmp_path: Path) -> None:
    node = fake_node(tmp_path)
    conf = node.path("/etc/containerd/config.toml")
    conf.parent.mkdir(parents=True)
    conf.write_text("version = 2\n")
    change = FileChange(str(conf), "version = 2\n# broken\n", 0o644, "version = 2\n", "x", validate="containerd")
    plan = NodePlan((RuntimePlan("containerd", "configure", files=(change,), action="restart"),))
    report = parse_apply(node.run(apply_script(plan, {str(conf): _exists(conf)}, Want(EP, ()), 5)).stdout)
    assert report.invalid == {str(conf): "failed to load TOML: broken"} and not report.written
    assert conf.read_text() == "version = 2\n" and not list(conf.parent.glob(".nodecfg.*"))


def test_containerd_restart_verify_then_rollback(tmp_path: Path) -> None:
    """apply restarts containerd and verifies it by its config dump; the rollback (as after a failed
    verify) puts the old file back, removes the new hosts.toml, stops and starts containerd."""
    node = fake_node(tmp_path)
    _active(node, "containerd.service")
    conf = node.path("/etc/containerd/config.toml")
    conf.parent.mkdir(parents=True)
    conf.write_text("version = 2\n")
    conf.chmod(0o640)
    certs = node.path("/etc/containerd/certs.d")
    hosts = certs / EP / "hosts.toml"
    new_conf = ('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
                f'  config_path = "{certs}"\n')
    changes = (FileChange(str(conf), new_conf, 0o644, "version = 2\n", "x", validate="containerd"),
               FileChange(str(hosts), f'server = "http://{EP}"\n', 0o644, None, "y"))
    files = {str(conf): _exists(conf), str(hosts): FileFact(str(hosts), FileState.ABSENT)}
    rp = RuntimePlan("containerd", "configure", files=changes, action="restart")
    report = parse_apply(node.run(apply_script(NodePlan((rp,)), files, Want(EP, ()), 5, "S2")).stdout)
    assert report.complete and set(report.written) == {str(conf), str(hosts)}
    assert conf.stat().st_mode & 0o777 == 0o640 and hosts.read_text() == f'server = "http://{EP}"\n'
    assert containerd_effect(report.values["containerd.dump"], report.values["containerd.cri"], str(certs)) is None
    assert "systemctl --no-block restart containerd.service" in node.calls()

    out = node.run(rollback_script(rp, files, was_active=True, deadline=5, stamp="S2")).stdout
    records = list(tagged.decode(out))
    assert ("restored", (str(conf),)) in records and ("removed", (str(hosts),)) in records
    assert records[-1] == ("end", ("rollback",))
    assert conf.read_text() == "version = 2\n" and conf.stat().st_mode & 0o777 == 0o640
    assert not hosts.exists() and not list(conf.parent.glob("*.bak"))
    calls = node.calls()
    stop = calls.index("systemctl stop containerd.service")
    assert calls.index("systemctl --no-block start containerd.service") > stop
    assert parse_apply(out).values["after.containerd"].startswith("active\t")


def test_probe_runs_each_active_runtimes_probe(tmp_path: Path) -> None:
    node = fake_node(tmp_path)
    node.unit("docker.service", ActiveState="inactive", UnitFileState="masked")
    _active(node, "containerd.service")
    (node.stub / "containerd-dump.toml").write_text('version = 2\n')
    plan = SmokePlan(EP, parse_ref("docker.io/library/busybox:1.36"), None, ("docker.io",), False)
    vals = smoke.parse_probe(node.run(smoke.probe_script(plan, None)).stdout)
    assert vals["unit.docker"] == ["inactive", "masked"] and vals["unit.containerd"] == ["active", "enabled"]
    assert vals["unit.crio"] == ["", ""]
    assert vals["reach"] == ["curl", "7", ""]  # the stub curl reaches nothing
    assert tagged.b64text(vals["containerd.dump"][0]) == "version = 2\n"  # containerd_probe ran
    assert "docker.pull" not in vals  # docker is masked: its probe did not run


def test_docker_verify_over_tls_waits_for_the_https_mirror_only(tmp_path: Path) -> None:
    """`-S https` (the registry serves TLS): dockerd does not list it as insecure; the mirror is
    https://<endpoint>/."""
    node, daemon, change, files = _docker_node(tmp_path)
    info = {"RegistryConfig": {"IndexConfigs": {}, "Mirrors": [f"https://{EP}/"]}}
    (node.stub / "docker-info.json").write_text(json.dumps(info))
    plan = NodePlan((RuntimePlan("docker", "configure", files=(change,), action="reload"),))
    script = apply_script(plan, files, Want(EP, ("docker.io",)), 3, "S")
    start = time.monotonic()
    report = parse_apply(node.run(dataclasses.replace(script, args=(*script.args, "-S", "https"))).stdout)
    assert time.monotonic() - start < 3  # listed at once: no wait until the deadline
    assert json.loads(report.values["docker.info"]) == info
    daemon.write_text('{"debug": true}\n')  # as facts saw it, for the next run
    start = time.monotonic()
    report = parse_apply(node.run(dataclasses.replace(script, args=(*script.args, "-S", "http"))).stdout)
    assert time.monotonic() - start >= 2  # over http it waited (whole seconds) for an insecure entry, in vain
    assert "insecure" in (docker_effect(report.values["docker.info"], EP, True) or "")


# ---------------------------------------------------------------------------------------------
# the master's scripts (nodecfg/registry/container.py) against a stub docker and curl

def _inspect(cid: str, data: str, *, indent: int | None = None) -> str:
    """A container as docker describes it: its id and its /var/lib/registry mount."""
    return json.dumps({"Id": cid, "Name": f"/{cid}", "Mounts": [
        {"Type": "bind", "Source": "/etc/x", "Destination": "/auth"},
        {"Type": "bind", "Source": data, "Destination": "/var/lib/registry"}]}, indent=indent)


# the docker CLI: `inspect` prints an indented list, as docker does; two containers publish the port
MASTER_DOCKER = """#!/bin/sh
echo "$*" >> "$LOG"
case "$1 $2" in
  "version --format") echo '{"Version":"24.0.7","Os":"linux","Arch":"amd64"}';;
  "image inspect") [ "$3" = registry:2 ] && echo '[{"Id": "sha256:reg"}]';;
  "container inspect") cat "$STUB/inspect-$3.json";;
  "ps -q") printf 'aaa1\\nbbb2\\n';;
esac
"""

# docker's API through curl --unix-socket: one JSON object per answer, into each URL's -o file;
# curl for the registry: 401
MASTER_CURL = """#!/bin/sh
echo "$*" >> "$LOG.curl"
answer() {
  case "$1" in
    */version) echo '{"Version":"24.0.7","Os":"linux","Arch":"amd64"}';;
    */images/registry:2/json) echo '{"Id":"sha256:reg"}';;
    */containers/json?filters=*) echo '[{"Id":"aaa1","Names":["/registry"]},{"Id":"bbb2"}]';;
    */containers/*/json) c=${1##*/containers/}; cat "$STUB/api-${c%/json}.json";;
    *) echo '{"message":"page not found"}';;
  esac
}
case "$*" in
  *--unix-socket*)
    while [ $# -gt 0 ]; do
      case $1 in -o) answer "$3" > "$2"; shift 3;; *) shift;; esac
    done;;
  *) printf 401;;
esac
"""


@pytest.mark.parametrize("mode", ["cli", "api"])
def test_master_facts_on_a_stub_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """The master's facts from docker's CLI (no socket) and from its API on the socket DOCKER_HOST
    names: the same facts; the named container is not inspected again as a holder; each data
    directory in play counted once; no password in any argv."""
    import socket

    from nodecfg.credentials import Credentials
    from nodecfg.inventory import RegistrySettings, Secret
    from nodecfg.registry import container as master
    from nodecfg.registry import tls as tlsmod

    auth, tls, data, other = tmp_path / "auth", tmp_path / "tls", tmp_path / "data", tmp_path / "other data"
    monkeypatch.setattr(master, "AUTH_DIR", str(auth))
    monkeypatch.setattr(master, "TLS_DIR", str(tls))
    auth.mkdir()
    (auth / "htpasswd").write_text("u:$2b$10$h\n")
    files = tlsmod.TlsFiles(b"C\n", b"K\n", b"A\n")
    tls.mkdir()
    for name, content in zip(tlsmod.TLS_NAMES, files.contents(), strict=True):
        (tls / name).write_bytes(content)
    (data / "docker/registry/v2/repositories/a/_manifests").mkdir(parents=True)
    (other / "docker/registry/v2/repositories").mkdir(parents=True)
    stub = tmp_path / "stub"
    stub.mkdir()
    for name, cid, where in (("registry", "aaa1", data), ("aaa1", "aaa1", data), ("bbb2", "bbb2", other)):
        (stub / f"inspect-{name}.json").write_text(f"[\n{_inspect(cid, str(where), indent=4)}\n]\n")
        (stub / f"api-{name}.json").write_text(_inspect(cid, str(where)) + "\n")
    bin_dir = stub_bin(tmp_path, docker=MASTER_DOCKER, curl=MASTER_CURL)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(tmp_path / "log"), "STUB": str(stub),
           "TMPDIR": str(tmp_path)}
    if mode == "api":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(stub / "docker.sock"))  # a socket file is what the script looks for
        env["DOCKER_HOST"] = f"unix://{stub / 'docker.sock'}"
    else:
        env["DOCKER_HOST"] = f"unix://{stub / 'no.sock'}"  # no socket there: the CLI
    settings = RegistrySettings(address="127.0.0.1", data_dir=str(data))
    script = master.facts_script(settings, Credentials("u", Secret("Pw-never-Random-9")), 30)
    proc = subprocess.run(script.argv(), input=script.stdin, capture_output=True, check=False, cwd=tmp_path,
                          env=env)
    if mode == "api":
        sock.close()
    assert proc.returncode == 0, proc.stderr
    facts = master.parse_facts(proc.stdout.decode(), "master")
    assert facts.docker_version == "24.0.7" and facts.platform == "linux/amd64"
    assert facts.registry_image_id == "sha256:reg" and facts.container is not None
    assert facts.container["Id"] == "aaa1" and [h["Id"] for h in facts.holders] == ["bbb2"]
    assert facts.htpasswd == "u:$2b$10$h\n" and facts.tls_sums == files.sums
    assert facts.repositories == {str(data): 1, str(other): 0}
    assert proc.stdout.decode().count(f"repos\t{data}\t") == 1
    assert facts.http_status == 401 and facts.auth_status == 401
    docker_log = (tmp_path / "log").read_text() if (tmp_path / "log").exists() else ""
    curl = (tmp_path / "log.curl").read_text()
    if mode == "api":
        assert docker_log == ""  # no docker CLI at all
        assert "/containers/aaa1/json" not in curl and "/containers/bbb2/json" in curl
    else:
        assert "container inspect aaa1" not in docker_log and "container inspect bbb2" in docker_log
        assert "--unix-socket" not in curl
    assert "Pw-never-Random-9" not in " ".join(docker_log.split()) + curl  # the credentials only in curl's -K file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["auth", "bin", "data", "other data", "stub", "tls", "log.curl", *(["log"] if docker_log else [])])


# ---------------------------------------------------------------------------------------------
# backups: at most 0600, the newest N kept; rollback: compare-and-swap, only this run's temp files


def _apply_daemon(node: FakeNode, daemon: Path, content: str, stamp: str, keep: int = 3,
                  run: str = "r") -> configure.ApplyReport:
    old = daemon.read_text()
    change = FileChange(str(daemon), content, 0o644, old, "x", validate="json")
    plan = NodePlan((RuntimePlan("docker", "configure", files=(change,)),))
    return parse_apply(node.run(apply_script(plan, {str(daemon): _exists(daemon)}, Want(EP, ()), 5, stamp,
                                             run=run, keep_backups=keep)).stdout)


def test_backups_are_0600_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    """Issue 21: backups kept old credentials forever, as readable as the file was. Now each is at
    most 0600, the newest `keep` per file stay, and only nodecfg's own backup names are pruned."""
    node = fake_node(tmp_path)
    daemon = node.path("/etc/docker/daemon.json")
    daemon.parent.mkdir(parents=True)
    daemon.write_text('{"v": 0}\n')
    daemon.chmod(0o644)
    legacy = Path(f"{daemon}.nodecfg-20200101000000.bak")  # an earlier version's, world-readable
    legacy.write_text('{"auths": {"old": {"auth": "c2VjcmV0"}}}\n')
    legacy.chmod(0o644)
    theirs = [Path(f"{daemon}.nodecfg-manual.bak"), Path(f"{daemon}.bak"), Path(f"{daemon}.nodecfg-2020.bak")]
    for path in theirs:
        path.write_text("the operator's\n")
    stamps = [f"2025010100000{i}" for i in range(1, 6)]
    for i, stamp in enumerate(stamps, 1):
        report = _apply_daemon(node, daemon, f'{{"v": {i}}}\n', stamp, keep=3)
        assert report.written == {str(daemon): f"{daemon}.nodecfg-{stamp}.bak"}
    backups = sorted(p.name for p in daemon.parent.glob("daemon.json.nodecfg-2*.bak") if p not in theirs)
    assert backups == [f"daemon.json.nodecfg-{s}.bak" for s in stamps[-3:]]
    for name in backups:
        assert (daemon.parent / name).stat().st_mode & 0o777 == 0o600, name
    assert [(daemon.parent / n).read_text() for n in backups] == ['{"v": 2}\n', '{"v": 3}\n', '{"v": 4}\n']
    assert daemon.read_text() == '{"v": 5}\n' and daemon.stat().st_mode & 0o777 == 0o644  # the file's own mode
    assert all(p.read_text() == "the operator's\n" for p in theirs)  # not nodecfg's names: untouched
    assert not legacy.exists()


def test_keep_one_backup_and_a_0400_source_stays_0400(tmp_path: Path) -> None:
    node = fake_node(tmp_path)
    daemon = node.path("/etc/docker/daemon.json")
    daemon.parent.mkdir(parents=True)
    daemon.write_text('{"v": 0}\n')
    daemon.chmod(0o400)
    for i, stamp in enumerate(("20250101000001", "20250101000002"), 1):
        _apply_daemon(node, daemon, f'{{"v": {i}}}\n', stamp, keep=1)
    (backup,) = daemon.parent.glob("*.bak")
    assert backup.name == "daemon.json.nodecfg-20250101000002.bak" and backup.read_text() == '{"v": 1}\n'
    assert backup.stat().st_mode & 0o777 == 0o400  # stricter than 0600 already: kept so


def test_rollback_restores_only_what_this_run_wrote(tmp_path: Path) -> None:
    """Issue 21: the rollback put a backup back over whatever the file held by then. Now a file
    changed on the node since nodecfg wrote it is left as it is and named; the others go back."""
    node, daemon, change, files = _docker_node(tmp_path)
    other = node.path("/etc/docker/other.json")
    other.write_text('{"o": 0}\n')
    other_change = FileChange(str(other), '{"o": 1}\n', 0o644, '{"o": 0}\n', "x", validate="json")
    files[str(other)] = _exists(other)
    rp = RuntimePlan("docker", "configure", files=(change, other_change), action="none")
    report = parse_apply(node.run(apply_script(NodePlan((rp,)), files, Want(EP, ()), 5, "20250101000001",
                                               run="r1")).stdout)
    assert set(report.written) == {str(daemon), str(other)}
    daemon.write_text('{"someone": "else"}\n')  # changed on the node after nodecfg's write
    out = node.run(rollback_script(rp, files, was_active=True, deadline=5, stamp="20250101000001",
                                   run="r1")).stdout
    done = parse_apply(out)
    assert done.conflicts == {str(daemon): "changed on the node since nodecfg wrote it: left as it is"}
    assert daemon.read_text() == '{"someone": "else"}\n'
    assert Path(f"{daemon}.nodecfg-20250101000001.bak").read_text() == '{"debug": true}\n'  # kept for the operator
    assert other.read_text() == '{"o": 0}\n' and ("restored", (str(other),)) in list(tagged.decode(out))
    assert other.stat().st_mode & 0o777 == 0o644  # its own mode back, not its backup's 0600


def test_rollback_removes_only_its_own_temp_files(tmp_path: Path) -> None:
    node, daemon, change, files = _docker_node(tmp_path)
    rp = RuntimePlan("docker", "configure", files=(change,), action="none")
    ours = daemon.parent / ".nodecfg.r1.0"
    others = [daemon.parent / ".nodecfg.r2.0", daemon.parent / ".nodecfg.0.4242"]  # another run's
    for path in (ours, *others):
        path.write_text("half-written\n")
    node.run(rollback_script(rp, files, was_active=True, deadline=5, stamp="20250101000001", run="r1"))
    assert not ours.exists() and all(p.exists() for p in others)
    assert daemon.read_text() == '{"debug": true}\n'  # never replaced: as facts saw it, nothing to do


def test_rollback_after_an_apply_cut_between_backup_and_rename(tmp_path: Path) -> None:
    """The backup exists (a hard link of the file), the rename never ran: the file is as facts saw
    it, nothing is restored or reported, and the stray backup name goes."""
    node, daemon, change, files = _docker_node(tmp_path)
    bak = Path(f"{daemon}.nodecfg-20250101000001.bak")
    bak.hardlink_to(daemon)
    rp = RuntimePlan("docker", "configure", files=(change,), action="none")
    out = node.run(rollback_script(rp, files, was_active=True, deadline=5, stamp="20250101000001", run="r1")).stdout
    done = parse_apply(out)
    assert not done.conflicts and "restored" not in done.values
    assert not bak.exists() and daemon.read_text() == '{"debug": true}\n' and daemon.stat().st_mode & 0o777 == 0o600


def test_undo_apply_removes_waits_for_what_went_then_purges_backups(tmp_path: Path) -> None:
    """configure-nodes --undo on the node: a removal is backed up like a write; docker's verify
    waits until `docker info` names none of the plan's `gone`; the second apply purges every backup
    of nodecfg's of the files undone and removes the dirs left empty; a removal rolls back."""
    node, daemon, _, files = _docker_node(tmp_path)
    hosts = node.path("/etc/containerd/certs.d/docker.io/hosts.toml")
    hosts.parent.mkdir(parents=True)
    hosts.write_text("# Managed by nodecfg\n")
    Path(f"{hosts}.nodecfg-20240101000000.bak").write_text("older\n")
    files[str(hosts)] = _exists(hosts)
    (node.stub / "docker-info.json").write_text(_docker_info("other:5000", mirror=False))
    restore = FileChange(str(daemon), '{"debug": true, "x": 1}\n', 0o644, '{"debug": true}\n', "x")
    gone = FileChange(str(hosts), "", 0o644, "# Managed by nodecfg\n", "x", remove=True)
    plan = NodePlan((RuntimePlan("docker", "configure", files=(restore,), action="reload", gone=(f'"{EP}"',)),
                     RuntimePlan("containerd", "configure", files=(gone,))))
    report = parse_apply(node.run(apply_script(plan, files, Want(EP, ()), 5, "20250101000001", undo=True)).stdout)
    assert report.complete and set(report.written) == {str(daemon), str(hosts)}
    assert not hosts.exists() and Path(f"{hosts}.nodecfg-20250101000001.bak").read_text() == "# Managed by nodecfg\n"
    assert configure._runtime_error(plan["docker"], report.values, Want(EP, ()), 5, undo=True) is None
    # what went still listed: the verify waits (bounded), and the undo is refused
    (node.stub / "docker-info.json").write_text(_docker_info(EP, mirror=False))
    again = dataclasses.replace(restore, old=daemon.read_text(), content='{"debug": true}\n')
    only = NodePlan((dataclasses.replace(plan["docker"], files=(again,)),))
    values = parse_apply(node.run(apply_script(only, {str(daemon): _exists(daemon)}, Want(EP, ()), 1, "20250101000002",
                                               undo=True), check=False).stdout).values
    assert "still lists 10.1.1.1:5000" in str(configure._runtime_error(only["docker"], values, Want(EP, ()), 1,
                                                                         undo=True))
    # a removal rolls back from its backup
    node.run(rollback_script(plan["containerd"], files, was_active=True, deadline=5, stamp="20250101000001"))
    assert hosts.read_text() == "# Managed by nodecfg\n"
    hosts.unlink()
    # the second apply: nothing written, every backup of nodecfg's of those files purged, empty dirs gone
    out = node.run(apply_script(NodePlan(()), {}, Want(EP, ()), 5, "S2", undo=True, act=False,
                                purge=(str(daemon), str(hosts)), rmdirs=(str(hosts.parent),))).stdout
    assert not list(daemon.parent.glob("*.bak")) and not hosts.parent.exists()
    assert ("pruned", (f"{hosts}.nodecfg-20240101000000.bak",)) in list(tagged.decode(out))
