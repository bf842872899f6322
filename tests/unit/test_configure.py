"""configure-nodes' pure parts: facts parsing, the node plan, the apply and rollback scripts.

The scripts are pure functions of the plan and the facts, so the file-handling part of the apply
script (exact bytes, compare-and-swap, modes, symlinks) is run here with `sh` against a temp dir."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from nodecfg.configure import (
    FACTS_END,
    FactsError,
    NodeFacts,
    NodePlan,
    apply_script,
    facts_script,
    parse_apply,
    parse_facts,
    plan_node,
    refuse_unsafe,
    rollback_script,
    target_mode,
    unified_diff,
    unknown_paths,
)
from nodecfg.inventory import parse_inventory
from nodecfg.runtimes.base import Want
from nodecfg.runtimes.common import FileChange, FileFact, FileState, RuntimePlan, mask_secrets
from nodecfg.scripts import NodeScript

FACTS = Path(__file__).parent / "fixtures" / "facts"
INV = parse_inventory("master: {address: 172.29.77.10}\nnodes: [172.29.77.11]\n", "inv.yaml")
UNITS = ("unit.docker\tLoadState=loaded\nunit.docker\tActiveState=active\n"
         "unit.containerd\tLoadState=loaded\nunit.containerd\tActiveState=active\n"
         "bin.docker\t/usr/sbin/dockerd\nbin.containerd\t/usr/bin/containerd\n"
         "version.docker\tDocker version 20.10.24+dfsg1\n"
         "version.containerd\tcontainerd github.com/containerd/containerd 1.6.20~ds1 x\n")


def _tar(files: dict[str, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


def facts_output(files: dict[str, bytes | str], *, tar_rc: int = 0, certs: str = "listed",
                 archive: str | None = None, end: bool = True) -> str:
    """What the facts script prints for `files` (path -> bytes, or "absent" / "unreadable:<why>"
    / "link:<target>:<bytes>"), in its record format."""
    lines = [UNITS.rstrip("\n"), f"dir\t/etc/containerd/certs.d\t{certs}"]
    data: dict[str, bytes] = {}
    for path, what in files.items():
        if what == "absent":
            lines.append(f"path\t{path}\tabsent")
        elif isinstance(what, str) and what.startswith("unreadable:"):
            lines.append(f"path\t{path}\tunreadable\t{what.split(':', 1)[1]}")
        else:
            real, raw = path, what
            if isinstance(what, str):  # link:<target>:<text>
                _, real, text = what.split(":", 2)
                raw = text.encode()
            assert isinstance(raw, bytes)
            lines.append(f"path\t{path}\tfile\t{real}\t600 0 0 {len(raw)}")
            data[path] = raw
    if data:
        lines += [f"files\t{archive if archive is not None else _tar(data)}", f"tar\t{tar_rc}"]
    if end:
        lines.append(FACTS_END)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# facts: exists / absent / unreadable, complete or not

PARSE_CASES = [
    # name, files, options, path -> expected state (and a reason fragment)
    ("exists", {"/etc/docker/daemon.json": b"{}\n"}, {}, {"/etc/docker/daemon.json": ("exists", "")}),
    ("absent", {"/etc/docker/daemon.json": "absent"}, {}, {"/etc/docker/daemon.json": ("absent", "")}),
    ("permission", {"/etc/containerd/config.toml": "unreadable:Permission denied"}, {},
     {"/etc/containerd/config.toml": ("unreadable", "Permission denied")}),
    ("truncated-archive", {"/etc/docker/daemon.json": b"{}\n"}, {"archive": _tar({"x": b"y" * 2000})[:200]},
     {"/etc/docker/daemon.json": ("unreadable", "damaged")}),
    ("not-base64", {"/etc/docker/daemon.json": b"{}\n"}, {"archive": "tar: /etc/docker: Cannot open"},
     {"/etc/docker/daemon.json": ("unreadable", "damaged")}),
    ("tar-failed", {"/etc/docker/daemon.json": b"{}\n"}, {"archive": _tar({}), "tar_rc": 2},
     {"/etc/docker/daemon.json": ("unreadable", "tar exit 2")}),
    ("changed-while-read", {"/etc/docker/daemon.json": b"{}\n"},
     {"archive": _tar({"/etc/docker/daemon.json": b"{}"})},
     {"/etc/docker/daemon.json": ("unreadable", "changed while it was read")}),
    ("hosts-in-listed-dir", {}, {}, {"/etc/containerd/certs.d/docker.io/hosts.toml": ("absent", "")}),
    ("hosts-in-unreadable-dir", {}, {"certs": "unreadable\tPermission denied"},
     {"/etc/containerd/certs.d/docker.io/hosts.toml": ("unreadable", "Permission denied")}),
    ("symlink", {"/etc/docker/daemon.json": "link:/srv/cfg/daemon.json:{}\n"}, {},
     {"/etc/docker/daemon.json": ("exists", "")}),
]


@pytest.mark.parametrize(("files", "options", "expected"), [c[1:] for c in PARSE_CASES],
                         ids=[c[0] for c in PARSE_CASES])
def test_parse_facts_file_states(files: dict[str, bytes | str], options: dict[str, object],
                                 expected: dict[str, tuple[str, str]]) -> None:
    facts = parse_facts(facts_output(files, **options))  # type: ignore[arg-type]
    for path, (state, reason) in expected.items():
        fact = facts.file(path)
        assert fact is not None and fact.state.value == state, (path, fact)
        assert reason in fact.reason


def test_a_file_that_could_not_be_read_is_never_taken_for_absent() -> None:
    """The defect: a truncated archive made daemon.json "absent" and the plan wrote a fresh one."""
    out = facts_output({"/etc/docker/daemon.json": b'{"log-driver": "journald"}\n'},
                       archive=_tar({"x": b"y" * 4000})[:300])
    facts = parse_facts(out)
    plan = plan_node(facts, INV, None)
    assert "/etc/docker/daemon.json" in [f.path for f in plan.files]  # the planner saw nothing...
    _, unreadable = refuse_unsafe(plan, facts)
    assert "/etc/docker/daemon.json" in unreadable  # ...so the node fails instead of writing


def test_incomplete_facts_fail() -> None:
    with pytest.raises(FactsError, match="incomplete"):
        parse_facts(facts_output({"/etc/docker/daemon.json": b"{}\n"}, end=False))
    with pytest.raises(FactsError, match="incomplete"):
        parse_facts("")
    # cut in the middle of the archive line: no end marker either
    with pytest.raises(FactsError):
        parse_facts(facts_output({"/etc/docker/daemon.json": b"{}\n"})[:-40])


def test_no_unit_states_is_a_systemd_error_not_absent_runtimes() -> None:
    out = "error.systemctl\tFailed to connect to bus: No such file or directory\n" + FACTS_END + "\n"
    assert parse_facts(out).systemd_error == "Failed to connect to bus: No such file or directory"


def test_non_utf8_config_is_refused_not_rewritten() -> None:
    latin1 = b'{"labels": ["caf\xe9"]}\n'
    facts = parse_facts(facts_output({"/etc/docker/daemon.json": latin1,
                                      "/etc/containerd/config.toml": "absent"}))
    fact = facts.file("/etc/docker/daemon.json")
    assert fact is not None and fact.data == latin1  # bytes kept as they are
    plan, unreadable = refuse_unsafe(plan_node(facts, INV, None), facts)
    assert not unreadable
    assert plan["docker"].status == "failed" and plan["docker"].files == ()
    assert "not UTF-8" in plan["docker"].note and "0xe9" in plan["docker"].note
    assert plan["containerd"].status == "configure"  # the other runtime is not held back


def test_unknown_paths_ask_for_a_second_look() -> None:
    out = facts_output({}).replace(
        "unit.docker\tLoadState=loaded", "unit.docker\tLoadState=loaded\nunit.docker\tExecStart="
        "{ path=/usr/sbin/dockerd ; argv[]=/usr/sbin/dockerd --config-file /srv/d.json ; }")
    facts = parse_facts(out)
    assert unknown_paths(plan_node(facts, INV, None), facts) == ("/etc/containerd/config.toml", "/srv/d.json")


def test_parse_facts_from_a_real_node() -> None:
    facts = parse_facts((FACTS / "configured-bookworm.txt").read_text())
    d, c = facts.runtimes["docker"], facts.runtimes["containerd"]
    assert d.service.installed and d.service.active and not d.service.masked
    assert d.service.version == "20.10.24+dfsg1" and d.service.major == 20
    assert d.cmdline[0] == "/usr/sbin/dockerd" and "--containerd=/run/containerd/containerd.sock" in d.cmdline
    assert c.service.version == "1.6.20~ds1" and c.service.major == 1
    assert c.config_toml and "config_path" in c.config_toml
    assert "/etc/containerd/certs.d/docker.io/hosts.toml" in c.hosts
    assert facts.file("/root/.docker/config.json") == FileFact("/root/.docker/config.json", FileState.ABSENT)


def test_configured_node_plans_nothing() -> None:
    facts = parse_facts((FACTS / "configured-bookworm.txt").read_text())
    plan = plan_node(facts, INV, None)
    assert plan.files == ()
    assert plan["docker"].action == plan["containerd"].action == "none"


def test_fresh_node_plans_files_and_actions() -> None:
    text = (FACTS / "configured-bookworm.txt").read_text()
    fresh = "\n".join(ln for ln in text.splitlines()
                      if ("\t/etc/docker/" not in ln and "/certs.d/" not in ln) or ln.startswith("dir\t"))
    fresh = fresh.replace("path\t/root/", "path\t/etc/docker/daemon.json\tabsent\npath\t/root/")
    facts = parse_facts(fresh + "\n")
    plan, unreadable = refuse_unsafe(plan_node(facts, INV, None), facts)
    assert not unreadable and unknown_paths(plan, facts) == ()
    paths = [f.path for f in plan.files]
    assert "/etc/docker/daemon.json" in paths
    assert "/etc/containerd/certs.d/registry.k8s.io/hosts.toml" in paths
    assert "/etc/containerd/config.toml" not in paths  # config_path was already there
    assert plan["docker"].action == "reload" and plan["containerd"].action == "none"


def test_masked_runtime_is_skipped() -> None:
    text = (FACTS / "configured-bookworm.txt").read_text().replace(
        "unit.docker\tUnitFileState=enabled", "unit.docker\tUnitFileState=masked")
    plan = plan_node(parse_facts(text), INV, None)
    assert plan["docker"].status == "masked" and plan["docker"].files == ()


def test_facts_script_run_locally(tmp_path: Path) -> None:
    """The real facts script against a temp dir: a symlink gives its target, a dangling one and a
    directory are unreadable, a missing file is absent, bytes come back exact."""
    raw = b"caf\xe9 = 1\n"
    (tmp_path / "managed").mkdir()
    (tmp_path / "managed" / "daemon.json").write_bytes(raw)
    (tmp_path / "daemon.json").symlink_to(tmp_path / "managed" / "daemon.json")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    (tmp_path / "adir").mkdir()
    certs = tmp_path / "certs.d"
    (certs / "docker.io").mkdir(parents=True)
    (certs / "docker.io" / "hosts.toml").write_text('server = "https://registry-1.docker.io"\n')
    paths = tuple(str(tmp_path / n) for n in ("daemon.json", "dangling.json", "adir", "missing.json"))
    out = subprocess.run(facts_script(paths, (str(certs),)).argv(), capture_output=True,
                         text=True, check=True, timeout=30).stdout
    facts = parse_facts(out)
    link = facts.file(paths[0])
    assert link is not None and link.exists and link.data == raw
    assert link.real_path == str(tmp_path / "managed" / "daemon.json")
    assert link.mode is not None and link.uid == os.getuid()
    dangling, adir, missing = (facts.file(p) for p in paths[1:])
    assert dangling is not None and dangling.state is FileState.UNREADABLE and "missing file" in dangling.reason
    assert adir is not None and adir.state is FileState.UNREADABLE and "not a regular file" in adir.reason
    assert missing == FileFact(paths[3], FileState.ABSENT)
    hosts = facts.file(str(certs / "docker.io" / "hosts.toml"))
    assert hosts is not None and hosts.exists
    assert facts.file(str(certs / "quay.io" / "hosts.toml")) == FileFact(
        str(certs / "quay.io" / "hosts.toml"), FileState.ABSENT)


# ---------------------------------------------------------------------------------------------
# --diff and --json never show a credential, whatever the file


SECRET_CASES = [
    ("containerd-registry-configs",
     '[plugins."io.containerd.grpc.v1.cri".registry.configs."harbor.corp".auth]\n'
     '  username = "robot"\n  password = "S3cr3t-Pass"\n  auth = "cm9ib3Q6UzNjcjN0"\n'
     '  identitytoken = "id-tok-123"\n',
     ["S3cr3t-Pass", "cm9ib3Q6UzNjcjN0", "id-tok-123"], ["robot", "username"]),
    ("hosts-toml-header",
     'server = "https://registry-1.docker.io"\n[host."https://m.corp".header]\n'
     '  Authorization = "Basic dXNlcjpodW50ZXIy"\n  X-Trace = ["Bearer tok.en.value"]\n',
     ["dXNlcjpodW50ZXIy", "tok.en.value"], ["https://m.corp", "X-Trace"]),
    ("inline-table", 'configs = { "x" = { auth = { password = "pw-inline-1" } } }\n',
     ["pw-inline-1"], ["configs"]),
    ("multiline-string", 'password = """\nline-one-secret\n"""\n', ["line-one-secret"], []),
    ("docker-config-json",
     '{\n  "auths": {\n    "h:5000": {\n      "auth": "dTpwYXNzd29yZA=="\n    },\n'
     '    "q.io": {"identitytoken": "eyJtoken", "registrytoken": "reg-tok"}\n  },\n'
     '  "credsStore": "pass"\n}\n',
     ["dTpwYXNzd29yZA==", "eyJtoken", "reg-tok"], ["h:5000", "credsStore", "pass"]),
    ("minified-json", '{"auths":{"h":{"auth":"bWluaWZpZWQ6cHc="}}}', ["bWluaWZpZWQ6cHc="], ['"h"']),
    ("broken-toml", 'password = "kept-out-1"\n[broken\n', ["kept-out-1"], ["[broken"]),
]


@pytest.mark.parametrize(("old", "secrets", "kept"), [c[1:] for c in SECRET_CASES],
                         ids=[c[0] for c in SECRET_CASES])
def test_diff_masks_credentials_already_in_the_file(old: str, secrets: list[str], kept: list[str]) -> None:
    new = old + "\n# nodecfg was here\n"
    change = FileChange("/etc/containerd/config.toml", new, 0o644, old, "x")
    diff = unified_diff(change)
    for secret in secrets:
        assert secret not in diff
        assert secret not in mask_secrets(old)
    for text in kept:
        assert text in mask_secrets(old)
    assert "***" in mask_secrets(old) and "+# nodecfg was here" in diff
    assert change.content == new  # what is written is untouched


def test_diff_of_a_changed_secret_still_shows_the_line_changed() -> None:
    change = FileChange("/x.toml", 'password = "new-one-99"\n', 0o600, 'password = "old-one-11"\n', "x")
    diff = unified_diff(change)
    assert "old-one-11" not in diff and "new-one-99" not in diff
    assert '-password = "***"' in diff and '+password = "***"' in diff


def test_diff_hides_files_nodecfg_writes_credentials_into() -> None:
    secret = FileChange("/root/.docker/config.json", "TOKEN", 0o600, None, "creds", secret=True)
    assert "TOKEN" not in unified_diff(secret)
    plain = FileChange("/etc/docker/daemon.json", '{"b": 2}\n', 0o644, '{"a": 1}\n', "x")
    assert '-{"a": 1}' in unified_diff(plain) and '+{"b": 2}' in unified_diff(plain)


# ---------------------------------------------------------------------------------------------
# the apply script: exact bytes, compare-and-swap, modes, symlinks; run locally with sh


def _plan(*changes: FileChange, docker_action: str = "none", containerd_action: str = "none") -> NodePlan:
    docker = tuple(c for c in changes if "docker" in c.path)
    containerd = tuple(c for c in changes if "docker" not in c.path)
    return NodePlan((RuntimePlan("containerd", "configure", files=containerd, action=containerd_action),
                     RuntimePlan("docker", "configure", files=docker, action=docker_action)))


def _exists(path: Path, real: Path | None = None) -> FileFact:
    st = (real or path).stat()
    return FileFact(str(path), FileState.EXISTS, (real or path).read_bytes(), str(real or path),
                    st.st_mode & 0o7777, st.st_uid, st.st_gid)


def _run(script: NodeScript) -> str:
    proc = subprocess.run(script.argv(), input=script.stdin, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


def test_apply_script_is_valid_shell_and_orders_its_steps() -> None:
    changes = (FileChange("/etc/docker/daemon.json", '{"a": 1}\n', 0o644, None, "x", validate="json"),
               FileChange("/etc/containerd/config.toml", "version = 2\n", 0o644, "old", "y",
                          validate="containerd"))
    files = {c.path: FileFact(c.path, FileState.ABSENT) for c in changes}
    script = apply_script(_plan(*changes, docker_action="reload", containerd_action="restart"),
                          files, Want("10.1.1.1:5000", ("docker.io",)), 20)
    assert subprocess.run(["sh", "-n"], input=script.program, text=True, check=False).returncode == 0
    args = script.args
    assert args[:6] == ("-t", "20", "-e", "10.1.1.1:5000", "-m", "docker.io")
    # containerd first (docker talks to it): its file is the first, validated by containerd
    first = args.index("-F")
    assert args[first:first + 9] == ("-F", "/etc/containerd/config.toml", "/etc/containerd/config.toml",
                                     "644", "-", "containerd", "containerd", "absent", "-")
    # docker's reload is done and verified before containerd's restart can hold its job queue
    actions = [args[i + 1:i + 4] for i, a in enumerate(args) if a == "-A"]
    assert actions == [("docker", "docker", "reload"), ("containerd", "containerd", "restart")]
    # the contents travel on stdin, one base64 line per file, in order
    lines = script.stdin.splitlines()
    assert [base64.b64decode(x) for x in lines] == [b"version = 2\n", b'{"a": 1}\n']
    # restarts are queued, never waited for without a deadline
    assert "systemctl --no-block" in script.program and "systemctl restart" not in script.program


def test_apply_writes_exact_bytes_keeps_link_mode_and_owner(tmp_path: Path) -> None:
    managed = tmp_path / "managed"
    managed.mkdir()
    target = managed / "daemon.json"
    target.write_text('{"debug": true}\n')
    target.chmod(0o600)
    link = tmp_path / "etc" / "daemon.json"
    link.parent.mkdir()
    link.symlink_to(target)
    new_file = tmp_path / "etc" / "certs.d" / "x" / "hosts.toml"
    content = '{"debug": true, "labels": ["café ☃"]}\n'  # not ASCII: written as these exact bytes
    changes = (FileChange(str(link), content, 0o644, '{"debug": true}\n', "x"),
               FileChange(str(new_file), 'server = "x"\n', 0o644, None, "y"))
    files = {str(link): _exists(link, target), str(new_file): FileFact(str(new_file), FileState.ABSENT)}
    report = parse_apply(_run(apply_script(_plan(*changes), files, Want("e:5000", ()), 5, "STAMP")))
    assert report.complete and not report.invalid and not report.conflicts
    assert link.is_symlink() and link.resolve() == target  # the link is kept
    assert target.read_bytes() == content.encode()  # its target edited, exactly
    assert target.stat().st_mode & 0o777 == 0o600  # with its mode
    assert (managed / "daemon.json.nodecfg-STAMP.bak").read_text() == '{"debug": true}\n'
    assert report.written == {str(link): str(managed / "daemon.json.nodecfg-STAMP.bak"),
                              str(new_file): None}
    assert new_file.read_text() == 'server = "x"\n' and new_file.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.rglob(".nodecfg.*"))  # no temp files left


@pytest.mark.parametrize("what", ["changed", "created", "relinked"])
def test_apply_writes_nothing_when_a_file_changed_since_facts(tmp_path: Path, what: str) -> None:
    """Compare-and-swap: a target that is not what facts saw fails the node, naming the file, and
    nothing at all is written (not even the other files)."""
    a, b = tmp_path / "a.json", tmp_path / "b.toml"
    a.write_text('{"a": 1}\n')
    files = {str(a): _exists(a), str(b): FileFact(str(b), FileState.ABSENT)}
    changes = (FileChange(str(a), '{"a": 2}\n', 0o644, '{"a": 1}\n', "x"),
               FileChange(str(b), 'k = "v"\n', 0o644, None, "y"))
    script = apply_script(_plan(*changes), files, Want("e:5000", ()), 5, "S")
    if what == "changed":  # someone edited a.json after the facts were read
        a.write_text('{"a": 1, "theirs": true}\n')
    elif what == "created":
        b.write_text("theirs = 1\n")
    else:
        a.rename(tmp_path / "elsewhere.json")
        a.symlink_to(tmp_path / "elsewhere.json")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    report = parse_apply(_run(script))
    assert report.complete and not report.written
    name = str(b) if what == "created" else str(a)
    assert name in report.conflicts and "since its facts were read" in report.conflicts[name]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert not list(tmp_path.glob("*.bak")) and not list(tmp_path.glob(".nodecfg.*"))


def test_apply_script_quotes_every_value_from_a_node(tmp_path: Path) -> None:
    """A path that came from a node (a config_path) with shell syntax in it is only ever a path."""
    evil = tmp_path / "$(touch PWNED) `touch PWNED2`; x" / "it's.toml"
    change = FileChange(str(evil), 'k = "$(id)"\n', 0o644, None, "x")
    report = parse_apply(_run(apply_script(_plan(change), {str(evil): FileFact(str(evil), FileState.ABSENT)},
                                           Want("e:5000", ()), 5)))
    assert report.written == {str(evil): None}
    assert evil.read_text() == 'k = "$(id)"\n'
    assert not (Path.cwd() / "PWNED").exists() and not (tmp_path / "PWNED").exists()
    assert not (Path.cwd() / "PWNED2").exists()


def test_target_mode() -> None:
    plain = FileChange("/etc/docker/daemon.json", "{}", 0o644, "{}", "x")
    secret = FileChange("/etc/containerd/certs.d/h/hosts.toml", "x", 0o600, "y", "x", secret=True)
    kept = FileFact(plain.path, FileState.EXISTS, b"{}", plain.path, 0o600, 0, 0)
    assert target_mode(plain, kept) == 0o600  # an existing file keeps its mode
    assert target_mode(plain, FileFact(plain.path, FileState.ABSENT)) == 0o644  # a new one: planned
    open_file = FileFact(secret.path, FileState.EXISTS, b"y", secret.path, 0o644, 0, 0)
    assert target_mode(secret, open_file) == 0o600  # credentials never left readable by others


def test_rollback_restores_backups_and_removes_new_files(tmp_path: Path) -> None:
    old, new = tmp_path / "config.toml", tmp_path / "certs.d" / "h" / "hosts.toml"
    old.write_text("version = 2\n")
    old.chmod(0o640)
    files = {str(old): _exists(old), str(new): FileFact(str(new), FileState.ABSENT)}
    changes = (FileChange(str(old), "version = 2\nnew = 1\n", 0o644, "version = 2\n", "x"),
               FileChange(str(new), 'server = "s"\n', 0o644, None, "y"))
    plan = _plan(*changes)
    report = parse_apply(_run(apply_script(plan, files, Want("e:5000", ()), 5, "S1")))
    assert report.written and old.read_text() == "version = 2\nnew = 1\n" and new.exists()
    script = rollback_script(plan["containerd"], files, was_active=False, deadline=5, stamp="S1")
    out = _run(script)
    assert f"restored\t{old}" in out and f"removed\t{new}" in out
    assert old.read_text() == "version = 2\n" and old.stat().st_mode & 0o777 == 0o640
    assert not new.exists() and not list(tmp_path.glob("*.bak"))


def test_rollback_cancels_a_hung_start_then_starts_with_the_old_config() -> None:
    change = FileChange("/etc/containerd/config.toml", "x", 0o644, "y", "x")
    files = {change.path: FileFact(change.path, FileState.EXISTS, b"y", change.path, 0o644, 0, 0)}
    script = rollback_script(RuntimePlan("containerd", "configure", files=(change,), action="restart"),
                             files, was_active=True, deadline=20, stamp="1", run="r1")
    assert subprocess.run(["sh", "-n"], input=script.program, text=True, check=False).returncode == 0
    assert script.args == ("-t", "20", "-r", "containerd", "-u", "containerd", "-a", "restart", "-w", "1",
                           "-R", "r1", "-F", "/etc/containerd/config.toml", "/etc/containerd/config.toml", "0",
                           "/etc/containerd/config.toml.nodecfg-1.bak", hashlib.sha256(b"x").hexdigest(),
                           hashlib.sha256(b"y").hexdigest(), "644")
    # run against stubs: tests/unit/test_scripts.py


def test_parse_apply_summarises_node_errors() -> None:
    noise = "x" * 5000
    out = (f"invalid\t/etc/containerd/config.toml\tfailed to load TOML: {noise}\n"
           "conflict\t/etc/docker/daemon.json\tchanged on the node since its facts were read\n")
    report = parse_apply(out)
    assert not report.complete
    assert len(report.invalid["/etc/containerd/config.toml"]) <= 300
    assert report.conflicts == {"/etc/docker/daemon.json": "changed on the node since its facts were read"}


def test_node_facts_file_lookup_needs_a_look() -> None:
    facts = parse_facts(facts_output({}))
    assert isinstance(facts, NodeFacts)
    assert facts.file("/srv/elsewhere/daemon.json") is None  # never looked at: not "absent"
    assert hashlib.sha256(b"").hexdigest() == FileFact("x", FileState.EXISTS, b"").sha256
