"""TLS failures named from what curl, wget, python3, docker and containerd say (nodecfg/tlsdiag.py)."""

from __future__ import annotations

import pytest

from nodecfg.tlsdiag import classify

CASES = [
    # curl (OpenSSL 3)
    ("curl: (60) SSL certificate problem: unable to get local issuer certificate", "unknown authority"),
    ("curl: (60) SSL: no alternative certificate subject name matches target host name '10.0.0.9'",
     "name mismatch"),
    ("curl: (60) SSL certificate problem: certificate has expired", "expired certificate"),
    ("curl: (35) error:0A00010B:SSL routines::wrong version number", "HTTPS spoken to an HTTP registry"),
    # python3 ssl
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate",
     "unknown authority"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, certificate is not "
     "valid for '10.0.0.9'", "name mismatch"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired", "expired certificate"),
    # wget (GnuTLS)
    ("ERROR: The certificate of '10.0.0.9' is not trusted. ERROR: The certificate of '10.0.0.9' doesn't "
     "have a known issuer.", "unknown authority"),
    ("ERROR: cannot verify 10.0.0.9's certificate, issued by 'CN=nodecfg registry CA': Unable to locally "
     "verify the issuer's authority.", "unknown authority"),
    ("ERROR: certificate common name 'x' doesn't match requested host name '10.0.0.9'.", "name mismatch"),
    # docker / containerd (Go)
    ('Get "https://10.0.0.9:5000/v2/": tls: failed to verify certificate: x509: certificate signed by '
     "unknown authority", "unknown authority"),
    ("x509: certificate is valid for master, 10.0.0.1, not 10.0.0.9", "name mismatch"),
    ("x509: certificate has expired or is not yet valid: current time ...", "expired certificate"),
    ('Get "https://10.0.0.9:5000/v2/": http: server gave HTTP response to HTTPS client',
     "HTTPS spoken to an HTTP registry"),
    # the registry's own answer to plain HTTP on its TLS port
    ("Client sent an HTTP request to an HTTPS server.", "HTTP spoken to an HTTPS registry"),
    # not TLS at all
    ("dial tcp 10.0.0.9:5000: connect: connection refused", None),
    ("manifest unknown", None),
]


@pytest.mark.parametrize(("message", "name"), CASES, ids=[c[0][:50] for c in CASES])
def test_classify(message: str, name: str | None) -> None:
    got = classify(message)
    assert (got.name if got else None) == name
    if got:
        assert str(got).startswith(f"{name}: ")
