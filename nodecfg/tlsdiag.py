"""Name a TLS failure from what a client on the node said (pure).

Clients word the same failure differently — curl and python3 through OpenSSL, wget through GnuTLS
or OpenSSL, docker and containerd through Go's crypto/x509 — so each failure is recognised by the
phrases any of them uses, and reported by one name with the fix for it:

    unknown authority   the node does not trust the CA that signed the registry's certificate
    name mismatch       the certificate does not name the address the node dials
    expired             the certificate is out of its validity (or the node's clock is off)
    HTTP to HTTPS       the node speaks plain HTTP to a registry that serves TLS
    HTTPS to HTTP       the node speaks TLS to a registry that serves plain HTTP
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TlsProblem:
    name: str
    fix: str

    def __str__(self) -> str:
        return f"{self.name}: {self.fix}"


_TABLE: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("certificate has expired", "has expired or is not yet valid", "certificate expired",
      "not yet valid", "issued certificate has expired"),
     "expired certificate",
     "the registry's certificate is outside its validity (check the node's clock); "
     "registry-up renews it"),
    (("no alternative certificate subject name matches", "hostname mismatch", "ip address mismatch",
      "owner does not match hostname",
      "doesn't match requested host name", "does not match requested host name",
      "certificate is valid for", "not valid for any names", "x509: certificate is not valid for"),
     "name mismatch",
     "the registry's certificate does not name the address the node dials; registry-up reissues it "
     "for registry.address and the master's names"),
    (("unable to get local issuer certificate", "certificate signed by unknown authority",
      "self-signed certificate in certificate chain", "self signed certificate in certificate chain",
      "unable to locally verify the issuer", "unable to verify the first certificate",
      "certificate verify failed", "issuer certificate", "have a known issuer", "is not trusted"),
     "unknown authority",
     "the node does not trust the CA that signed the registry's certificate; run configure-nodes "
     "to install the CA"),
    (("client sent an http request to an https server",),
     "HTTP spoken to an HTTPS registry",
     "the node's config reaches the registry over plain HTTP but it serves TLS; run configure-nodes"),
    (("http response to https client", "wrong version number", "packet length too long",
      "unexpected tls packet", "an unexpected tls packet was received",
      "record layer failure", "unexpected eof while reading", "tls: first record does not look like"),
     "HTTPS spoken to an HTTP registry",
     "the node speaks TLS but the registry serves plain HTTP; set registry.tls the same for "
     "registry-up and configure-nodes"),
)


def classify(message: str) -> TlsProblem | None:
    """The TLS failure `message` describes, or None when it is no TLS failure."""
    low = message.lower()
    for phrases, name, fix in _TABLE:
        if any(p in low for p in phrases):
            return TlsProblem(name, fix)
    return None
