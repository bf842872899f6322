"""When the registry's certificate and its CA expire, said before the nodes' pulls start failing.

One line per certificate that expires within `WARN_WITHIN` (30 days), naming its date, its file and
what renews it (`Expiry.line`):

    the registry certificate /srv/reg.crt (brought) expires 2026-12-15 (in 10 days): replace it and re-run registry-up
    the registry certificate /srv/reg.crt (brought, served by master:5000) expires ...   (smoke-test)

- a brought certificate (`registry.tls.cert`) or CA (`registry.tls.ca`, every certificate of a
  bundle) is never replaced by nodecfg: the line says to replace it;
- nodecfg's own server certificate is renewed by registry-up when fewer than `tls.renew_before`
  remain (registry-up then says it renewed it, and warns about nothing); smoke-test names one that
  is within that window: `nodecfg registry-up --renew-cert` renews it;
- nodecfg's CA (10 years): `nodecfg ca-rotate begin` starts its rotation (docs/tls.md).

registry-up checks the files it serves from (`material_warnings`, pure). smoke-test checks the
certificate each registry host *serves* (`served_certificate`: a TLS handshake through that host's
SSH connection to the registry's port on it, the route registry-up's pushes take, so it needs no
more reach than registry-up; the certificate is read, not trusted, and nothing is sent after the
handshake), and the CA file(s) here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from nodecfg.inventory import Host, Inventory, TlsSettings
from nodecfg.registry import tls

WARN_WITHIN = dt.timedelta(days=30)
RENEW_OWN = "renew it now: nodecfg registry-up --renew-cert"
REPLACE_BROUGHT = "replace it and re-run registry-up"
ROTATE_OWN = "rotate it: nodecfg ca-rotate begin, then switch, then finish (docs/tls.md)"
REPLACE_BROUGHT_CA = ("replace it: the new CA beside the old in registry.tls.ca, configure-nodes, then the new "
                      "certificate, then the old CA out (docs/tls.md)")


@dataclass(frozen=True)
class Expiry:
    """A certificate that expires soon (or has expired): `line` is the warning."""

    what: str  # "the registry certificate", "the registry's CA"
    path: str  # its file here (and where it was served from, for smoke-test)
    brought: bool
    not_after: dt.datetime
    left: dt.timedelta
    remedy: str
    note: str = ""  # smoke-test: "served by master:5000"

    @property
    def line(self) -> str:
        origin = ("brought" if self.brought else "nodecfg's") + (f", {self.note}" if self.note else "")
        date = f"{self.not_after:%Y-%m-%d}"
        if self.left <= dt.timedelta(0):
            return f"{self.what} {self.path} ({origin}) EXPIRED {date}: {self.remedy}"
        return f"{self.what} {self.path} ({origin}) expires {date} ({tls.left_text(self.left)}): {self.remedy}"


def check(cert: x509.Certificate, *, what: str, path: str, brought: bool, remedy: str, now: dt.datetime,
          within: dt.timedelta = WARN_WITHIN, note: str = "") -> Expiry | None:
    """`cert` as a warning when fewer than `within` remain, else None (pure)."""
    left = cert.not_valid_after_utc - now
    if left >= within:
        return None
    return Expiry(what, path, brought, cert.not_valid_after_utc, left, remedy, note)


def own_window(settings: TlsSettings) -> dt.timedelta:
    """How close to its end nodecfg's own server certificate is warned about: where registry-up renews it."""
    return tls.renew_before(tls.lifetime(settings))


def cert_warning(settings: TlsSettings, cert_pem: bytes, path: str, now: dt.datetime,
                 ca_pem: bytes | None = None, note: str = "") -> Expiry | None:
    """The registry's server certificate, brought or nodecfg's (pure). nodecfg's own one that ends
    with its CA (`ca_pem`) is left to the CA's line: renewing it would not help."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    if not settings.provided and ca_pem is not None and _ends_with(cert, ca_pem):
        return None
    if settings.provided:
        return check(cert, what="the registry certificate", path=path, brought=True, remedy=REPLACE_BROUGHT, now=now,
                     note=note)
    return check(cert, what="the registry certificate", path=path, brought=False, remedy=RENEW_OWN, now=now,
                 within=own_window(settings), note=note)


def _ends_with(cert: x509.Certificate, ca_pem: bytes) -> bool:
    return any(cert.not_valid_after_utc >= ca.not_valid_after_utc for ca in x509.load_pem_x509_certificates(ca_pem)
               if cert.issuer == ca.subject)


def ca_warnings(settings: TlsSettings, ca_pem: bytes, path: str, now: dt.datetime) -> list[Expiry]:
    """Every certificate of the CA file (a bundle during a rotation), brought or nodecfg's (pure)."""
    out = []
    for ca in x509.load_pem_x509_certificates(ca_pem):
        w = check(ca, what="the registry's CA", path=path, brought=settings.provided,
                  remedy=REPLACE_BROUGHT_CA if settings.provided else ROTATE_OWN, now=now)
        if w is not None:
            out.append(w)
    return out


def material_warnings(settings: TlsSettings, materials: Iterable[tls.TlsMaterial], now: dt.datetime) -> tuple[str, ...]:
    """registry-up: the files each registry host serves with (after any renewal), one line each, once."""
    lines: list[str] = []
    for m in materials:
        w = cert_warning(settings, m.cert_pem, str(m.cert_path), now, m.ca_pem)
        found = [w] if w is not None else []
        found += ca_warnings(settings, m.ca_pem, str(m.ca_path), now)
        lines += [f.line for f in found if f.line not in lines]
    return tuple(lines)


# ---------------------------------------------------------------------------------------------
# smoke-test: what the registry serves


def served_certificate(host: Host, port: int, timeout: float) -> bytes:
    """The certificate (DER) the registry on `host` serves at `port`: a TLS handshake through the
    host's SSH connection to 127.0.0.1:`port` there (the route of registry-up's pushes)."""
    import time

    from nodecfg import ssh
    from nodecfg.push.channels import peer_certificate

    c = ssh.connect(host, fabric=False, give_up_at=time.monotonic() + timeout)
    try:
        return peer_certificate(c, port, timeout)
    finally:
        ssh.close(c)


def _own_file(inv: Inventory, host: Host) -> Path:
    settings = inv.registry.tls
    assert settings is not None
    stem = (tls.server_file_stem(inv.registry.address, inv.registry.port) if len(inv.registry_hosts) == 1
            else tls.server_file_stem(host.address, inv.registry.port))
    return (settings.ca_dir or tls.default_ca_dir()) / f"{stem}.crt"


def served_warnings(inv: Inventory, now: dt.datetime, timeout: float,
                    fetch: Callable[[Host, int, float], bytes] = served_certificate) -> tuple[str, ...]:
    """smoke-test: the certificate every registry host serves, and the CA file(s) here, one line
    each; a host whose certificate cannot be read is one line too (its local file is checked
    instead). Empty without TLS."""
    settings = inv.registry.tls
    if settings is None:
        return ()
    hosts: Sequence[Host] = inv.registry_hosts
    with ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="served-cert") as pool:
        futures = [pool.submit(fetch, h, inv.registry.port, timeout) for h in hosts]
    lines: list[str] = []
    cas = _ca_files(settings)
    own_ca = b"".join(p.read_bytes() for p in cas) if not settings.provided and cas else None
    for host, fut in zip(hosts, futures, strict=True):
        local = settings.cert if settings.provided else _own_file(inv, host)
        assert local is not None
        where = f"{host.name}:{inv.registry.port}"
        try:
            pem = x509.load_der_x509_certificate(fut.result()).public_bytes(Encoding.PEM)
            label, note = str(local), f"served by {where}"
            if local.exists() and _fingerprint(local.read_bytes()) != _fingerprint(pem):
                label, note = f"served by {where}", f"not the one in {local}: re-run registry-up"
        except Exception as exc:  # noqa: BLE001 -- any failure: said, and the local file checked instead
            lines.append(f"the certificate the registry on {where} serves could not be read ({exc}); "
                         f"checked {local} instead")
            try:
                pem, label, note = local.read_bytes(), str(local), ""
            except OSError:
                continue
        try:
            w = cert_warning(settings, pem, label, now, own_ca, note)
        except ValueError:
            continue
        if w is not None and w.line not in lines:
            lines.append(w.line)
    for path in cas:
        try:
            found = ca_warnings(settings, path.read_bytes(), str(path), now)
        except (OSError, ValueError):
            continue
        lines += [f.line for f in found if f.line not in lines]
    return tuple(lines)


def _ca_files(settings: TlsSettings) -> tuple[Path, ...]:
    if settings.provided:
        assert settings.ca is not None
        return (settings.ca,)
    return tls.trusted_cas(settings.ca_dir or tls.default_ca_dir())


def _fingerprint(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())
