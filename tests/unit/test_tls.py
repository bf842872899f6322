"""Certificate generation and reuse (nodecfg/registry/tls.py): SANs, validity, key usage, renewal."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from nodecfg.errors import UsageError
from nodecfg.registry import tls

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
NAMES = tls.wanted_names("10.0.0.1", "master", "10.0.0.1")


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return tls.make_ca(NOW)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_wanted_names_dedup_and_loopback() -> None:
    assert tls.wanted_names("reg.example", "master", "10.0.0.1") == (
        "reg.example", "10.0.0.1", "master", "localhost", "127.0.0.1")
    assert tls.wanted_names("[fd00::1]", "m", "fd00::1") == ("fd00::1", "m", "localhost", "127.0.0.1")


def test_ca_is_a_ca(ca: tuple[bytes, bytes]) -> None:
    cert = _cert(ca[0])
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert bc.ca and bc.path_length == 0
    assert ku.key_cert_sign and ku.crl_sign
    assert cert.not_valid_after_utc - NOW >= dt.timedelta(days=3649)
    assert b"PRIVATE KEY" in ca[1]


@pytest.mark.parametrize(("names", "dns", "ips"), [
    (NAMES, {"master", "localhost"}, {"10.0.0.1", "127.0.0.1"}),
    (("reg.example.com", "REG.example.com"), {"reg.example.com"}, set()),
    (("[fd00::5]",), set(), {"fd00::5"}),
])
def test_server_cert_names(ca: tuple[bytes, bytes], names: tuple[str, ...], dns: set[str], ips: set[str]) -> None:
    cert_pem, key_pem = tls.make_server_cert(ca[0], ca[1], names, NOW)
    cert = _cert(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == dns
    assert {str(i) for i in san.get_values_for_type(x509.IPAddress)} == ips
    assert all(isinstance(i, ipaddress.IPv4Address | ipaddress.IPv6Address)
               for i in san.get_values_for_type(x509.IPAddress))
    assert tls.key_matches(cert_pem, key_pem)
    assert tls.issued_by(cert, _cert(ca[0]))


def test_server_cert_usage_and_validity(ca: tuple[bytes, bytes]) -> None:
    cert = _cert(tls.make_server_cert(ca[0], ca[1], NAMES, NOW)[0])
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_before_utc < NOW  # backdated for clock skew
    assert dt.timedelta(days=364) < cert.not_valid_after_utc - NOW <= dt.timedelta(days=365)


@pytest.mark.parametrize(("age_days", "names", "expect"), [
    (0, NAMES, None),
    (300, NAMES, None),  # 65 days left
    (336, NAMES, "expires in 29 days"),
    (400, NAMES, "has expired"),
    (0, (*NAMES, "master.lan"), "does not name master.lan"),
])
def test_renewal_reason(ca: tuple[bytes, bytes], age_days: int, names: tuple[str, ...],
                        expect: str | None) -> None:
    cert_pem, _ = tls.make_server_cert(ca[0], ca[1], NAMES, NOW)
    why = tls.renewal_reason(cert_pem, ca[0], names, NOW + dt.timedelta(days=age_days))
    assert why == expect if expect is None else expect in (why or "")


def test_renewal_other_ca(ca: tuple[bytes, bytes]) -> None:
    other = tls.make_ca(NOW)
    cert_pem, _ = tls.make_server_cert(other[0], other[1], NAMES, NOW)
    assert tls.renewal_reason(cert_pem, ca[0], NAMES, NOW) == "it was not issued by this CA"
    assert tls.renewal_reason(b"junk", ca[0], NAMES, NOW) == "the certificate does not parse"


def test_ensure_generated_reuses_then_renews(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    first = tls.ensure_generated(d, NAMES, "10.0.0.1_5000", NOW)
    assert first.issued == "there was none"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "10.0.0.1_5000.key").stat().st_mode) == 0o600
    again = tls.ensure_generated(d, NAMES, "10.0.0.1_5000", NOW + dt.timedelta(days=100))
    assert again.issued == "" and again.cert_pem == first.cert_pem and again.ca_pem == first.ca_pem
    later = tls.ensure_generated(d, NAMES, "10.0.0.1_5000", NOW + dt.timedelta(days=340))
    assert "expires in" in later.issued
    assert later.cert_pem != first.cert_pem and later.ca_pem == first.ca_pem  # same CA: nodes unaffected


def test_check_runs_write_nothing(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    m = tls.ensure_generated(d, NAMES, "s", NOW, write=False)
    assert m.issued == "there was none" and tls.key_matches(m.cert_pem, m.key_pem)
    assert tls.ca_for_nodes(tls.TlsSettings(ca_dir=d), NOW, write=False).startswith(b"-----BEGIN CERTIFICATE")
    assert not d.exists()
    # with a CA in place, a --check run reads it and still writes nothing new
    made = tls.ensure_generated(d, NAMES, "s", NOW)
    before = sorted(p.name for p in d.iterdir())
    later = tls.ensure_generated(d, NAMES, "s", NOW + dt.timedelta(days=340), write=False)
    assert later.ca_pem == made.ca_pem and later.cert_pem != made.cert_pem and "expires in" in later.issued
    assert sorted(p.name for p in d.iterdir()) == before
    assert (d / "s.crt").read_bytes() == made.cert_pem


def test_an_existing_ca_directory_is_made_private(tmp_path: Path) -> None:
    """A CA directory someone made loose (0755, a 0644 key) is tightened before nodecfg keeps a key in
    it; made by another user, it is refused."""
    d = tmp_path / "ca"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    tls.ensure_generated(d, NAMES, "s", NOW)
    (d / "ca.key").chmod(0o644)
    d.chmod(0o755)
    tls.ensure_generated(d, NAMES, "s", NOW)
    assert d.stat().st_mode & 0o777 == 0o700 and (d / "ca.key").stat().st_mode & 0o777 == 0o600
    import os

    if os.geteuid() == 0:  # root can hand the directory to another user
        os.chown(d, 4242, 4242)
        with pytest.raises(UsageError, match="belongs to uid 4242"):
            tls.ensure_generated(d, NAMES, "s", NOW)


def test_key_files_are_never_written_through_a_planted_file(tmp_path: Path) -> None:
    """The CA key goes to a new temp file (O_EXCL) renamed into place: a symlink planted at the old
    fixed temp name (`.ca.key.tmp`) is not followed, its target not touched."""
    d = tmp_path / "ca"
    d.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("not a key\n")
    (d / ".ca.key.tmp").symlink_to(target)
    (d / ".s.key.tmp").symlink_to(target)
    tls.ensure_generated(d, NAMES, "s", NOW)
    assert target.read_text() == "not a key\n"
    assert (d / "ca.key").read_bytes().startswith(b"-----BEGIN") and not (d / "ca.key").is_symlink()
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == ["ca.crt", "ca.key", "s.crt", "s.key"]


def test_ensure_generated_half_ca(tmp_path: Path) -> None:
    tls.ensure_generated(tmp_path, NAMES, "s", NOW)
    (tmp_path / "ca.key").unlink()
    with pytest.raises(UsageError, match=r"ca.crt exists but .*ca.key does not"):
        tls.ensure_generated(tmp_path, NAMES, "s", NOW)


def test_provided_checked(tmp_path: Path, ca: tuple[bytes, bytes]) -> None:
    cert_pem, key_pem = tls.make_server_cert(ca[0], ca[1], ("reg.example",), NOW)
    other_key = tls.make_server_cert(ca[0], ca[1], ("reg.example",), NOW)[1]
    for name, data in {"c.crt": cert_pem, "k.key": key_pem, "ca.crt": ca[0], "o.key": other_key}.items():
        (tmp_path / name).write_bytes(data)
    good = tls.TlsSettings(cert=tmp_path / "c.crt", key=tmp_path / "k.key", ca=tmp_path / "ca.crt")
    m = tls.material(good, registry_address="reg.example", port=5000, master_name="m",
                     master_address="10.0.0.1", now=NOW)
    assert m.cert_pem == cert_pem and m.issued == ""
    with pytest.raises(UsageError, match="is not the key of"):
        tls.material(tls.TlsSettings(cert=good.cert, key=tmp_path / "o.key", ca=good.ca),
                     registry_address="reg.example", port=5000, master_name="m", master_address="x", now=NOW)
    with pytest.raises(UsageError, match=r"does not name other\.example"):
        tls.material(good, registry_address="other.example", port=5000, master_name="m",
                     master_address="x", now=NOW)
    with pytest.raises(UsageError, match="cannot read the certificate"):
        tls.material(tls.TlsSettings(cert=tmp_path / "nope", key=good.key, ca=good.ca),
                     registry_address="reg.example", port=5000, master_name="m", master_address="x", now=NOW)
