"""Issue 23, the registry side of day 2, on a lab of one master and one node: registry-prune removes
what nodecfg pushed and the inventory dropped (never an operator's own image), frees its bytes on
the master's disk, and its --check changes nothing; a push that cannot fit into the data directory
is refused before it sends, naming the directory and the space."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.conftest import Lab, nodecfg, run_json, start_lab

BASE = "busybox:1.36"
A, B, C = "docker.io/e2e/prune-a:1", "docker.io/e2e/prune-b:1", "docker.io/e2e/prune-c:1"
B_MB = 6  # B's own layer: random bytes, nothing compresses or is shared
R, R_MB = "docker.io/e2e/prune-r:1", 4  # rebuilt under one tag: a new revision each time
BIG = "docker.io/bench/big:1"  # bench/registry_push.py's 212 MB image: the same Dockerfile, so its build cache
BIG_DOCKERFILE = "FROM busybox:1.36\n" + "\n".join(f"RUN head -c {40 << 20} /dev/urandom > /layer{i}"
                                                  for i in range(5)) + "\n"
DATA = "/var/lib/registry-prune"


def _build(client: Any, tag: str, dockerfile: str) -> None:
    have = {t for img in client.images.list() for t in img.tags}
    if tag.removeprefix("docker.io/") not in have:
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)


@pytest.fixture(scope="module")
def images() -> None:
    client = docker.from_env(timeout=900)
    for ref, mb in ((A, 1), (B, B_MB), (C, 1)):
        _build(client, ref, f"FROM {BASE}\nRUN head -c {mb << 20} /dev/urandom > /{ref.split('/')[-1][:7]}\n")
    _build(client, BIG, BIG_DOCKERFILE)


@pytest.fixture(scope="module")
def lab(images: None) -> Iterator[Lab]:
    del images
    yield start_lab(1)


def inventory(lab: Lab, tmp: Path, name: str, images: list[str], **registry: Any) -> str:
    data = lab.inventory_data()
    data["images"] = images
    data["registry"] = {**data["registry"], "data_dir": DATA, **registry}
    return str(lab.write_inventory(tmp / f"{name}.yaml", data))


def used(lab: Lab, path: str) -> int:
    """Bytes under `path` on the master, as du counts them (blocks)."""
    return int(lab.ssh("master", f"du -sk {path}").stdout.split()[0]) * 1024


def pulls_on_node(lab: Lab, inv: str, image: str) -> None:
    proc = nodecfg("smoke-test", "-i", inv, "--image", image)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prune_removes_what_the_inventory_dropped_and_frees_its_bytes(lab: Lab, tmp_path: Path) -> None:
    every = inventory(lab, tmp_path, "abc", [A, B, C])
    rc, up, err = run_json("registry-up", "-i", every)
    assert rc == 0, err
    assert [i["action"] for i in up["images"]] == ["pushed"] * 3
    record = lab.ssh("master", "stat -c %a /var/lib/nodecfg/registry/pushed && cat /var/lib/nodecfg/registry/pushed")
    lines = record.stdout.splitlines()
    assert lines[0] == "600" and sorted(ln.split("\t")[0] for ln in lines[1:]) == [
        "e2e/prune-a", "e2e/prune-b", "e2e/prune-c"]
    # an operator's own image, pushed by hand on the master: never nodecfg's to remove
    lab.load_images("master", BASE)
    lab.ssh("master", f"docker tag {BASE} 127.0.0.1:5000/mine/tool:1 && docker push -q 127.0.0.1:5000/mine/tool:1")
    assert nodecfg("configure-nodes", "-i", every).returncode == 0
    # the registry as an older nodecfg made it: its own, without deletes enabled
    lab.ssh("master", f"docker rm -f registry >/dev/null && docker run -d --name registry --restart=always "
            f"-p 5000:5000 --label io.nodecfg.managed=1 -v {DATA}:/var/lib/registry registry:2 >/dev/null && "
            "for i in $(seq 50); do curl -sf http://127.0.0.1:5000/v2/ >/dev/null && break; sleep 0.2; done")

    dropped = inventory(lab, tmp_path, "ac", [A, C])
    before = used(lab, DATA)
    rc, check, err = run_json("registry-prune", "-i", dropped, "--check")
    assert rc == 0, err
    host = check["hosts"][0]
    assert [t["target"] for t in host["removed"]] == ["e2e/prune-b:1"]
    assert {t["target"]: t["why"] for t in host["kept"]} == {
        "mine/tool:1": "not pushed by nodecfg (--all-unlisted removes it too)"}
    assert host["bytes_estimated"] >= B_MB << 20
    assert "would recreate it with REGISTRY_STORAGE_DELETE_ENABLED=true" in host["note"]
    assert used(lab, DATA) == before  # nothing changed
    text = nodecfg("registry-prune", "-i", dropped, "--check")
    assert "would remove e2e/prune-b:1" in text.stdout and "check mode: nothing was changed" in text.stdout

    rc, pruned, err = run_json("registry-prune", "-i", dropped)
    assert rc == 0, err
    host = pruned["hosts"][0]
    assert [t["target"] for t in host["removed"]] == ["e2e/prune-b:1"]
    assert host["bytes_freed"] >= B_MB << 20 and host["stopped"] >= 0
    assert host["note"].startswith("recreated 'registry' with deletes enabled")
    env = lab.ssh("master", "docker inspect --format '{{json .Config.Env}}' registry").stdout
    assert "REGISTRY_STORAGE_DELETE_ENABLED=true" in env
    assert before - used(lab, DATA) >= B_MB << 20  # measured here too
    tags = lab.ssh("master", "curl -s http://127.0.0.1:5000/v2/e2e/prune-b/tags/list").stdout
    assert '"tags":null' in tags.replace(" ", "") or "NAME_UNKNOWN" in tags
    assert "e2e/prune-b" not in lab.ssh("master", "cat /var/lib/nodecfg/registry/pushed").stdout
    for image in (A, C, "docker.io/mine/tool:1"):
        pulls_on_node(lab, dropped, image)
    # a second prune has nothing to do, and stops nothing
    rc, again, err = run_json("registry-prune", "-i", dropped)
    assert rc == 0 and again["hosts"][0]["removed"] == [] and again["hosts"][0]["stopped"] == -1, err
    # a registry nodecfg did not make (the same data, run by hand) is never changed to allow deletes
    lab.ssh("master", f"docker rm -f registry >/dev/null && docker run -d --name registry --restart=always "
            f"-p 5000:5000 -v {DATA}:/var/lib/registry registry:2 >/dev/null && "
            "for i in $(seq 50); do curl -sf http://127.0.0.1:5000/v2/ >/dev/null && break; sleep 0.2; done")
    only_c = inventory(lab, tmp_path, "c", [C])
    rc, check, err = run_json("registry-prune", "-i", only_c, "--check")
    assert rc == 0 and check["hosts"][0]["note"].startswith("REFUSED: the registry container 'registry' (not made"), err
    proc = nodecfg("registry-prune", "-i", only_c)
    assert proc.returncode == 2 and "registry-up --replace" in proc.stderr, proc.stderr
    pulls_on_node(lab, only_c, A)  # nothing was deleted


def test_a_tag_pushed_again_leaves_no_old_revision_after_prune(lab: Lab, tmp_path: Path) -> None:
    """The inventory unchanged, its image rebuilt under the same tag and pushed again: the old
    revision stays in the registry untagged until registry-prune deletes it (the record kept it)."""
    client = docker.from_env(timeout=900)
    lab.ssh("master", "docker rm -f registry >/dev/null 2>&1; true")
    inv = inventory(lab, tmp_path, "r", [R], data_dir="/var/lib/registry-repush")
    for n in (1, 2):
        client.images.build(fileobj=io.BytesIO(f"FROM {BASE}\nRUN head -c {R_MB << 20} /dev/urandom > /r{n}\n".encode()),
                            tag=R, rm=True)
        rc, up, err = run_json("registry-up", "-i", inv)
        assert rc == 0 and [i["action"] for i in up["images"]] == ["pushed"], err
    record = lab.ssh("master", "cat /var/lib/nodecfg/registry/pushed").stdout
    assert "e2e/prune-r\t@sha256:" in record, record
    before = used(lab, "/var/lib/registry-repush")
    rc, pruned, err = run_json("registry-prune", "-i", inv)
    assert rc == 0, err
    host = pruned["hosts"][0]
    assert [t["target"].split("@")[0] for t in host["removed"]] == ["e2e/prune-r"]
    assert host["bytes_freed"] >= R_MB << 20 and before - used(lab, "/var/lib/registry-repush") >= R_MB << 20
    assert "@sha256:" not in lab.ssh("master", "cat /var/lib/nodecfg/registry/pushed").stdout
    pulls_on_node(lab, inv, R)  # the current revision


def test_a_push_that_cannot_fit_is_refused_before_it_sends(lab: Lab, tmp_path: Path) -> None:
    lab.ssh("master", "docker rm -f registry >/dev/null; mkdir -p /mnt/small && "
            "{ mountpoint -q /mnt/small || mount -t tmpfs -o size=60m tmpfs /mnt/small; }")
    inv = inventory(lab, tmp_path, "small", [BIG], data_dir="/mnt/small")
    rc, check, err = run_json("registry-up", "-i", inv, "--check")
    assert rc == 1, err  # it would not fit: said, nothing changed
    assert 0 < check["free"] <= 60 << 20 and check["needed"] >= 200 << 20
    before = used(lab, "/mnt/small")
    proc = nodecfg("registry-up", "-i", inv)
    assert proc.returncode == 1
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("nodecfg: error: /mnt/small on master (") and "MB free; this push needs 2" in message
    assert "{" not in message  # no raw JSON
    assert used(lab, "/mnt/small") == before  # nothing was sent


def test_a_disk_that_fills_meanwhile_is_one_line_and_no_partial_upload_stays(lab: Lab, tmp_path: Path) -> None:
    """Another writer, made deterministic: the data directory's own filesystem has room (the fit check
    passes), but everything the registry writes lands on a 30 MB tmpfs mounted inside it (`docker/`),
    which the 212 MB push fills."""
    store = "/mnt/nested/docker"
    lab.ssh("master", f"docker rm -f registry >/dev/null; mkdir -p {store} && "
            f"{{ mountpoint -q {store} || mount -t tmpfs -o size=30m tmpfs {store}; }}")
    inv = inventory(lab, tmp_path, "nested", [BIG], data_dir="/mnt/nested")
    before = used(lab, store)
    proc = nodecfg("registry-up", "-i", inv)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("nodecfg: error: no space left on /mnt/nested on master ("), message
    assert "partial upload(s) it had opened were removed" in message and "could not be" not in message, message
    assert "{" not in message and "Err" not in message
    left = lab.ssh("master", f"find {store} -path '*/_uploads/*'").stdout.split()
    assert left == [], left
    # what stays: the whole blobs the run completed before the disk filled (the small ones), never
    # the partial uploads of the 40 MB layers
    assert used(lab, store) - before < 8 << 20
