"""Issue 5: smoke-test proves every node pulls, and names the reason when one can't."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Lab, by_name, configured_lab, nodecfg, run_json, smoke_checks

IMAGE = "busybox:1.36"  # the lab inventory's first image: docker.io/library/busybox:1.36


@pytest.fixture(scope="module")
def lab() -> Lab:
    return configured_lab(3)


def images_on(lab: Lab, name: str) -> str:
    return lab.ssh(name, "docker images --format '{{.Repository}}:{{.Tag}}'; "
                         "ctr -n k8s.io images ls -q").stdout


def test_configured_fleet_passes_and_leaves_no_image(lab: Lab) -> None:
    before = {n: images_on(lab, n) for n in ("node1", "node2", "node3")}
    rc, data, err = run_json("smoke-test", "-i", str(lab.inventory))
    assert rc == 0, err
    assert data["ok"] is True
    for name in ("node1", "node2", "node3"):
        host = by_name(data)[name]
        assert host["ok"], host
        got = smoke_checks(host)
        for check in ("registry", "docker", "docker mirror", "containerd", "config_path", "cri"):
            assert got[check]["status"] == "ok", (name, got[check])
        # the node did not have the image before: it was removed again, so a re-run pulls again
        assert "busybox" not in images_on(lab, name)
        assert images_on(lab, name) == before[name]  # no sha256: refs left behind by the CRI either


def test_table_and_verdict(lab: Lab) -> None:
    proc = nodecfg("smoke-test", "-i", str(lab.inventory))
    assert proc.returncode == 0, proc.stderr
    assert "PASS: every node pulls from the registry (3 passed, 0 failed)" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_image_not_pushed_is_manifest_unknown(lab: Lab) -> None:
    rc, data, _ = run_json("smoke-test", "-i", str(lab.inventory), "--image",
                           "registry.k8s.io/never-pushed:1.0", "--limit", "node3")
    assert rc == 1
    got = smoke_checks(by_name(data)["node3"])
    assert got["containerd"]["status"] == "FAIL"
    assert "manifest unknown" in got["containerd"]["detail"]
    assert "manifest unknown" in got["docker"]["detail"]


def test_broken_nodes_are_named_with_the_reason(lab: Lab) -> None:
    # node1: an operator removes the mirror files by hand (containerd certs.d and docker's daemon.json)
    # (a restart, not a reload: dockerd's reload keeps insecure-registries when the key is absent)
    lab.ssh("node1", "rm -rf /etc/containerd/certs.d/* && echo '{}' > /etc/docker/daemon.json && "
                     "systemctl restart docker")
    lab.stop("node2")  # node2: down
    proc = nodecfg("smoke-test", "-i", str(lab.inventory), "--timeout", "60")
    assert proc.returncode == 1
    assert "node1" in proc.stdout and "node2" in proc.stdout
    assert "FAIL: 2 of 3 node(s) cannot pull (1 passed, 2 failed)" in proc.stdout
    assert "SSH unreachable" in proc.stdout

    rc, data, _ = run_json("smoke-test", "-i", str(lab.inventory), "--timeout", "60")
    assert rc == 1
    hosts = by_name(data)
    assert hosts["node3"]["ok"] is True
    n2 = hosts["node2"]
    assert n2["ok"] is False and n2["unreachable"] is True
    assert n2["address"] in n2["error"] or "unreachable" in n2["error"]
    n1 = hosts["node1"]
    assert n1["ok"] is False and n1["unreachable"] is False
    got = smoke_checks(n1)
    assert got["registry"]["status"] == "ok"  # the registry itself answers from node1
    assert got["containerd"]["status"] == "FAIL"
    assert "no mirror config for docker.io" in got["containerd"]["detail"]
    assert "hosts.toml" in got["containerd"]["detail"]
    assert got["docker"]["status"] == "FAIL"
    assert "HTTP answered where HTTPS was expected" in got["docker"]["detail"]
    assert got["docker mirror"]["status"] == "FAIL"
    assert "registry-mirrors" in got["docker mirror"]["detail"]


KUBELET_SHIM = """#!/bin/sh
# a kubelet pulling pause in k8s.io while nodecfg's probe pulls its own image
/usr/bin/ctr "$@"; rc=$?
case "$*" in *"images pull"*busybox*)
  /usr/bin/ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d registry.k8s.io/pause:3.9 >/dev/null 2>&1;;
esac
exit $rc
"""


def sha256_refs_of(lab: Lab, name: str, ref: str) -> list[str]:
    listed = lab.ssh(name, "ctr -n k8s.io images ls").stdout.splitlines()
    digest = next((ln.split()[2] for ln in listed if ln.split()[:1] == [ref]), None)
    return [ln.split()[0] for ln in listed if ln.startswith("sha256:") and digest and ln.split()[2] == digest]


def test_a_concurrent_kubelet_pull_is_left_alone(lab: Lab) -> None:
    """Issue 12, defect 8: smoke-test removed every sha256: ref that appeared during its probe,
    including those of images the kubelet pulled meanwhile. Here a shim makes such a pull land
    exactly inside the probe's window, deterministically."""
    lab.ssh("node3", "ctr -n k8s.io images rm registry.k8s.io/pause:3.9 >/dev/null 2>&1; "
                     f"cat > /usr/local/bin/ctr <<'EOF'\n{KUBELET_SHIM}EOF\nchmod 755 /usr/local/bin/ctr")
    try:
        rc, data, err = run_json("smoke-test", "-i", str(lab.inventory), "--limit", "node3")
        assert rc == 0, (err, data)
    finally:
        lab.ssh("node3", "rm -f /usr/local/bin/ctr")
    listed = lab.ssh("node3", "ctr -n k8s.io images ls -q").stdout.split()
    assert "registry.k8s.io/pause:3.9" in listed, listed
    assert len(sha256_refs_of(lab, "node3", "registry.k8s.io/pause:3.9")) == 1, listed
    assert "docker.io/library/busybox:1.36" not in listed  # our own pull was cleaned up
