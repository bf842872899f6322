"""Issue 16: what registry-up may do to what it finds on the master (own / foreign / adopt /
refuse), as a table of `docker inspect` fixtures in and decisions out; and the master scripts that
leave nothing behind, run for real against a stub docker."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nodecfg.inventory import RegistrySettings, TlsSettings
from nodecfg.registry import adopt, replica, results, tls
from nodecfg.registry import container as reg
from nodecfg.registry.adopt import Found, Want, existing, plan_container, ss_process
from tests.unit.nodesh import stub_bin

AUTH = reg.AUTH_DIR
RECIPE_DATA = "/mnt/registry"


def container(name: str = "registry", *, own: bool | str = False, data: str | None = RECIPE_DATA,
              port: str = "5000", running: bool = True, auth: bool = False, auth_mount: bool = False,
              image: str = "registry:2", image_id: str = "sha256:aaa", restart: str = "always",
              volume: str = "", cport: str = "5000/tcp", env: list[str] | None = None) -> dict[str, Any]:
    """`docker container inspect` of one container, as docker 20.10 prints it."""
    labels = {}
    if own is True:
        labels = {adopt.MANAGED_LABEL: "1", adopt.LEGACY_LABEL: "d1"}
    elif own == "legacy":  # made by nodecfg before ownership labels
        labels = {adopt.LEGACY_LABEL: "d1"}
    mounts = []
    if data is not None:
        mounts.append({"Type": "volume", "Name": volume, "Source": data, "Destination": "/var/lib/registry"}
                      if volume else {"Type": "bind", "Source": data, "Destination": "/var/lib/registry"})
    if auth_mount:
        mounts.append({"Type": "bind", "Source": AUTH, "Destination": "/auth"})
    if any(e.startswith("REGISTRY_HTTP_TLS_CERTIFICATE=/certs/tls.crt") for e in env or []):
        mounts.append({"Type": "bind", "Source": reg.TLS_DIR, "Destination": "/certs"})
    return {
        "Id": f"{name}-id", "Name": f"/{name}", "Image": image_id, "State": {"Running": running},
        "Config": {"Image": image, "Labels": labels,
                   "Env": ["PATH=/bin", *(["REGISTRY_AUTH=htpasswd"] if auth else []), *(env or [])]},
        "HostConfig": {"PortBindings": {cport: [{"HostIp": "", "HostPort": port}]} if port else {},
                       "RestartPolicy": {"Name": restart}},
        "Mounts": mounts,
    }


def want(*explicit: str, data_dir: str = "/var/lib/registry", port: int = 5000, auth: bool = False,
         replace: bool = False, tls: bool = False) -> Want:
    return Want("registry", port, data_dir, auth, "sha256:aaa", "registry:2", frozenset(explicit), replace, tls)


def found(named: dict[str, Any] | None = None, *holders: dict[str, Any], http: int = 200,
          auth_status: int = 0, process: str = "", repos: dict[str, int] | None = None) -> Found:
    n = existing(named, AUTH, reg.TLS_DIR) if named else None
    return Found(n, tuple(existing(h, AUTH, reg.TLS_DIR) for h in holders), process, http, auth_status,
                 repos if repos is not None else {RECIPE_DATA: 37, "/var/lib/registry": -1})


OWN = {"own": True, "data": "/var/lib/registry"}
TLS_ENV = ["REGISTRY_HTTP_TLS_CERTIFICATE=/certs/tls.crt", "REGISTRY_HTTP_TLS_KEY=/certs/tls.key"]

# (id, want, found, action, substrings of the refusal / reasons / note)
TABLE: list[tuple[str, Want, Found, str, tuple[str, ...]]] = [
    # nothing there
    ("fresh master", want(), found(http=0), "create", ("no registry container",)),
    # nodecfg's own container: brought to the spec as before
    ("own, same", want(), found(container(**OWN)), "keep", ()),
    ("own, legacy label only", want(), found(container(own="legacy", data="/var/lib/registry")), "keep", ()),
    ("own, stopped", want(), found(container(**OWN, running=False)), "start", ("container stopped",)),
    ("own, not answering", want(), found(container(**OWN), http=0), "restart", ("not answering",)),
    ("own, other image", want(), found(container(**OWN, image_id="sha256:old")), "recreate",
     ("registry image changed",)),
    ("own, other port", want(), found(container(**OWN, port="5001")), "recreate", ("port 5001 -> 5000",)),
    ("own, restart policy", want(), found(container(**OWN, restart="no")), "recreate",
     ("restart policy is not always",)),
    ("own, auth now asked", want("auth", auth=True), found(container(**OWN)), "recreate", ("auth enabled",)),
    ("own, auth dropped", want(), found(container(**OWN, auth=True, auth_mount=True)), "recreate",
     ("auth disabled",)),
    ("own, TLS now asked", want(tls=True), found(container(**OWN)), "recreate", ("TLS enabled",)),
    ("own, TLS kept", want(tls=True), found(container(**OWN, env=TLS_ENV), http=401), "keep", ()),
    ("own, TLS dropped", want(), found(container(**OWN, env=TLS_ENV), http=400), "recreate", ("TLS disabled",)),
    ("recipe registry, TLS asked", want(tls=True), found(container(), http=0), "refuse",
     ("serves plain HTTP and registry.tls asks for HTTPS", "--replace")),
    ("foreign TLS registry, TLS asked", want(tls=True), found(container(env=["REGISTRY_HTTP_TLS_CERTIFICATE=/x"])),
     "refuse", ("a certificate nodecfg did not make", "--replace")),
    # an unset registry.data_dir never moves the data of nodecfg's own container
    ("own, other data dir, data_dir unset", want(), found(container(own=True, data="/srv/reg")), "keep",
     ("kept its data directory /srv/reg",)),
    ("own, other data dir, data_dir set", want("data_dir"), found(container(own=True, data="/srv/reg")),
     "recreate", ("data directory /srv/reg -> /var/lib/registry",)),
    ("own, new port held by a container", want("port", port=5002),
     found(container(**OWN), container("web", data=None, port="5002", cport="80/tcp", image="nginx")),
     "refuse", ("port 5002", "container 'web' (nginx)", "registry.port")),
    # the recipe's registry: adopted as it is
    ("recipe registry, data_dir unset", want(), found(container()), "adopt",
     ("adopted", "/mnt/registry (37 repositories)", "port 5000", "no login")),
    ("recipe registry, data_dir names it", want("data_dir", data_dir=RECIPE_DATA), found(container()), "adopt",
     ("adopted",)),
    ("recipe registry, stopped", want(), found(container(running=False), http=0), "start",
     ("adopted container stopped",)),
    ("recipe registry in a named volume", want(), found(container(data="/var/lib/docker/volumes/reg/_data",
                                                                  volume="reg")), "adopt", ("data in reg",)),
    ("registry under another name on the port", want(), found(None, container("myreg")), "adopt",
     ("'myreg'",)),
    ("recipe registry with its login, inventory's works", want("auth", auth=True),
     found(container(auth=True), auth_status=200), "adopt", ("with its own login",)),
    # the recipe's registry: refused, naming the one setting
    ("recipe registry, data_dir set elsewhere", want("data_dir"), found(container()), "refuse",
     ("keeps 37 repositories in /mnt/registry", "set registry.data_dir: /mnt/registry to keep its 37 "
      "repositories", "--replace")),
    ("recipe registry on another port, port unset", want(), found(container(port="5001")), "refuse",
     ("serves on port 5001", "set registry.port: 5001")),
    ("recipe registry on another port, port set", want("port"), found(container(port="5001")), "refuse",
     ("registry.port says 5000", "set registry.port: 5001", "--replace")),
    ("recipe registry without login, auth asked", want("auth", auth=True), found(container()), "refuse",
     ("has no login", "--replace")),
    ("recipe registry with a login, no auth", want(), found(container(auth=True), http=401), "refuse",
     ("asks for a login", "registry.auth")),
    ("recipe registry refuses the inventory's login", want("auth", auth=True),
     found(container(auth=True), http=401, auth_status=401), "refuse", ("refuses registry.auth",)),
    ("recipe registry with TLS", want(), found(container(env=["REGISTRY_HTTP_TLS_CERTIFICATE=/certs/c.crt"]),
                                                 http=400), "refuse", ("serves HTTPS", "--replace")),
    ("not a registry under the name", want(), found(container(data=None, port="", image="nginx")), "refuse",
     ("not a registry", "--replace")),
    # --replace: recreated as nodecfg's, the data kept unless the inventory names another directory
    ("--replace keeps the data", want(replace=True), found(container(restart="no")), "recreate",
     ("--replace", "restart policy")),
    ("--replace with data_dir set", want("data_dir", replace=True), found(container()), "recreate",
     ("data directory /mnt/registry -> /var/lib/registry",)),
    # the port held by something that is not a registry
    ("port held by another container", want(),
     found(None, container("web", data=None, cport="80/tcp", image="nginx:1"), http=0), "refuse",
     ("port 5000 on the master is held by container 'web' (nginx:1)", "set registry.port")),
    ("port held by a process", want(), found(http=0, process="nginx (pid 812)"), "refuse",
     ("held by process nginx (pid 812)",)),
]


@pytest.mark.parametrize(("w", "f", "action", "words"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_decision_table(w: Want, f: Found, action: str, words: tuple[str, ...]) -> None:
    plan = plan_container(w, f)
    assert plan.action == action, plan
    text = " ".join([plan.refusal, plan.note, *plan.reasons])
    for word in words:
        assert word in text, (word, text)
    if action == "refuse":
        assert not plan.changes_container
    if action == "adopt":
        assert plan.adopted is not None and not plan.changes_container and not plan.needs_image


def test_data_dir_kept_on_replace_and_adopt() -> None:
    assert plan_container(want(replace=True), found(container())).data_dir == RECIPE_DATA
    assert plan_container(want(), found(container())).data_dir == RECIPE_DATA
    vol = plan_container(want(replace=True), found(container(data="/var/lib/docker/volumes/reg/_data",
                                                             volume="reg")))
    assert vol.data_dir == "reg"  # `-v reg:/var/lib/registry` reuses the volume


def test_a_recreate_never_changes_the_data_dir_unasked() -> None:
    """Every recreate that would move the data has registry.data_dir set or --replace."""
    for _, w, f, _, _ in TABLE:
        plan = plan_container(w, f)
        old = (f.named.data_spec if f.named else "") or plan.data_dir
        if plan.action == "recreate" and plan.data_dir != old:
            assert "data_dir" in w.explicit or w.replace


def test_ss_process() -> None:
    line = 'LISTEN 0 511 0.0.0.0:5000 0.0.0.0:* users:(("nginx",pid=812,fd=6),("nginx",pid=813,fd=6))'
    assert ss_process([line]) == "nginx (pid 812)"
    assert ss_process([""]) == ""
    assert ss_process(["LISTEN 0 511 0.0.0.0:5000 0.0.0.0:*"]) == "an unnamed process"


def test_facts_feed_the_decision() -> None:
    named = container()
    holder = container("web", data=None, port="5000", cport="80/tcp")
    out = "\n".join([
        'version\t{"Version":"20.10.24"}', f"container\t{json.dumps([named])}", f"holder\t{json.dumps([holder])}",
        f"holder\t{json.dumps([named])}",  # the named container publishes the port too: not a holder
        "listen\tLISTEN 0 4096 0.0.0.0:5000 0.0.0.0:* users:((\"docker-proxy\",pid=9,fd=4))",
        f"repos\t{RECIPE_DATA}\t37", "repos\t/var/lib/my registry\t-1", "authhttp\t401", "http\t200"])
    facts = reg.parse_facts(out, "master")
    f = facts.found()
    assert f.named is not None and f.named.name == "registry" and f.named.data_source == RECIPE_DATA
    assert [h.name for h in f.holders] == ["web"]
    assert f.repositories == {RECIPE_DATA: 37, "/var/lib/my registry": -1}
    assert f.auth_status == 401 and f.process == "docker-proxy (pid 9)"


def test_new_containers_carry_the_ownership_label() -> None:
    spec = reg.ContainerSpec("sha256:aaa", 5000, "/var/lib/registry", auth=False)
    run = spec.run_command("registry:2")
    assert f"--label {adopt.MANAGED_LABEL}=1" in run
    assert existing({"Config": {"Labels": {adopt.MANAGED_LABEL: "1"}}}, AUTH).own


# ---------------------------------------------------------------------------------------------
# the apply script leaves nothing behind (run for real: a stub docker that logs and can fail)

STUB = """#!/bin/sh
echo "$*" >> "$LOG"
case "$1" in
  run) for a in "$@"; do
         if [ "$prev" = --cidfile ]; then
           [ -e "$a" ] && { echo "cidfile exists" >&2; exit 125; }
           echo "cidfile in $(stat -c '%a %U' "${a%/*}")" >> "$LOG.cid"; echo created-id > "$a"
         fi
         prev=$a
       done
       if [ -n "$FAIL_RUN" ]; then
         echo "docker: Error response from daemon: driver failed programming external connectivity: \
Bind for 0.0.0.0:5000 failed: port is already allocated." >&2
         echo "See 'docker run --help'." >&2; exit 125; fi; echo new-id;;
  container) echo true;;
esac
"""


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str, *, fail: bool,
         htpasswd: str | None) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    monkeypatch.setattr(reg, "AUTH_DIR", str(tmp_path / "auth"))
    monkeypatch.setattr(reg, "STATE_DIR", str(tmp_path / "state"))
    bin_dir = stub_bin(tmp_path, docker=STUB, curl="#!/bin/sh\necho 200\n")
    data = tmp_path / "data"
    spec = reg.ContainerSpec("sha256:aaa", 5000, str(data), auth=htpasswd is not None)
    settings = RegistrySettings(address="127.0.0.1", data_dir=str(data))
    script = reg.apply_script(spec, action, settings, 30, htpasswd=htpasswd)
    log = tmp_path / "log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "FAIL_RUN": "1" if fail else "",
           "TMPDIR": str(tmp_path)}
    proc = subprocess.run(script.argv(), input=script.stdin.decode(), text=True, capture_output=True, env=env,
                          cwd=tmp_path, check=False)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_a_failed_create_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc, calls = _run(tmp_path, monkeypatch, "create", fail=True, htpasswd="u:$2b$10$h\n")
    assert proc.returncode == 4
    assert "port is already allocated." in proc.stderr and "See 'docker run --help'" in proc.stderr
    assert "rm -f created-id" in calls  # the Created container, by the id docker wrote, never by name
    assert not any(c.startswith("rm -f registry") for c in calls)
    assert not (tmp_path / "data").exists()  # the data directory this run made
    assert not list((tmp_path / "auth").iterdir())  # no htpasswd, no temp file
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp.")]  # the cidfile's directory went too


def test_the_cidfile_is_in_a_directory_only_this_run_can_write(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No guessable name in /tmp (`mktemp -u`): a planted symlink there would have docker write the id
    through it. The cidfile lives in a fresh 0700 directory of this run's."""
    proc, calls = _run(tmp_path, monkeypatch, "create", fail=False, htpasswd=None)
    assert proc.returncode == 0, proc.stderr
    assert calls and (tmp_path / "log.cid").read_text() == f"cidfile in 700 {__import__('getpass').getuser()}\n"
    assert (tmp_path / "state" / "data-dirs").read_text() == f"{tmp_path / 'data'}\n"  # what --purge may delete


def test_a_failed_recreate_puts_the_old_container_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "htpasswd").write_text("old:hash\n")
    (tmp_path / "data").mkdir()
    proc, calls = _run(tmp_path, monkeypatch, "recreate", fail=True, htpasswd="new:$2b$10$h\n")
    assert proc.returncode == 4
    assert calls[calls.index("rename registry registry-nodecfg-old") + 2:] == [
        "rm -f created-id", "rename registry-nodecfg-old registry", "start registry"]
    assert (auth / "htpasswd").read_text() == "old:hash\n" and [p.name for p in auth.iterdir()] == ["htpasswd"]
    assert (tmp_path / "data").is_dir()  # it was there before


def test_a_recreate_removes_the_old_container_after_the_new_one_runs(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    proc, calls = _run(tmp_path, monkeypatch, "recreate", fail=False, htpasswd=None)
    assert proc.returncode == 0, proc.stderr
    run = next(i for i, c in enumerate(calls) if c.startswith("run "))
    assert calls[run + 1] == "rm -f registry-nodecfg-old"  # only once the new one runs
    assert calls.count("rm -f registry-nodecfg-old") == 1


@pytest.mark.parametrize(("registry_yaml", "explicit"), [
    ("", set()),
    ("registry: {port: 5000}\n", {"port"}),
    ("registry: {data_dir: /mnt/registry, port: 5001}\n", {"port", "data_dir"}),
])
def test_inventory_says_which_registry_keys_it_set(registry_yaml: str, explicit: set[str]) -> None:
    """An unset key leaves what the master already has; a set one is what the operator asked for."""
    from nodecfg.inventory import parse_inventory

    text = "master: {name: m, address: 10.0.0.1}\nnodes: [{name: n, address: 10.0.0.2}]\n" + registry_yaml
    settings = parse_inventory(text, "i.yaml", check_files=False).registry
    assert settings.explicit == frozenset(explicit)
    assert replica.want(replica.Setup(settings, None), "").explicit == frozenset(explicit)


def test_check_report_names_container_data_dir_and_images(capsys: pytest.CaptureFixture[str]) -> None:
    from nodecfg import report

    plan = plan_container(want(), found(container()))
    result = results.RegistryCheck("master", "m:5000", plan.action, plan.reasons, "registry registry-id",
                                    plan.note, plan.refusal, plan.data_dir, 37, False,
                                    (results.ImagePlan("busybox:1.36", "library/busybox:1.36", "push"),
                                     results.ImagePlan("pause:3.9", "pause:3.9", "in registry")))
    report.registry_check(result, as_json=False)
    out = capsys.readouterr().out
    assert "check mode: nothing was changed" in out
    assert "container registry registry-id: would adopt" in out
    assert "data directory: /mnt/registry (37 repositories), kept" in out
    assert "busybox:1.36 -> library/busybox:1.36: would push" in out
    assert "pause:3.9 -> pause:3.9: already in the registry" in out
    refused = results.RegistryCheck("master", "m:5000", "refuse", (), "", "", "no", "/var/lib/registry",
                                     -1, False, ())
    assert refused.exit_code == 2
    report.registry_check(refused, as_json=True)
    assert json.loads(capsys.readouterr().out)["refusal"] == "no"


def test_tls_files_written_key_private_and_registry_run_with_them(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reg, "TLS_DIR", str(tmp_path / "tls"))
    monkeypatch.setattr(reg, "STATE_DIR", str(tmp_path / "state"))
    bin_dir = stub_bin(tmp_path, docker=STUB, curl="#!/bin/sh\necho \"$*\" >> \"$LOG.curl\"; echo 401\n")
    spec = reg.ContainerSpec("sha256:aaa", 5000, str(tmp_path / "data"), auth=False, tls=True)
    settings = RegistrySettings(address="10.0.0.9", data_dir=str(tmp_path / "data"), tls=TlsSettings())
    files = tls.TlsFiles(b"CERT\n", b"KEY'$(touch pwned)\n", b"CA\n")
    script = reg.apply_script(spec, "create", settings, 30, tls_files=files)
    assert "KEY'" not in script.command()  # the key travels as base64 data, on stdin
    assert base64.b64encode(files.key) in script.stdin.splitlines()
    log = tmp_path / "log"
    proc = subprocess.run(script.argv(), input=script.stdin.decode(), text=True, capture_output=True, cwd=tmp_path, check=False,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    tls_dir = tmp_path / "tls"
    assert (tls_dir / "tls.key").read_bytes() == files.key and not (tmp_path / "pwned").exists()
    assert {p.name: p.stat().st_mode & 0o777 for p in tls_dir.iterdir()} == {
        "tls.crt": 0o644, "tls.key": 0o600, "ca.crt": 0o644}
    run = next(c for c in log.read_text().splitlines() if c.startswith("run "))
    assert f"-v {tls_dir}:/certs:ro" in run and "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/tls.crt" in run
    # the master checks the registry by its own name over TLS, connected to the loopback
    assert f"--cacert {tls_dir}/ca.crt --connect-to ::127.0.0.1:5000" in (tmp_path / "log.curl").read_text()
    assert "https://10.0.0.9:5000/v2/" in (tmp_path / "log.curl").read_text()
    assert files.sums == " ".join(__import__("hashlib").sha256(b).hexdigest() for b in files.contents())


# issue 22: a registry that serves an S3 bucket
S3 = adopt.storage_name("s3", "http://10.0.0.30:8333", "registry")
S3_ENV = ["REGISTRY_STORAGE=s3", "REGISTRY_STORAGE_S3_REGIONENDPOINT=http://10.0.0.30:8333",
          "REGISTRY_STORAGE_S3_BUCKET=registry", "REGISTRY_STORAGE_S3_SECRETKEY=***"]


def _s3(want_: Want) -> Want:
    from dataclasses import replace

    return replace(want_, storage=S3)


@pytest.mark.parametrize(("case", "want_", "found_", "action", "words"), [
    # registry:2 declares VOLUME /var/lib/registry: an S3 container still mounts an anonymous volume there
    ("own S3, anonymous volume", _s3(want()), found(container(own=True, data="/var/lib/docker/volumes/ab/_data",
                                                              volume="ab", env=S3_ENV)), "keep", ()),
    ("own on disk, S3 asked", _s3(want()), found(container(**OWN)), "recreate",
     ("storage its data directory -> s3 http://10.0.0.30:8333/registry",)),
    ("own S3, disk asked", want(), found(container(own=True, data=None, env=S3_ENV)), "recreate",
     ("storage s3 http://10.0.0.30:8333/registry -> /var/lib/registry",)),
    ("foreign on disk, S3 asked", _s3(want()), found(container()), "refuse",
     ("serves from /mnt/registry, registry.storage says s3 http://10.0.0.30:8333/registry", "--replace")),
    ("foreign S3, same bucket", _s3(want()), found(container(data=None, env=S3_ENV)), "adopt", ()),
])
def test_storage_in_the_decision(case: str, want_: Want, found_: Found, action: str, words: tuple[str, ...]) -> None:
    plan = plan_container(want_, found_)
    assert plan.action == action, (case, plan)
    text = " ".join((*plan.reasons, plan.refusal, plan.note))
    assert all(w in text for w in words), (case, text)
    if want_.storage and action != "refuse":
        assert plan.data_dir == "" or action == "adopt"  # no data directory for a registry on S3
