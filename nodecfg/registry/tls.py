"""The registry's TLS material: a CA that lives on the operator machine and a server certificate.

`registry: {tls: true}` makes nodecfg generate both with the `cryptography` library (no openssl):

- the CA (ECDSA P-256, 10 years) in the CA directory — by default
  `${XDG_DATA_HOME:-~/.local/share}/nodecfg/ca`, or `$NODECFG_CA_DIR`, or `registry.tls.ca_dir` —
  as `ca.crt` (0644) and `ca.key` (0600, the directory 0700);
- a server certificate for the registry (ECDSA P-256, 1 year, or `registry.tls.cert_days`) whose
  SANs are the registry address,
  the master's name and address, `localhost` and 127.0.0.1 (the master's own checks go through
  the loopback), kept beside the CA as `<host>_<port>.crt` / `.key` (0600) so a re-run reuses it.

`registry: {tls: {cert: F, key: F, ca: F}}` brings your own instead; nodecfg then only checks that
the files parse, match and chain, and never writes them.

Everything here is pure given `now` and the bytes read, except `ensure_generated`, which reads and
writes the CA directory. Renewal happens when less than `renew_before(lifetime)` remains — 30 days,
or a third of the lifetime when that is shorter, so a 30-day certificate is not renewed on every
run — when the wanted names are not all covered, when the certificate was not issued by the CA, or
when asked (`registry-up --renew-cert`); nodes trust the CA, so a renewed server certificate
changes nothing on them. A certificate that already ends with its CA is not renewed for its date
(a new one could not last longer): the CA's own expiry is what is warned about then (expiry.py).

The CA directory also holds a CA rotation in progress (rotate.py): `ca-next.crt`/`.key` (made,
trusted by the nodes, not signing yet) and `ca-previous.crt`/`.key` (no longer signing, still
trusted); `ca_for_nodes` gives the nodes every one of them (`trusted_cas`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nodecfg.errors import UsageError
from nodecfg.inventory import TlsSettings

CA_LIFETIME = dt.timedelta(days=3650)
SERVER_DAYS = 365  # the server certificate's lifetime unless registry.tls.cert_days
RENEW_BEFORE = dt.timedelta(days=30)  # at most; a third of the lifetime when that is shorter
NEXT, PREVIOUS = "ca-next", "ca-previous"  # a CA rotation's files beside ca.crt (rotate.py)
BACKDATE = dt.timedelta(minutes=5)  # tolerate a node clock slightly behind the operator's


@dataclass(frozen=True)
class TlsMaterial:
    """What the master serves and what the nodes trust, as PEM bytes."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    ca_path: Path | None  # where the CA certificate lives on this machine (for messages)
    issued: str = ""  # "" when reused, else why a new server certificate was issued
    cert_path: Path | None = None  # where the server certificate lives on this machine


def lifetime(settings: TlsSettings) -> dt.timedelta:
    """How long a server certificate nodecfg makes is valid (registry.tls.cert_days)."""
    return dt.timedelta(days=settings.cert_days or SERVER_DAYS)


def renew_before(life: dt.timedelta) -> dt.timedelta:
    """Renewed when fewer than this remain: 30 days, or a third of the lifetime when shorter."""
    return min(RENEW_BEFORE, life / 3)


def default_ca_dir() -> Path:
    env = os.environ.get("NODECFG_CA_DIR")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "nodecfg" / "ca"


# ---------------------------------------------------------------------------------------------
# names


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        name = raw.strip("[]").lower()
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def wanted_names(registry_address: str, master_name: str, master_address: str) -> tuple[str, ...]:
    """The SANs a registry certificate needs: every name a node or the master may dial."""
    names: list[str] = []
    for raw in (registry_address, master_address, master_name, "localhost", "127.0.0.1"):
        n = raw.strip("[]").lower()
        if n and n not in names:
            names.append(n)
    return tuple(names)


def cert_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v).lower() for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)}


# ---------------------------------------------------------------------------------------------
# generation (pure given now)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(now: dt.datetime, common_name: str = "nodecfg registry CA") -> tuple[bytes, bytes]:
    """A new CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nodecfg")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_server_cert(ca_pem: bytes, ca_key_pem: bytes, names: Iterable[str], now: dt.datetime,
                     life: dt.timedelta = dt.timedelta(days=SERVER_DAYS)) -> tuple[bytes, bytes]:
    """A server certificate for `names` (first one is the subject CN), valid `life` from now but
    not past its CA: (certificate PEM, key PEM)."""
    names = list(names)
    if not names:
        raise ValueError("a server certificate needs at least one name")
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0].strip("[]"))]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + life, ca.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_san_entries(names)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


# ---------------------------------------------------------------------------------------------
# checks (pure given now)


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(serialization.Encoding.PEM, spki)
                == key.public_key().public_bytes(serialization.Encoding.PEM, spki))


def renewal_reason(cert_pem: bytes, ca_pem: bytes, names: Iterable[str], now: dt.datetime,
                   before: dt.timedelta = RENEW_BEFORE) -> str | None:
    """Why the server certificate must be issued again, or None if it is still good."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "the certificate does not parse"
    ca = x509.load_pem_x509_certificate(ca_pem)
    if not issued_by(cert, ca):
        return "it was not issued by this CA"
    left = cert.not_valid_after_utc - now
    if left < before and (cert.not_valid_after_utc < ca.not_valid_after_utc or left <= dt.timedelta(0)):
        when = f"expires {left_text(left)}" if left > dt.timedelta(0) else "has expired"
        return f"it {when} (renewed when fewer than {_days(before)} days remain)"
    missing = sorted({n.strip("[]").lower() for n in names} - cert_names(cert))
    if missing:
        return f"it does not name {', '.join(missing)}"
    return None


def left_text(td: dt.timedelta) -> str:
    """A time left, as people count it: "in 10 days" (a certificate made for 10 days, seconds ago,
    still has 10), "in 5 hours" under a day."""
    if td >= dt.timedelta(days=1):
        days = math.ceil(td.total_seconds() / 86400 - 0.01)
        return f"in {days} day{'s' if days != 1 else ''}"
    hours = max(1, math.ceil(td.total_seconds() / 3600))
    return f"in {hours} hour{'s' if hours != 1 else ''}"


def _days(td: dt.timedelta) -> str:
    return f"{td.days}" if td.days >= 1 else f"{td.total_seconds() / 86400:.2g}"


# ---------------------------------------------------------------------------------------------
# the CA directory (the only part that touches disk)


def write_private(path: Path, data: bytes, mode: int) -> None:
    """`data` into `path`, atomically: a new temp file beside it (O_EXCL: never a file or symlink
    someone planted), its mode set before the bytes go in, then renamed over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    os.close(fd)
    Path(tmp).replace(path)


def private_dir(ca_dir: Path) -> None:
    """The CA directory, made 0700, or an existing one tightened to 0700 (and its key to 0600); one
    that belongs to another user is refused: whoever owns it could swap the CA."""
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = ca_dir.stat()
    if st.st_uid != os.geteuid():
        raise UsageError(f"registry.tls: CA directory {ca_dir} belongs to uid {st.st_uid}, not to this user; "
                         "choose another (registry.tls.ca_dir or $NODECFG_CA_DIR)")
    if st.st_mode & 0o077:
        ca_dir.chmod(0o700)
    key = ca_dir / "ca.key"
    if key.exists() and key.stat().st_mode & 0o077:
        key.chmod(0o600)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"registry.tls: cannot read the {what} {path}: {exc.strerror}") from None


def _line_ended(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"


def server_file_stem(registry_address: str, port: int) -> str:
    return f"{registry_address.strip('[]').replace(':', '_')}_{port}"


def _ensure_ca(ca_dir: Path, now: dt.datetime, write: bool = True) -> tuple[bytes, bytes]:
    """The CA's (certificate, key); made when there is none — kept in `ca_dir`, or with `write`
    False (a --check run) only in memory."""
    ca_crt, ca_key = ca_dir / "ca.crt", ca_dir / "ca.key"
    if not write and not ca_crt.exists() and not ca_key.exists():
        return make_ca(now)
    if write:
        private_dir(ca_dir)
    if ca_crt.exists() != ca_key.exists():
        have, lack = (ca_crt, ca_key) if ca_crt.exists() else (ca_key, ca_crt)
        raise UsageError(f"registry.tls: {have} exists but {lack} does not; restore it or remove both "
                         "to make a new CA (every node must then trust the new one)")
    if not ca_crt.exists():
        cert_pem, key_pem = make_ca(now)
        write_private(ca_key, key_pem, 0o600)
        write_private(ca_crt, cert_pem, 0o644)
    return ca_crt.read_bytes(), ca_key.read_bytes()


def ensure_generated(ca_dir: Path, names: tuple[str, ...], stem: str, now: dt.datetime,
                     write: bool = True, life: dt.timedelta = dt.timedelta(days=SERVER_DAYS),
                     renew: str = "") -> TlsMaterial:
    """Load or make the CA in `ca_dir`, and load or (re)issue the server certificate `stem`, valid
    `life` (with `write` False, what is made stays in memory: a --check run writes nothing);
    `renew`: issue it again whatever it is, for this reason."""
    ca_crt = ca_dir / "ca.crt"
    srv_crt, srv_key = ca_dir / f"{stem}.crt", ca_dir / f"{stem}.key"
    try:
        ca_pem, ca_key_pem = _ensure_ca(ca_dir, now, write)
        issued = ""
        if srv_crt.exists() and srv_key.exists():
            cert_pem, key_pem = srv_crt.read_bytes(), srv_key.read_bytes()
            why = renewal_reason(cert_pem, ca_pem, names, now, renew_before(life))
            if why is None and not key_matches(cert_pem, key_pem):
                why = "its key does not match"
            why = renew or why
        else:
            why = "there was none"
        if why is not None:
            cert_pem, key_pem = make_server_cert(ca_pem, ca_key_pem, names, now, life)
            if write:
                write_private(srv_key, key_pem, 0o600)
                write_private(srv_crt, cert_pem, 0o644)
            issued = why
    except OSError as exc:
        raise UsageError(f"registry.tls: CA directory {ca_dir}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"registry.tls: CA directory {ca_dir}: a file does not parse ({exc})") from None
    return TlsMaterial(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem, ca_path=ca_crt, issued=issued,
                       cert_path=srv_crt)


def load_provided(settings: TlsSettings, names: Iterable[str], now: dt.datetime) -> TlsMaterial:
    """Bring-your-own material: read and check it (parses, key matches, chains, names, dates)."""
    assert settings.cert and settings.key and settings.ca
    cert_pem = _read(settings.cert, "certificate")
    key_pem = _read(settings.key, "key")
    ca_pem = _read(settings.ca, "CA certificate")
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
        if not key_matches(cert_pem, key_pem):
            raise UsageError(f"registry.tls.key: {settings.key} is not the key of {settings.cert}")
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise UsageError(f"registry.tls: a file does not parse ({exc})") from None
    # the CA file may be a bundle (old and new CA, during a rotation): the one that signed it counts
    signer = next((ca for ca in cas if issued_by(cert, ca)), cas[0])
    signer_pem = signer.public_bytes(serialization.Encoding.PEM)
    why = renewal_reason(cert_pem, signer_pem, names, now, before=dt.timedelta(0))
    if why is not None:
        raise UsageError(f"registry.tls.cert: {settings.cert} cannot serve the registry: {why}")
    return TlsMaterial(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem, ca_path=settings.ca,
                       cert_path=settings.cert)


def material(settings: TlsSettings, *, registry_address: str, port: int, master_name: str,
             master_address: str, now: dt.datetime | None = None, write: bool = True,
             stem: str | None = None, renew: str = "") -> TlsMaterial:
    """The TLS material for one registry host: generated (and kept, under `stem`: by default the
    registry address's; `renew`: issued again now, for this reason) or brought."""
    now = now or dt.datetime.now(dt.UTC)
    names = wanted_names(registry_address, master_name, master_address)
    if settings.provided:
        # a brought certificate must name what nodes dial; localhost is nodecfg's own wish
        return load_provided(settings, names[:1], now)
    return ensure_generated(settings.ca_dir or default_ca_dir(), names,
                            stem or server_file_stem(registry_address, port), now, write,
                            lifetime(settings), renew)


def trusted_cas(ca_dir: Path) -> tuple[Path, ...]:
    """The CA certificates of `ca_dir` the nodes trust, oldest first: a rotation's previous CA,
    ca.crt, a rotation's next CA (the same bytes before and after `ca-rotate switch`)."""
    return tuple(p for p in (ca_dir / f"{PREVIOUS}.crt", ca_dir / "ca.crt", ca_dir / f"{NEXT}.crt") if p.exists())


def ca_for_nodes(settings: TlsSettings, now: dt.datetime | None = None, write: bool = True) -> bytes:
    """The CA certificate(s) every node must trust, one PEM bundle (made now if the CA does not
    exist yet; with `write` False, made in memory only): during a CA rotation both CAs, oldest
    first (rotate.py)."""
    if settings.provided:
        assert settings.ca is not None
        pem = _read(settings.ca, "CA certificate")
        try:
            x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise UsageError(f"registry.tls.ca: {settings.ca} does not parse ({exc})") from None
        return pem
    ca_dir = settings.ca_dir or default_ca_dir()
    try:
        pem = _ensure_ca(ca_dir, now or dt.datetime.now(dt.UTC), write)[0]
        trusted = trusted_cas(ca_dir)
        if len(trusted) <= 1:
            return pem
        return b"".join(_line_ended(pem if p.name == "ca.crt" else p.read_bytes()) for p in trusted)
    except OSError as exc:
        raise UsageError(f"registry.tls: CA directory {ca_dir}: {exc.strerror}") from None


# ---------------------------------------------------------------------------------------------
# what the master holds


@dataclass(frozen=True)
class TlsFiles:
    """What a TLS registry serves with, as the master holds it in container.TLS_DIR (`TLS_NAMES`)."""

    cert: bytes
    key: bytes
    ca: bytes

    def contents(self) -> tuple[bytes, bytes, bytes]:
        return self.cert, self.key, self.ca  # in TLS_NAMES order

    @property
    def sums(self) -> str:
        return " ".join(hashlib.sha256(b).hexdigest() for b in self.contents())


TLS_NAMES = ("tls.crt", "tls.key", "ca.crt")  # as master_facts.sh and master_apply.sh name them


def master_files(settings: TlsSettings | None, *, registry_address: str, port: int, master_name: str,
                 master_address: str, say: Callable[[str], None], write: bool = True,
                 stem: str | None = None, renew: str = "") -> tuple[TlsFiles, TlsMaterial] | None:
    """The certificate, key and CA the registry serves with (registry.tls), made or reused here on
    the operator machine before the master is contacted (with `write` False — --check — anything
    made stays in memory; `renew`: issued again, for this reason), and the material they came from;
    None for plain HTTP."""
    if settings is None:
        return None
    m = material(settings, registry_address=registry_address, port=port, master_name=master_name,
                 master_address=master_address, write=write, stem=stem, renew=renew)
    if m.issued:
        until = x509.load_pem_x509_certificate(m.cert_pem).not_valid_after_utc
        say(f"{'issued' if write else 'would issue'} the TLS certificate of the registry on {master_name} "
            f"({m.issued}): {m.cert_path}, valid until {until:%Y-%m-%d}; CA: {m.ca_path}")
    return TlsFiles(m.cert_pem, m.key_pem, m.ca_pem), m
