"""Issue 15: TLS with a generated CA, auth on, on a fleet of every flavor.

master  bookworm     registry:2 with the generated server certificate (and htpasswd)
node1   bookworm     docker 20.10 / containerd 1.6
node2   trixie       docker 26 / containerd 1.7
node3   containerd2  docker 28 / containerd 2.1 / podman 5.4

The fleet is first set up over plain HTTP, then moved to TLS by an ordinary re-run. Nothing is
then marked insecure anywhere; every runtime trusts the CA its own way and pulls with the
credentials; the password shows up in no output; a re-run changes nothing; a wrong CA on a node is
named as such by smoke-test.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509

from nodecfg.registry import tls
from tests.e2e.conftest import Lab, by_name, nodecfg, run_json, start_lab

PASSWORD = "tls-S3cret-pw-77"
ENV = {"NODECFG_E2E_PW": PASSWORD}
NODES = ("node1", "node2", "node3")


class Fleet:
    def __init__(self, lab: Lab, inv: str, ca_dir: Path, ep: str) -> None:
        self.lab, self.inv, self.ca_dir, self.ep = lab, inv, ca_dir, ep


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    lab = start_lab(3, ("bookworm", "trixie", "containerd2"))
    work = tmp_path_factory.mktemp("tls")
    data = lab.inventory_data()
    data["registry"]["auth"] = {"username": "puller", "password_env": "NODECFG_E2E_PW"}
    ep = f"{data['master']['address']}:5000"
    # the fleet starts on plain HTTP, as a site that used nodecfg before TLS: the move to HTTPS is an
    # ordinary re-run, and what HTTP left on the nodes (insecure entries, http:// hosts) goes
    plain = str(lab.write_inventory(work / "plain.yaml", data))
    for step in ("registry-up", "configure-nodes"):
        proc = nodecfg(step, "-i", plain, env=ENV)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ep in lab.ssh("node1", "cat /etc/docker/daemon.json").stdout
    data["registry"]["tls"] = {"ca_dir": str(work / "ca")}
    inv = str(lab.write_inventory(work / "inventory.yaml", data))
    # --check makes no CA and no certificate here, and changes nothing there
    for check in (("registry-up", "-i", inv, "--check"), ("configure-nodes", "-i", inv, "--check")):
        proc = nodecfg(*check, env=ENV)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (work / "ca").exists()
    assert lab.ssh("master", "ls /etc/nodecfg/registry-tls 2>/dev/null || true").stdout.strip() == ""
    up = nodecfg("registry-up", "-i", inv, env=ENV)
    assert "TLS enabled" in up.stderr, up.stderr  # nodecfg's own HTTP registry recreated with TLS
    assert up.returncode == 0, up.stdout + up.stderr
    assert PASSWORD not in up.stdout + up.stderr
    assert "in clear" not in up.stderr
    conf = nodecfg("configure-nodes", "-i", inv, env=ENV)
    assert conf.returncode == 0, conf.stdout + conf.stderr
    assert PASSWORD not in conf.stdout + conf.stderr
    return Fleet(lab, inv, work / "ca", ep)


def test_the_ca_lives_on_the_operator_machine_key_private(fleet: Fleet) -> None:
    assert (fleet.ca_dir / "ca.key").stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate((fleet.ca_dir / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # the master holds the server certificate and its key (0600), not the CA's key
    modes = fleet.lab.ssh("master", "stat -c '%a %n' /etc/nodecfg/registry-tls/*").stdout.split()
    assert modes == ["644", "/etc/nodecfg/registry-tls/ca.crt", "644", "/etc/nodecfg/registry-tls/tls.crt",
                     "600", "/etc/nodecfg/registry-tls/tls.key"], modes
    ca_key_line = (fleet.ca_dir / "ca.key").read_text().splitlines()[1]
    assert fleet.lab.ssh("master", f"grep -rlF -- {ca_key_line} /etc /root /tmp /var/lib/registry "
                                   "2>/dev/null || true").stdout.strip() == ""


def test_https_with_the_ca_answers_401_and_plain_http_does_not(fleet: Fleet) -> None:
    for name in NODES:
        ca = f"/etc/docker/certs.d/{fleet.ep}/ca.crt"
        code = fleet.lab.ssh(name, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 --cacert {ca} "
                                   f"https://{fleet.ep}/v2/").stdout
        assert code == "401", (name, code)
        plain = fleet.lab.ssh(name, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 "
                                    f"http://{fleet.ep}/v2/", check=False).stdout
        assert plain not in ("200", "401"), (name, plain)


def test_nothing_is_insecure(fleet: Fleet) -> None:
    for name in NODES:
        info = json.loads(fleet.lab.ssh(name, "docker info --format '{{json .RegistryConfig}}'").stdout)
        assert (info["IndexConfigs"].get(fleet.ep) or {}).get("Secure") is not False, (name, info)
        assert f"https://{fleet.ep}/" in info["Mirrors"], (name, info["Mirrors"])
        daemon = json.loads(fleet.lab.ssh(name, "cat /etc/docker/daemon.json").stdout)
        assert fleet.ep not in daemon.get("insecure-registries", []), daemon
        hosts = fleet.lab.ssh(name, "cat /etc/containerd/certs.d/*/hosts.toml").stdout
        assert "skip_verify" not in hosts and f"http://{fleet.ep}" not in hosts, hosts
        assert f'ca = "/etc/containerd/certs.d/{fleet.ep}/ca.crt"' in hosts, hosts
    dropin = fleet.lab.ssh("node3", "cat /etc/containers/registries.conf.d/99-nodecfg.conf").stdout
    assert "insecure = true" not in dropin, dropin


def test_every_runtime_pulls_with_the_credentials(fleet: Fleet) -> None:
    for name in NODES:
        pull = fleet.lab.ssh(name, "docker pull -q busybox:1.36 && docker rmi -f busybox:1.36 >/dev/null && "
                                   "ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d "
                                   "registry.k8s.io/pause:3.9 >/dev/null && "
                                   "ctr -n k8s.io images rm registry.k8s.io/pause:3.9 >/dev/null", check=False)
        assert pull.returncode == 0, (name, pull.stdout + pull.stderr)
    podman = fleet.lab.ssh("node3", "REGISTRY_AUTH_FILE=/etc/containers/auth.json podman pull -q "
                                    "docker.io/library/busybox:1.36 && podman rmi -f "
                                    "docker.io/library/busybox:1.36 >/dev/null", check=False)
    assert podman.returncode == 0, podman.stdout + podman.stderr
    rc, data, err = run_json("smoke-test", "-i", fleet.inv, env=ENV)
    assert rc == 0, json.dumps(data, indent=1) + err
    assert PASSWORD not in json.dumps(data) + err
    for name in NODES:
        checks = {c["name"]: c for c in by_name(data)[name]["result"]["checks"]}
        assert checks["registry"]["status"] == "ok" and "https://" in checks["registry"]["detail"], checks


def test_a_rerun_changes_nothing(fleet: Fleet) -> None:
    ca_before = (fleet.ca_dir / "ca.crt").read_bytes()
    cid = fleet.lab.ssh("master", "docker inspect -f '{{.Id}} {{.State.StartedAt}}' registry").stdout
    starts = {n: fleet.lab.ssh(n, "systemctl show -p ActiveEnterTimestampMonotonic --value docker containerd")
              .stdout for n in NODES}
    up = nodecfg("registry-up", "-i", fleet.inv, env=ENV)
    assert up.returncode == 0, up.stdout + up.stderr
    rc, data, err = run_json("configure-nodes", "-i", fleet.inv, env=ENV)
    assert rc == 0, err
    assert {h["name"]: h["result"]["changed"] for h in data["hosts"]} == dict.fromkeys(NODES, False)
    assert (fleet.ca_dir / "ca.crt").read_bytes() == ca_before
    assert fleet.lab.ssh("master", "docker inspect -f '{{.Id}} {{.State.StartedAt}}' registry").stdout == cid
    for n in NODES:
        assert fleet.lab.ssh(n, "systemctl show -p ActiveEnterTimestampMonotonic --value docker "
                                "containerd").stdout == starts[n], n


def test_a_wrong_ca_is_named_unknown_authority_and_repaired(fleet: Fleet, tmp_path: Path) -> None:
    other, _ = tls.make_ca(dt.datetime.now(dt.UTC), "some other CA")
    path = f"/etc/docker/certs.d/{fleet.ep}/ca.crt"
    fleet.lab.ssh("node1", f"cat > {path} <<'EOF'\n{other.decode()}EOF")
    rc, data, _ = run_json("smoke-test", "-i", fleet.inv, env=ENV)
    assert rc == 1
    hosts = by_name(data)
    assert hosts["node2"]["ok"] is True
    failed = [c for c in hosts["node1"]["result"]["checks"] if c["status"] == "FAIL"]
    assert failed and any("unknown authority" in c["detail"] for c in failed), failed
    rc, fixed, _ = run_json("configure-nodes", "-i", fleet.inv, env=ENV)
    assert rc == 0
    assert {h["name"]: h["result"]["changed"] for h in fixed["hosts"]} == {
        "node1": True, "node2": False, "node3": False}
    rc, _, _ = run_json("smoke-test", "-i", fleet.inv, env=ENV)
    assert rc == 0
