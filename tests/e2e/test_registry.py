"""Issue 3: registry-up / registry-down on the lab master, offline and idempotent."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.request
from base64 import b64encode
from pathlib import Path
from urllib.error import HTTPError

import nodecfg_lab as labmod
import pytest

from tests.e2e.conftest import Lab, nodecfg, run_json, start_lab

MAPPED = {"library/busybox": ["1.36"], "pause": ["3.9"], "prometheus/busybox": ["latest"]}
PASSWORD = "n0t-in-0utput-Zq7"


@pytest.fixture(scope="module")
def lab() -> Lab:
    return start_lab(1)


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except HTTPError as err:
        return err.code, ""


def catalog(lab: Lab, auth: tuple[str, str] | None = None) -> dict[str, list[str]]:
    base = f"http://{lab.hosts['master']}:5000/v2"
    status, body = http_get(f"{base}/_catalog", auth)
    assert status == 200, status
    out = {}
    for repo in json.loads(body)["repositories"]:
        out[repo] = sorted(json.loads(http_get(f"{base}/{repo}/tags/list", auth)[1])["tags"] or [])
    return out


def container_id(lab: Lab) -> str:
    return lab.ssh("master", "docker inspect --format '{{.Id}}' registry").stdout.strip()


def test_registry_up_twice_same_container_nothing_pushed(lab: Lab) -> None:
    inv = str(lab.inventory)
    rc, first, err = run_json("registry-up", "-i", inv)
    assert rc == 0, err
    assert first["shipped_registry_image"] is True  # a fresh master had no registry image
    assert {i["target"]: i["action"] for i in first["images"]} == {
        "library/busybox:1.36": "pushed", "pause:3.9": "pushed", "prometheus/busybox:latest": "pushed"}
    assert first["transfer"]["uploaded"]  # blobs went up over the registry's HTTP API
    # ... and not through the master's docker: it holds no image of these names, loaded or tagged
    names = lab.ssh("master", "docker images --format '{{.Repository}}'").stdout.split()
    assert not [n for n in names if "busybox" in n or "pause" in n or ":5000/" in n], names
    cid = container_id(lab)
    assert cid.startswith(first["container_id"])
    rc, second, err = run_json("registry-up", "-i", inv)
    assert rc == 0, err
    assert second["container_action"] == "keep"
    assert [i["action"] for i in second["images"]] == ["skipped"] * 3
    assert second["transfer"]["uploaded"] == [] and second["transfer"]["mounted"] == 0
    rc, direct, err = run_json("registry-up", "-i", inv, "--direct")  # plain HTTP to master:5000
    assert rc == 0 and [i["action"] for i in direct["images"]] == ["skipped"] * 3, err
    assert container_id(lab) == cid
    assert catalog(lab) == MAPPED
    # the table form shows the summary and the catalog
    text = nodecfg("registry-up", "-i", inv)
    assert "0 pushed, 3 skipped" in text.stdout and "pause: 3.9" in text.stdout


def test_engine_pushed_images_pull_with_the_engines_image_id(lab: Lab) -> None:
    """The engine path's manifests (docker schema 2, layers uncompressed as `docker save` gives
    them): containerd 1.6 on a node pulls and runs one, docker 20.10 on the master pulls one, and
    its image id is this machine's (the same config blob)."""
    master = lab.hosts["master"]
    ref = f"{master}:5000/library/busybox:1.36"
    run = lab.ssh("node1", f"ctr -n nodecfg-e2e images pull --plain-http {ref} >/dev/null && "
                           f"ctr -n nodecfg-e2e run --rm {ref} e2e-busybox /bin/busybox echo pulled-ok; "
                           f"rc=$?; ctr -n nodecfg-e2e images rm {ref} >/dev/null; exit $rc")
    assert run.stdout.strip() == "pulled-ok"
    local = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", "registry.k8s.io/pause:3.9"],
                           capture_output=True, text=True, check=True).stdout.strip()
    pulled = lab.ssh("master", "docker pull -q 127.0.0.1:5000/pause:3.9 >/dev/null && "
                               "docker image inspect --format '{{.Id}}' 127.0.0.1:5000/pause:3.9; "
                               "docker rmi 127.0.0.1:5000/pause:3.9 >/dev/null")
    assert pulled.stdout.strip() == local


def test_restart_policy_and_data_survive_down_up(lab: Lab) -> None:
    inv = str(lab.inventory)
    policy = lab.ssh("master", "docker inspect --format '{{.HostConfig.RestartPolicy.Name}}' registry")
    assert policy.stdout.strip() == "always"
    down = nodecfg("registry-down", "-i", inv)
    assert down.returncode == 0 and "kept data" in down.stdout
    assert lab.ssh("master", "docker ps -aq --filter name=^registry$").stdout.strip() == ""
    rc, up, _ = run_json("registry-up", "-i", inv)
    assert rc == 0 and up["container_action"] == "create"
    assert [i["action"] for i in up["images"]] == ["skipped"] * 3  # the data outlived the container
    assert catalog(lab) == MAPPED


def test_auth_401_without_and_200_with_credentials_password_never_shown(lab: Lab, tmp_path: Path) -> None:
    data = lab.inventory_data()
    data["registry"]["auth"] = {"username": "puller", "password_env": "NODECFG_E2E_PW"}
    inv = str(lab.write_inventory(tmp_path / "auth.yaml", data))
    env = {"NODECFG_E2E_PW": PASSWORD}
    proc = nodecfg("registry-up", "-i", inv, env=env)
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    base = f"http://{lab.hosts['master']}:5000/v2/_catalog"
    assert http_get(base)[0] == 401
    assert http_get(base, ("puller", "wrong"))[0] == 401
    assert http_get(base, ("puller", PASSWORD))[0] == 200
    assert catalog(lab, ("puller", PASSWORD)) == MAPPED
    perms = lab.ssh("master", "stat -c '%a %U' /etc/nodecfg/registry /etc/nodecfg/registry/htpasswd")
    assert perms.stdout.split("\n")[:2] == ["700 root", "600 root"]
    # no temp file with the password is left behind on the master
    leftover = lab.ssh("master", f"grep -rl {PASSWORD} /tmp /root /etc 2>/dev/null || true")
    assert leftover.stdout.strip() == ""
    again = nodecfg("registry-up", "-i", inv, "--json", env=env)
    assert json.loads(again.stdout)["container_action"] == "keep"
    # a missing password variable is a usage error before anything is contacted
    missing = nodecfg("registry-up", "-i", inv, env={"NODECFG_E2E_PW": ""})
    assert missing.returncode == 2 and "NODECFG_E2E_PW is not set" in missing.stderr
    # back to no auth: recreated without it
    rc, off, _ = run_json("registry-up", "-i", str(lab.inventory))
    assert rc == 0 and off["container_action"] == "recreate" and "auth disabled" in off["container_reasons"]
    assert http_get(base)[0] == 200


def test_purge_removes_the_data(lab: Lab) -> None:
    inv = str(lab.inventory)
    proc = nodecfg("registry-down", "-i", inv, "--purge")
    assert proc.returncode == 0 and "deleted /var/lib/registry" in proc.stdout
    assert lab.ssh("master", "test -e /var/lib/registry", check=False).returncode == 1
    rc, up, _ = run_json("registry-up", "-i", inv)
    assert rc == 0
    assert [i["action"] for i in up["images"]] == ["pushed"] * 3


def test_push_falls_back_to_loopback_when_sshd_refuses_the_containers_address(lab: Lab) -> None:
    """Issue 14: blobs go through port forwards to the registry container's own address (past
    docker-proxy); an sshd that only permits 127.0.0.1:5000 refuses that, and the push goes on
    through 127.0.0.1:5000, complete."""
    inv = str(lab.inventory)
    nodecfg("registry-down", "-i", inv, "--purge")
    conf = "/etc/ssh/sshd_config.d/nodecfg-e2e-permitopen.conf"
    since = lab.ssh("master", "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    lab.ssh("master", f"echo 'PermitOpen 127.0.0.1:5000' > {conf} && sshd -t")
    _reload_sshd(lab)
    try:
        rc, up, err = run_json("registry-up", "-i", inv)
        assert rc == 0, err
        assert [i["action"] for i in up["images"]] == ["pushed"] * 3
        assert catalog(lab) == MAPPED
        address = lab.ssh("master", "docker inspect --format "
                                    "'{{.NetworkSettings.Networks.bridge.IPAddress}}' registry").stdout.strip()
        denied = lab.ssh("master", f"journalctl -u ssh.service -o cat --no-pager --since '{since}' | "
                                   "grep 'but the request was denied' || true").stdout
        assert f"to connect to host {address} port 5000" in denied, denied  # it was tried, and refused
    finally:
        lab.ssh("master", f"rm -f {conf}")
        _reload_sshd(lab)


def _reload_sshd(lab: Lab) -> None:
    """Reload the master's sshd and wait until it answers again: its re-exec on SIGHUP closes the
    listening socket for a moment (a connection then is refused)."""
    lab.ssh("master", "systemctl reload ssh")
    time.sleep(0.5)
    labmod.wait_for_ssh(lab.hosts["master"], time.monotonic() + 15)


def test_master_without_curl_is_named_not_a_hang(lab: Lab) -> None:
    """Last on this module's lab: the master loses curl (a minimal image). registry-up says what is
    missing in one line instead of waiting out its readiness loop."""
    lab.ssh("master", "dpkg --purge --force-depends curl >/dev/null 2>&1; ! command -v curl")
    proc = nodecfg("registry-up", "-i", str(lab.inventory), timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the master has no curl" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_local_engine_without_inventory() -> None:
    with tempfile.TemporaryDirectory() as cwd:
        proc = nodecfg("registry-up", cwd=cwd)
        try:
            assert proc.returncode == 0, proc.stderr
            assert "registry on localhost" in proc.stdout
            assert http_get("http://127.0.0.1:5000/v2/")[0] == 200
        finally:
            down = nodecfg("registry-down", "--purge", cwd=cwd)
        assert down.returncode == 0 and "removed the registry container" in down.stdout
