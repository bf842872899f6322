"""Issue 23 part 4: the registry's certificate over time, on a lab of one master and two nodes.

master  bookworm     registry:2 over TLS
node1   bookworm     docker 20.10 / containerd 1.6
node2   containerd2  docker 28 / containerd 2.1 / podman 5.4 (a CA bundle read by each)

1. A brought certificate (`tls: {cert, key, ca}`, made here with `cryptography`) valid 10 more days
   is named with its date and file by registry-up and by smoke-test (which reads the certificate
   the registry serves); `--renew-cert` refuses it in one line, touching nothing.
2. nodecfg's own certificate (`cert_days: 90`): `registry-up --renew-cert` changes the serial the
   registry serves, restarts the registry, and changes no node file; configure-nodes afterwards
   changes nothing, and the node still pulls.
3. A CA rotation, one command a step (`nodecfg ca-rotate begin|switch|finish`), the node pulling
   after each (docker, ctr, CRI and podman pulls: smoke-test).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import Lab, by_name, nodecfg, run_json, start_lab

# every file nodecfg writes on a node, with its bytes' sum (a backup or a rewrite shows up here)
NODE_FILES = ("find /etc/docker /etc/containerd /etc/containers /root/.docker /var/lib/nodecfg -type f "
              "2>/dev/null | sort | xargs -r sha256sum")
REGISTRY = "docker inspect -f '{{.Id}} {{.State.StartedAt}}' registry"
NODES = ("node1", "node2")


class Fleet:
    def __init__(self, lab: Lab, work: Path) -> None:
        self.lab, self.work = lab, work
        self.data = lab.inventory_data()
        self.address = self.data["master"]["address"]
        self.ep = f"{self.address}:5000"

    def inventory(self, name: str, tls: object) -> str:
        data = json.loads(json.dumps(self.data))
        data["registry"]["tls"] = tls
        return str(self.lab.write_inventory(self.work / name, data))

    def master_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(
            self.lab.ssh("master", "cat /etc/nodecfg/registry-tls/tls.crt").stdout.encode())

    def served_cert(self) -> x509.Certificate:
        """The certificate the registry serves, from a TLS handshake to the lab's master (waiting
        up to 15 s for a registry that is starting)."""
        end = time.monotonic() + 15
        while True:
            try:
                pem = ssl.get_server_certificate((self.address, 5000), timeout=5)
                return x509.load_pem_x509_certificate(pem.encode())
            except ConnectionRefusedError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.3)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return Fleet(start_lab(2, ("bookworm", "containerd2")), tmp_path_factory.mktemp("certs"))


def _server_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[x509.GeneralName],
                 days: int, cert: Path, key: Path) -> None:
    """A server certificate for `names`, signed by `ca`, valid `days` more days, into `cert` and `key`."""
    now = dt.datetime.now(dt.UTC)
    own = ec.generate_private_key(ec.SECP256R1())
    made = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry")]))
            .issuer_name(ca.subject).public_key(own.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=355)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert.write_bytes(made.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(own.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    key.chmod(0o600)


def _brought(work: Path, address: str, days: int) -> dict[str, str]:
    """A CA and a server certificate for `address` valid `days` more days, made here."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=300))
          .not_valid_after(now + dt.timedelta(days=400))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    files = {"cert": work / "site.crt", "key": work / "site.key", "ca": work / "site-ca.crt"}
    _server_cert(ca, ca_key, [x509.IPAddress(ipaddress.ip_address(address))], days, files["cert"], files["key"])
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return {k: str(v) for k, v in files.items()}


def _pulls(fleet: Fleet, inv: str) -> str:
    """smoke-test passes (every node pulls through docker, ctr, CRI and, on node2, podman): its
    warnings' lines."""
    rc, data, err = run_json("smoke-test", "-i", inv)
    assert rc == 0, json.dumps(data, indent=1) + err
    for name in NODES:
        checks = {c["name"]: c["status"] for c in by_name(data)[name]["result"]["checks"]}
        assert "FAIL" not in checks.values() and checks["cri"] == "ok", (name, checks)
    checks = {c["name"]: c["status"] for c in by_name(data)["node2"]["result"]["checks"]}
    assert checks["podman"] == "ok", checks
    return "\n".join(data.get("warnings", []))


def _node_files(fleet: Fleet) -> dict[str, str]:
    return {name: fleet.lab.ssh(name, NODE_FILES).stdout for name in NODES}


def test_a_brought_certificate_valid_10_more_days_is_named_with_its_date(fleet: Fleet) -> None:
    files = _brought(fleet.work, fleet.address, 10)
    inv = fleet.inventory("brought.yaml", files)
    date = f"{x509.load_pem_x509_certificate(Path(files['cert']).read_bytes()).not_valid_after_utc:%Y-%m-%d}"
    line = (f"the registry certificate {files['cert']} (brought) expires {date} (in 10 days): "
            "replace it and re-run registry-up")
    rc, up, err = run_json("registry-up", "-i", inv)
    assert rc == 0, err
    assert up["warnings"] == [line], up["warnings"]
    assert f"nodecfg: warning: {line}" in err.splitlines(), err
    conf = nodecfg("configure-nodes", "-i", inv)
    assert conf.returncode == 0, conf.stdout + conf.stderr
    # smoke-test reads the certificate the registry serves, through the master's SSH connection
    warned = _pulls(fleet, inv)
    assert warned == (f"the registry certificate {files['cert']} (brought, served by master:5000) expires "
                      f"{date} (in 10 days): replace it and re-run registry-up"), warned
    text = nodecfg("smoke-test", "-i", inv)
    assert text.returncode == 0 and f"expires {date} (in 10 days)" in text.stderr, text.stderr
    # a brought certificate is never replaced: --renew-cert refuses in one line, before any host
    before = fleet.lab.ssh("master", REGISTRY).stdout
    renew = nodecfg("registry-up", "-i", inv, "--renew-cert")
    assert renew.returncode == 2 and renew.stdout == ""
    assert renew.stderr == (f"nodecfg: error: registry-up --renew-cert: the registry's certificate is brought "
                            f"(registry.tls.cert: {files['cert']}): nodecfg never replaces it; renew it with its "
                            "issuer and re-run registry-up\n"), renew.stderr
    assert fleet.lab.ssh("master", REGISTRY).stdout == before
    assert fleet.served_cert().not_valid_after_utc.strftime("%Y-%m-%d") == date


def test_renew_cert_changes_the_serial_and_no_node_file(fleet: Fleet) -> None:
    inv = fleet.inventory("own.yaml", {"ca_dir": str(fleet.work / "ca"), "cert_days": 90})
    up = nodecfg("registry-up", "-i", inv)
    assert up.returncode == 0, up.stderr
    assert "warning" not in up.stderr, up.stderr
    conf = nodecfg("configure-nodes", "-i", inv)
    assert conf.returncode == 0, conf.stdout + conf.stderr
    first = fleet.master_cert()
    days = (first.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    assert 89.9 < days <= 90, days  # registry.tls.cert_days
    assert fleet.served_cert().serial_number == first.serial_number
    files, started = _node_files(fleet), fleet.lab.ssh("master", REGISTRY).stdout

    renew = nodecfg("registry-up", "-i", inv, "--renew-cert")
    assert renew.returncode == 0, renew.stderr
    assert "(asked for (--renew-cert))" in renew.stderr and "restart (TLS certificate changed)" in renew.stdout, \
        renew.stdout + renew.stderr
    second = fleet.master_cert()
    assert second.serial_number != first.serial_number
    assert second.issuer == first.issuer and fleet.served_cert().serial_number == second.serial_number
    cid, when = fleet.lab.ssh("master", REGISTRY).stdout.split()
    assert cid == started.split()[0] and when != started.split()[1]  # the same container, restarted
    assert _node_files(fleet) == files  # no node file changed
    rc, data, err = run_json("configure-nodes", "-i", inv)
    assert rc == 0, err
    assert {n: by_name(data)[n]["result"]["changed"] for n in NODES} == dict.fromkeys(NODES, False)
    assert _node_files(fleet) == files
    assert _pulls(fleet, inv) == ""
    again = nodecfg("registry-up", "-i", inv)  # an unchanged re-run keeps the new certificate
    assert again.returncode == 0 and "keep" in again.stdout, again.stdout
    assert fleet.master_cert().serial_number == second.serial_number


def test_nodecfgs_own_certificate_near_its_end_is_renewed_and_said_not_warned(fleet: Fleet) -> None:
    """nodecfg's certificate with 10 days left (made here with nodecfg's CA, as a year-old one would
    be): registry-up renews it and says so; no warning. smoke-test, before that, warns of the one
    the registry serves."""
    ca_dir = fleet.work / "ca"
    inv = fleet.inventory("own.yaml", {"ca_dir": str(ca_dir), "cert_days": 90})
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    crt, key = ca_dir / f"{fleet.address}_5000.crt", ca_dir / f"{fleet.address}_5000.key"
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(fleet.address)), x509.DNSName("master"),
                                     x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    _server_cert(ca, ca_key, names, 10, crt, key)
    old = x509.load_pem_x509_certificate(crt.read_bytes())
    date = f"{old.not_valid_after_utc:%Y-%m-%d}"
    # on the master: what a registry-up of a year ago left there, served since
    for name, path in (("tls.crt", crt), ("tls.key", key)):
        fleet.lab.ssh("master", f"cat > /etc/nodecfg/registry-tls/{name}", stdin=path.read_text())
    fleet.lab.ssh("master", "docker restart registry >/dev/null")
    assert fleet.served_cert().serial_number == old.serial_number
    warned = _pulls(fleet, inv)
    assert warned == (f"the registry certificate {crt} (nodecfg's, served by master:5000) "
                      f"expires {date} (in 10 days): renew it now: nodecfg registry-up --renew-cert"), warned

    up = nodecfg("registry-up", "-i", inv)
    assert up.returncode == 0, up.stderr
    assert "warning" not in up.stderr, up.stderr
    assert ("issued the TLS certificate of the registry on master (it expires in 10 days (renewed when fewer "
            "than 30 days remain))") in up.stderr, up.stderr
    new = fleet.served_cert()
    assert new.serial_number != old.serial_number and new.not_valid_after_utc > old.not_valid_after_utc
    assert _pulls(fleet, inv) == ""


def _certs(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def test_a_ca_rotation_one_command_a_step_the_node_pulling_after_each(fleet: Fleet) -> None:
    ca_dir = fleet.work / "ca"
    inv = fleet.inventory("own.yaml", {"ca_dir": str(ca_dir), "cert_days": 90})
    old = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    trust = [(n, f"cat /etc/docker/certs.d/{fleet.ep}/ca.crt") for n in NODES]
    trust += [(n, f"cat /etc/containerd/certs.d/{fleet.ep}/ca.crt") for n in NODES]
    trust += [("node2", f"cat /etc/containers/certs.d/{fleet.ep}/ca.crt")]

    begin = nodecfg("ca-rotate", "begin", "-i", inv)
    assert begin.returncode == 0, begin.stdout + begin.stderr
    assert "next: nodecfg smoke-test, then nodecfg ca-rotate switch" in begin.stderr, begin.stderr
    new = x509.load_pem_x509_certificate((ca_dir / "ca-next.crt").read_bytes())
    for name, cmd in trust:
        assert _certs(fleet.lab.ssh(name, cmd).stdout) == [old, new], (name, cmd)
    assert fleet.master_cert().issuer == old.subject
    _pulls(fleet, inv)

    files = _node_files(fleet)
    switch = nodecfg("ca-rotate", "switch", "-i", inv)
    assert switch.returncode == 0, switch.stdout + switch.stderr
    assert "it was not issued by this CA" in switch.stderr, switch.stderr
    assert fleet.master_cert().issuer == new.subject and fleet.served_cert().issuer == new.subject
    assert _node_files(fleet) == files  # the switch changes no node file
    _pulls(fleet, inv)

    finish = nodecfg("ca-rotate", "finish", "-i", inv)
    assert finish.returncode == 0, finish.stdout + finish.stderr
    for name, cmd in trust:
        assert _certs(fleet.lab.ssh(name, cmd).stdout) == [new], (name, cmd)
    assert not (ca_dir / "ca-previous.crt").exists() and len(list((ca_dir / "retired").iterdir())) == 2
    _pulls(fleet, inv)
    rc, data, _ = run_json("configure-nodes", "-i", inv)
    assert rc == 0 and {n: by_name(data)[n]["result"]["changed"] for n in NODES} == dict.fromkeys(NODES, False)
