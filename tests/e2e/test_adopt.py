"""Issue 16: adopt, don't replace. A master and a node prepared with the manual recipe's own commands
(a `registry` container on /mnt/registry with an image pushed by hand, the recipe's daemon.json);
nodecfg adopts or refuses naming /mnt/registry, never recreates it; a port held by another
container is named and nothing stray is left; `--check` changes nothing; a registry image with
another tag here still arrives under the inventory's name."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.conftest import Lab, by_name, nodecfg, run_json, start_lab

OTHER_TAG = "10.99.0.1:5000/mirror/registry:2"  # sorts before docker.io/library/registry:2
HAND_IMAGE = "hand/busybox:1.36"
PASSWORD = "adopt-pw-9Qx"


@pytest.fixture(scope="module")
def lab() -> Lab:
    return start_lab(1)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adopt")


def inventory(lab: Lab, tmp: Path, name: str, **registry: Any) -> str:
    data = lab.inventory_data()
    data["images"] = registry.pop("images", ["busybox:1.36"])
    data["registry"] = {**data["registry"], **registry}
    return str(lab.write_inventory(tmp / f"{name}.yaml", data))


def master(lab: Lab, command: str, *, check: bool = True) -> str:
    return lab.ssh("master", command, check=check).stdout.strip()


def catalog(lab: Lab) -> list[str]:
    with urllib.request.urlopen(f"http://{lab.hosts['master']}:5000/v2/_catalog", timeout=10) as resp:
        return sorted(json.loads(resp.read())["repositories"])


def container_state(lab: Lab, name: str = "registry") -> str:
    """Id, start time and state: a container that was recreated, restarted or stopped shows it."""
    return master(lab, f"docker inspect --format '{{{{.Id}}}} {{{{.State.StartedAt}}}} "
                       f"{{{{.State.Status}}}}' {name}")


def load_on_master(lab: Lab, image: str) -> None:
    """`docker save IMAGE | ssh master docker load`, as an operator copies an image by hand."""
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    ssh = ["ssh", "-i", str(lab.key), "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "BatchMode=yes",
           "-o", "LogLevel=ERROR", f"root@{lab.hosts['master']}", "docker load -q"]
    done = subprocess.run(ssh, stdin=save.stdout, capture_output=True, text=True, timeout=120, check=False)
    assert save.wait(timeout=60) == 0 and done.returncode == 0, done.stderr


def test_registry_image_with_another_tag_starts_on_a_fresh_master(lab: Lab, tmp: Path) -> None:
    inv = inventory(lab, tmp, "fresh", images=[])
    client = docker.from_env()
    client.images.get("registry:2").tag(OTHER_TAG)
    try:
        assert client.images.get("registry:2").tags[0] == OTHER_TAG  # what save(named=True) would name
        rc, up, err = run_json("registry-up", "-i", inv)
    finally:
        client.images.remove(OTHER_TAG, noprune=True)
    assert rc == 0, err
    assert up["shipped_registry_image"] is True and up["container_action"] == "create"
    assert master(lab, "docker image inspect --format '{{.Id}}' registry:2") == client.images.get("registry:2").id
    assert master(lab, f"docker image inspect {OTHER_TAG} >/dev/null 2>&1 || echo absent") == "absent"
    labels = json.loads(master(lab, "docker inspect --format '{{json .Config.Labels}}' registry"))
    assert labels["io.nodecfg.managed"] == "1"
    # nodecfg's own container goes as it came; registry:2 stays on the master for the recipe
    assert nodecfg("registry-down", "-i", inv, "--purge").returncode == 0
    assert master(lab, "docker ps -aq --filter name=^registry$") == ""


@pytest.fixture(scope="module")
def recipe(lab: Lab) -> Iterator[str]:
    """The manual recipe on the master: its registry on /mnt/registry and an image pushed by hand."""
    master(lab, "docker run -d -p 5000:5000 --restart=always --name registry "
                "-v /mnt/registry:/var/lib/registry registry:2 >/dev/null")
    load_on_master(lab, "busybox:1.36")
    master(lab, "for i in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:5000/v2/ && break; sleep 0.2; done; "
                f"docker tag busybox:1.36 localhost:5000/{HAND_IMAGE} && "
                f"docker push -q localhost:5000/{HAND_IMAGE} >/dev/null && docker rmi localhost:5000/{HAND_IMAGE}")
    assert catalog(lab) == ["hand/busybox"]
    yield container_state(lab)


def test_check_changes_nothing(lab: Lab, tmp: Path, recipe: str) -> None:
    inv = inventory(lab, tmp, "plain")
    start = time.monotonic()
    text = nodecfg("registry-up", "-i", inv, "--check")
    assert text.returncode == 0, text.stderr
    assert "check mode: nothing was changed" in text.stdout
    assert "adopted the registry container 'registry'" in text.stdout
    assert "/mnt/registry (1 repository)" in text.stdout
    assert "image busybox:1.36 -> library/busybox:1.36: would push" in text.stdout
    rc, plan, err = run_json("registry-up", "-i", inv, "--check")
    assert rc == 0, err
    assert plan["container_action"] == "adopt" and plan["data_dir"] == "/mnt/registry"
    assert plan["repositories"] == 1
    print(text.stdout)
    print(f"registry-up --check twice: {time.monotonic() - start:.1f}s")
    assert container_state(lab) == recipe
    assert catalog(lab) == ["hand/busybox"]
    assert master(lab, "test -e /var/lib/registry && echo made || echo absent") == "absent"


def test_refused_naming_mnt_registry_when_data_dir_says_otherwise(lab: Lab, tmp: Path, recipe: str) -> None:
    inv = inventory(lab, tmp, "elsewhere", data_dir="/var/lib/registry")
    proc = nodecfg("registry-up", "-i", inv)
    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    print(error)
    assert "keeps 1 repository in /mnt/registry" in error
    assert "set registry.data_dir: /mnt/registry to keep its 1 repository, or pass --replace" in error
    assert container_state(lab) == recipe
    assert master(lab, "test -e /var/lib/registry && echo made || echo absent") == "absent"
    assert catalog(lab) == ["hand/busybox"]


def test_adopted_registry_keeps_serving_the_hand_pushed_image(lab: Lab, tmp: Path, recipe: str) -> None:
    inv = inventory(lab, tmp, "plain")
    rc, up, err = run_json("registry-up", "-i", inv)
    assert rc == 0, err
    assert up["container_action"] == "adopt" and recipe.startswith(up["container_id"])
    assert "adopted the registry container 'registry'" in up["note"] and "/mnt/registry" in up["note"]
    assert [i["action"] for i in up["images"]] == ["pushed"]
    assert container_state(lab) == recipe
    assert catalog(lab) == ["hand/busybox", "library/busybox"]
    # registry-down does not remove what nodecfg did not make
    down = nodecfg("registry-down", "-i", inv)
    assert down.returncode == 2 and "not made by nodecfg" in down.stderr
    assert container_state(lab) == recipe


def test_recipe_daemon_json_and_hand_hosts_toml(lab: Lab, tmp: Path, recipe: str) -> None:
    del recipe
    inv = inventory(lab, tmp, "plain")
    ep = f"{lab.hosts['master']}:5000"
    lab.ssh("node1", f"printf '%s\\n' '{{\"insecure-registries\": [\"{ep}\"]}}' > /etc/docker/daemon.json && "
                     "systemctl reload docker")
    rc, out, err = run_json("configure-nodes", "-i", inv)
    assert rc == 0, err
    assert "insecure-registries already configured (by hand)" in by_name(out)["node1"]["result"]["docker"]["note"]
    daemon = json.loads(lab.ssh("node1", "cat /etc/docker/daemon.json").stdout)
    assert daemon["insecure-registries"] == [ep]  # exactly one entry
    assert daemon["registry-mirrors"] == [f"http://{ep}"]
    # the operator's own spellings and a hosts.toml without nodecfg's mark: the same setting
    hosts = f"/etc/containerd/certs.d/{ep}/hosts.toml"
    lab.ssh("node1", "printf '%s\\n' '{\"insecure-registries\": [\"http://" + ep + "\"], "
                     f"\"registry-mirrors\": [\"http://{ep}/\"]}}' > /etc/docker/daemon.json && "
                     f"printf 'server = \"http://{ep}\"\\n\\n[host.\"http://{ep}\"]\\n  capabilities = "
                     f"[\"pull\", \"resolve\"]\\n' > {hosts} && systemctl reload docker")
    before = lab.ssh("node1", f"md5sum /etc/docker/daemon.json {hosts}; systemctl show -p MainPID "
                              "-p ActiveEnterTimestamp docker containerd").stdout
    text = nodecfg("configure-nodes", "-i", inv)
    assert text.returncode == 0, text.stderr
    assert "docker: already configured (by hand)" in text.stdout
    assert f"containerd: already configured (by hand): hosts.toml for {ep}" in text.stdout
    assert "1 node(s): 1 ok (0 changed)" in text.stdout
    after = lab.ssh("node1", f"md5sum /etc/docker/daemon.json {hosts}; systemctl show -p MainPID "
                             "-p ActiveEnterTimestamp docker containerd").stdout
    assert after == before  # no file written, no restart
    # and the node pulls the hand-pushed image from the adopted registry
    pull = lab.ssh("node1", f"docker pull -q {ep}/{HAND_IMAGE} && docker rmi -f {ep}/{HAND_IMAGE} >/dev/null")
    assert pull.returncode == 0


def test_replace_recreates_it_as_nodecfgs_own_and_keeps_its_data(lab: Lab, tmp: Path, recipe: str) -> None:
    inv = inventory(lab, tmp, "plain")
    rc, up, err = run_json("registry-up", "-i", inv, "--replace")
    assert rc == 0, err
    assert up["container_action"] == "recreate" and "--replace: 'registry' was not made by nodecfg" in \
        up["container_reasons"]
    assert not recipe.startswith(up["container_id"])
    assert master(lab, "docker inspect --format '{{index .Config.Labels \"io.nodecfg.managed\"}} "
                       "{{range .Mounts}}{{.Source}}{{end}}' registry") == "1 /mnt/registry"
    assert catalog(lab) == ["hand/busybox", "library/busybox"]  # the data came along
    assert master(lab, "docker ps -aq --filter name=registry-nodecfg-old") == ""
    rc, again, err = run_json("registry-up", "-i", inv)  # now nodecfg's own: kept
    assert rc == 0 and again["container_action"] == "keep", err


def test_purge_deletes_the_directory_the_registry_used_and_nothing_else(lab: Lab, tmp: Path, recipe: str) -> None:
    """Issue 21 (2): after --replace kept the recipe's /mnt/registry (registry.data_dir unset), --purge
    deletes /mnt/registry, not the /var/lib/registry the inventory defaults to, which on this master
    holds something else and is refused, named, by a second --purge."""
    del recipe
    inv = inventory(lab, tmp, "plain")
    master(lab, "mkdir -p /var/lib/registry && echo theirs > /var/lib/registry/not-a-registry")
    try:
        proc = nodecfg("registry-down", "-i", inv, "--purge")
        assert proc.returncode == 0, proc.stderr
        assert "deleted /mnt/registry" in proc.stdout, proc.stdout
        assert master(lab, "test -e /mnt/registry && echo there || echo gone") == "gone"
        assert master(lab, "cat /var/lib/registry/not-a-registry") == "theirs"
        proc = nodecfg("registry-down", "-i", inv, "--purge")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "refused to delete /var/lib/registry: nodecfg did not create or adopt it" in proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert master(lab, "cat /var/lib/registry/not-a-registry") == "theirs"
    finally:
        master(lab, "rm -rf /var/lib/registry")


def test_port_held_by_another_container_is_named_and_nothing_is_left(lab: Lab, tmp: Path, recipe: str) -> None:
    del recipe
    master(lab, "docker rm -f registry >/dev/null 2>&1; "
                "docker run -d --name squatter -p 5000:5000 busybox:1.36 sleep 3600 >/dev/null")
    try:
        inv = inventory(lab, tmp, "auth", auth={"username": "puller", "password_env": "ADOPT_PW"})
        proc = nodecfg("registry-up", "-i", inv, env={"ADOPT_PW": PASSWORD})
        assert proc.returncode == 2, proc.stderr
        assert "port 5000 on the master is held by container 'squatter' (busybox:1.36)" in proc.stderr
        print(proc.stderr.strip().splitlines()[-1])
        assert PASSWORD not in proc.stderr + proc.stdout
        assert master(lab, "docker ps -aq --filter name=^registry$") == ""
        assert master(lab, "docker ps -aq --filter status=created") == ""
        assert master(lab, "ls -A /etc/nodecfg/registry 2>/dev/null; ls -A /tmp | grep -c '^tmp\\.' || true") == "0"
    finally:
        master(lab, "docker rm -f squatter >/dev/null")
    # a process, not a container: named from `ss -ltnp` on the master
    master(lab, "setsid python3 -m http.server 5000 >/dev/null 2>&1 < /dev/null & echo $! > /tmp/squat.pid; "
                "for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:5000/ && break; sleep 0.1; done")
    try:
        proc = nodecfg("registry-up", "-i", inventory(lab, tmp, "plain"))
        assert proc.returncode == 2, proc.stderr
        pid = master(lab, "cat /tmp/squat.pid")
        assert f"port 5000 on the master is held by process python3 (pid {pid})" in proc.stderr
        assert master(lab, "docker ps -aq --filter name=^registry$") == ""
    finally:
        master(lab, "kill $(cat /tmp/squat.pid)")
