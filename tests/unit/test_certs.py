"""Issue 23 part 4: certificate lifetimes, expiry warnings, --renew-cert, and the CA rotation.

Pure logic from fixture tables (nodecfg/registry/tls.py, expiry.py, rotate.py) and the CLI's
one-line refusals; the lab proves the rest (tests/e2e/test_certs.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from nodecfg.cli import main
from nodecfg.errors import UsageError
from nodecfg.inventory import Host, Inventory, RegistrySettings, TlsSettings
from nodecfg.registry import expiry, rotate, tls

NOW = dt.datetime(2026, 12, 5, 1, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
NAMES = tls.wanted_names("10.0.0.1", "master", "10.0.0.1")


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return tls.make_ca(NOW)


# ---------------------------------------------------------------------------------------------
# lifetimes and renewal


@pytest.mark.parametrize(("days", "renew"), [
    (None, 30 * DAY), (365, 30 * DAY), (90, 30 * DAY), (30, 10 * DAY), (3, DAY), (1, DAY / 3), (3650, 30 * DAY),
])
def test_renewal_threshold_is_30_days_or_a_third_of_the_lifetime(days: int | None, renew: dt.timedelta) -> None:
    assert tls.renew_before(tls.lifetime(TlsSettings(cert_days=days))) == renew


@pytest.mark.parametrize(("days", "reused_at", "renewed_at"), [
    (365, 334, 336),  # 31 days left: kept; 29: renewed
    (30, 19, 21),  # a 30-day certificate: kept with 11 days left, renewed with 9 (not on every run)
    (1, 0.6, 0.7),  # one day: renewed in its last 8 hours
])
def test_cert_days_sets_the_lifetime_and_the_renewal(tmp_path: Path, days: int, reused_at: float,
                                                     renewed_at: float) -> None:
    life = tls.lifetime(TlsSettings(cert_days=days))
    first = tls.ensure_generated(tmp_path, NAMES, "s", NOW, life=life)
    assert _cert(first.cert_pem).not_valid_after_utc == NOW + days * DAY
    assert first.cert_path == tmp_path / "s.crt"
    kept = tls.ensure_generated(tmp_path, NAMES, "s", NOW + reused_at * DAY, life=life)
    assert kept.issued == "" and kept.cert_pem == first.cert_pem
    renewed = tls.ensure_generated(tmp_path, NAMES, "s", NOW + renewed_at * DAY, life=life)
    assert renewed.issued.startswith("it expires in") and renewed.cert_pem != first.cert_pem


def test_renew_issues_a_new_serial_from_the_same_ca(tmp_path: Path) -> None:
    first = tls.ensure_generated(tmp_path, NAMES, "s", NOW)
    again = tls.ensure_generated(tmp_path, NAMES, "s", NOW + DAY, renew="asked for (--renew-cert)")
    assert again.issued == "asked for (--renew-cert)"
    assert _cert(again.cert_pem).serial_number != _cert(first.cert_pem).serial_number
    assert again.ca_pem == first.ca_pem and (tmp_path / "s.crt").read_bytes() == again.cert_pem
    assert tls.issued_by(_cert(again.cert_pem), _cert(again.ca_pem))


def test_a_certificate_that_ends_with_its_ca_is_not_renewed_on_every_run(tmp_path: Path) -> None:
    """A CA with 10 days left caps the server certificate at its own end: issuing it again could not
    help, so registry-up does not restart the registry on every run; the CA is warned about."""
    old_now = NOW - (3650 - 10) * DAY
    ca_pem, ca_key = tls.make_ca(old_now)
    (tmp_path / "ca.crt").write_bytes(ca_pem)
    (tmp_path / "ca.key").write_bytes(ca_key)
    first = tls.ensure_generated(tmp_path, NAMES, "s", NOW)
    assert _cert(first.cert_pem).not_valid_after_utc == _cert(ca_pem).not_valid_after_utc
    assert tls.ensure_generated(tmp_path, NAMES, "s", NOW + DAY).issued == ""
    lines = expiry.material_warnings(TlsSettings(ca_dir=tmp_path), [first], NOW)
    end = f"{_cert(ca_pem).not_valid_after_utc:%Y-%m-%d} (in 10 days)"
    assert lines == (f"the registry's CA {tmp_path / 'ca.crt'} (nodecfg's) expires {end}: rotate it: "
                     "nodecfg ca-rotate begin, then switch, then finish (docs/tls.md)",), lines


def test_a_brought_ca_bundle_chains_through_the_ca_that_signed(tmp_path: Path, ca: tuple[bytes, bytes]) -> None:
    old, _ = tls.make_ca(NOW, "old CA")
    cert_pem, key_pem = tls.make_server_cert(ca[0], ca[1], ("reg.example",), NOW)
    for name, data in {"c.crt": cert_pem, "k.key": key_pem, "ca.crt": old + ca[0]}.items():
        (tmp_path / name).write_bytes(data)
    brought = TlsSettings(cert=tmp_path / "c.crt", key=tmp_path / "k.key", ca=tmp_path / "ca.crt")
    m = tls.material(brought, registry_address="reg.example", port=5000, master_name="m",
                     master_address="10.0.0.1", now=NOW)
    assert m.ca_pem == old + ca[0] and m.cert_path == brought.cert
    assert tls.ca_for_nodes(brought) == old + ca[0]


# ---------------------------------------------------------------------------------------------
# expiry warnings


def _brought(tmp_path: Path, ca: tuple[bytes, bytes], days: float) -> tuple[TlsSettings, tls.TlsMaterial]:
    cert_pem, key_pem = tls.make_server_cert(ca[0], ca[1], ("reg.example",), NOW, life=days * DAY)
    for name, data in {"reg.crt": cert_pem, "reg.key": key_pem, "ca.crt": ca[0]}.items():
        (tmp_path / name).write_bytes(data)
    settings = TlsSettings(cert=tmp_path / "reg.crt", key=tmp_path / "reg.key", ca=tmp_path / "ca.crt")
    return settings, tls.material(settings, registry_address="reg.example", port=5000, master_name="m",
                                  master_address="10.0.0.1", now=NOW)


@pytest.mark.parametrize(("days", "seen_after", "words"), [
    (10, 0, "expires 2026-12-15 (in 10 days): replace it and re-run registry-up"),
    (10, 60, "expires 2026-12-15 (in 10 days): replace it"),  # made a minute ago: still "10 days"
    (29, 0, "expires 2027-01-03 (in 29 days)"),
    (1, 0, "expires 2026-12-06 (in 1 day)"),
    (0.5, 0, "expires 2026-12-05 (in 12 hours)"),
    (31, 0, None),
])
def test_a_brought_certificate_is_named_with_its_date(tmp_path: Path, ca: tuple[bytes, bytes], days: float,
                                                      seen_after: int, words: str | None) -> None:
    settings, m = _brought(tmp_path, ca, days)
    lines = expiry.material_warnings(settings, [m, m], NOW + dt.timedelta(seconds=seen_after))
    if words is None:
        assert lines == ()
        return
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"the registry certificate {tmp_path / 'reg.crt'} (brought) {words}"), lines
    assert lines[0].endswith(": replace it and re-run registry-up")


def test_an_expired_certificate_says_so(ca: tuple[bytes, bytes]) -> None:
    cert = _cert(tls.make_server_cert(ca[0], ca[1], ("r",), NOW, life=DAY)[0])
    w = expiry.check(cert, what="the registry certificate", path="/x.crt", brought=True,
                     remedy=expiry.REPLACE_BROUGHT, now=NOW + 2 * DAY)
    assert w is not None and w.line == ("the registry certificate /x.crt (brought) EXPIRED 2026-12-06: "
                                        "replace it and re-run registry-up")


def test_nodecfgs_own_certificate_is_warned_only_where_registry_up_would_renew_it(ca: tuple[bytes, bytes]) -> None:
    own = TlsSettings(cert_days=90)
    fresh = tls.make_server_cert(ca[0], ca[1], ("r",), NOW, life=90 * DAY)[0]
    assert expiry.cert_warning(own, fresh, "/c/r.crt", NOW + 55 * DAY) is None  # 35 days left
    w = expiry.cert_warning(own, fresh, "/c/r.crt", NOW + 70 * DAY)
    assert w is not None and w.line.endswith("(nodecfg's) expires 2027-03-05 (in 20 days): "
                                             "renew it now: nodecfg registry-up --renew-cert"), w.line
    short = TlsSettings(cert_days=10)  # a 10-day certificate is not nagged about all its life
    ten = tls.make_server_cert(ca[0], ca[1], ("r",), NOW, life=10 * DAY)[0]
    assert expiry.cert_warning(short, ten, "/c/r.crt", NOW + DAY) is None
    assert expiry.cert_warning(short, ten, "/c/r.crt", NOW + 8 * DAY) is not None


def _inv(settings: TlsSettings, replicas: tuple[Host, ...] = ()) -> Inventory:
    return Inventory(master=Host("master", "10.0.0.1"), nodes=(Host("n1", "10.0.0.2"),),
                     registry=RegistrySettings("reg.example", tls=settings, replicas=replicas))


def test_smoke_reads_the_served_certificate(tmp_path: Path, ca: tuple[bytes, bytes]) -> None:
    settings, m = _brought(tmp_path, ca, 10)
    der = _cert(m.cert_pem).public_bytes(tls.serialization.Encoding.DER)
    asked: list[tuple[str, int]] = []

    def fetch(host: Host, port: int, timeout: float) -> bytes:
        asked.append((host.name, port))
        return der

    lines = expiry.served_warnings(_inv(settings), NOW, 5.0, fetch=fetch)
    assert asked == [("master", 5000)]
    assert lines == (f"the registry certificate {tmp_path / 'reg.crt'} (brought, served by master:5000) "
                     "expires 2026-12-15 (in 10 days): replace it and re-run registry-up",)


def test_smoke_names_a_served_certificate_that_is_not_the_files(tmp_path: Path, ca: tuple[bytes, bytes]) -> None:
    settings, _ = _brought(tmp_path, ca, 10)
    other = tls.make_server_cert(ca[0], ca[1], ("reg.example",), NOW, life=5 * DAY)[0]
    der = _cert(other).public_bytes(tls.serialization.Encoding.DER)
    lines = expiry.served_warnings(_inv(settings), NOW, 5.0, fetch=lambda h, p, t: der)
    assert lines == (f"the registry certificate served by master:5000 (brought, not the one in {tmp_path / 'reg.crt'}: "
                     "re-run registry-up) expires 2026-12-10 (in 5 days): replace it and re-run registry-up",)


def test_smoke_falls_back_to_the_file_when_the_served_one_cannot_be_read(tmp_path: Path,
                                                                        ca: tuple[bytes, bytes]) -> None:
    settings, _ = _brought(tmp_path, ca, 10)

    def fetch(host: Host, port: int, timeout: float) -> bytes:
        raise OSError("connection refused")

    lines = expiry.served_warnings(_inv(settings, (Host("r2", "10.0.0.3"),)), NOW, 5.0, fetch=fetch)
    assert lines[0].startswith("the certificate the registry on master:5000 serves could not be read "
                               "(connection refused); checked ")
    assert lines[1] == (f"the registry certificate {tmp_path / 'reg.crt'} (brought) expires 2026-12-15 "
                        "(in 10 days): replace it and re-run registry-up")
    assert lines[2].startswith("the certificate the registry on r2:5000 serves could not be read")
    assert len(lines) == 3  # the same file's line once


def test_smoke_warns_of_nothing_over_plain_http() -> None:
    inv = Inventory(master=Host("master", "10.0.0.1"), nodes=(Host("n1", "10.0.0.2"),),
                    registry=RegistrySettings("reg.example"))
    assert expiry.served_warnings(inv, NOW, 5.0, fetch=lambda h, p, t: b"") == ()


# ---------------------------------------------------------------------------------------------
# CA rotation


def test_a_rotation_in_three_steps(tmp_path: Path) -> None:
    own = TlsSettings(ca_dir=tmp_path)
    first = tls.ensure_generated(tmp_path, NAMES, "s", NOW)
    old = first.ca_pem
    assert tls.ca_for_nodes(own) == old  # no rotation: the bytes nodes have today, unchanged
    with pytest.raises(UsageError, match=r"no rotation under way.*nodecfg ca-rotate begin"):  # nothing begun
        rotate.run_step("switch", tmp_path, NOW)
    done = rotate.run_step("begin", tmp_path, NOW)
    assert done.then == "configure-nodes" and "ca-next.crt" in done.said
    new = (tmp_path / "ca-next.crt").read_bytes()
    assert (tmp_path / "ca-next.key").stat().st_mode & 0o777 == 0o600
    both = tls.ca_for_nodes(own)
    assert both == old + new and rotate.state(tmp_path) == "begun"
    assert rotate.run_step("begin", tmp_path, NOW + DAY).said.startswith("the new CA")  # again: kept
    assert (tmp_path / "ca-next.crt").read_bytes() == new
    with pytest.raises(UsageError, match="does not sign yet: nodecfg ca-rotate switch first"):
        rotate.run_step("finish", tmp_path, NOW)
    # the registry still serves the old CA's certificate, which both trust
    assert tls.ensure_generated(tmp_path, NAMES, "s", NOW).issued == ""

    assert rotate.run_step("switch", tmp_path, NOW).then == "registry-up"
    assert (tmp_path / "ca.crt").read_bytes() == new and (tmp_path / "ca-previous.crt").read_bytes() == old
    assert tls.ca_for_nodes(own) == both  # nodes: no change at the switch
    again = tls.ensure_generated(tmp_path, NAMES, "s", NOW)
    assert again.issued == "it was not issued by this CA" and tls.issued_by(_cert(again.cert_pem), _cert(new))
    with pytest.raises(UsageError, match=r"switched already.*nodecfg ca-rotate finish"):
        rotate.run_step("begin", tmp_path, NOW)
    assert rotate.run_step("switch", tmp_path, NOW).said.startswith("the new CA")  # again: registry-up again

    done = rotate.run_step("finish", tmp_path, NOW)
    assert done.then == "configure-nodes" and rotate.state(tmp_path) == "none"
    assert tls.ca_for_nodes(own) == new
    retired = sorted(p.name for p in (tmp_path / "retired").iterdir())
    assert retired == ["ca-20261205T010000Z.crt", "ca-20261205T010000Z.key"]
    assert rotate.run_step("finish", tmp_path, NOW).said.startswith("no old CA left")
    assert tls.ensure_generated(tmp_path, NAMES, "s", NOW).issued == ""


def test_begin_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="there is no CA in"):
        rotate.run_step("begin", tmp_path, NOW)


def test_the_new_ca_has_a_name_of_its_own(tmp_path: Path) -> None:
    tls.ensure_generated(tmp_path, NAMES, "s", NOW)
    rotate.run_step("begin", tmp_path, NOW)
    old, new = (_cert((tmp_path / n).read_bytes()) for n in ("ca.crt", "ca-next.crt"))
    assert old.subject != new.subject  # verifiers pick the issuer by name: two CAs, two names


# ---------------------------------------------------------------------------------------------
# the CLI's refusals: one line, exit 2, no host contacted


def _inventory(tmp_path: Path, tls_yaml: str) -> str:
    inv = tmp_path / "inv.yaml"
    inv.write_text(f"master: {{address: 127.0.0.10}}\nnodes: [127.0.0.11]\nregistry:\n  tls: {tls_yaml}\n")
    return str(inv)


@pytest.mark.parametrize(("argv", "tls_yaml", "words"), [
    (["registry-up", "--renew-cert"], "{cert: c.crt, key: c.key, ca: ca.crt}",
     "registry-up --renew-cert: the registry's certificate is brought (registry.tls.cert: {d}/c.crt): "
     "nodecfg never replaces it"),
    (["registry-up", "--renew-cert"], "false", "registry.tls is not set"),
    (["ca-rotate", "begin"], "{cert: c.crt, key: c.key, ca: ca.crt}",
     "ca-rotate: the CA is brought (registry.tls.ca: {d}/ca.crt)"),
    (["ca-rotate", "switch"], "{ca_dir: ca}", "ca-rotate switch: no rotation under way"),
    (["ca-rotate", "begin"], "{ca_dir: ca}", "ca-rotate begin: there is no CA in {d}/ca"),
])
def test_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], tls_yaml: str,
                               words: str) -> None:
    for name in ("c.crt", "c.key", "ca.crt"):
        (tmp_path / name).write_text("x")
    assert main([*argv, "-i", _inventory(tmp_path, tls_yaml)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words.format(d=tmp_path) in err, err


def test_ca_rotate_bundle_is_for_switch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca-rotate", "begin", "--bundle", "b.tar", "-i", _inventory(tmp_path, "true")]) == 2
    assert capsys.readouterr().err == ("nodecfg: error: ca-rotate begin: --bundle goes with switch (the step that "
                                       "runs registry-up)\n")


@pytest.mark.parametrize("argv", [["ca-rotate", "--help"], ["registry-up", "--help"]])
def test_help_names_the_new_command_and_flag(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert ("{begin,switch,finish}" if argv[0] == "ca-rotate" else "--renew-cert") in out


def test_ca_rotate_needs_a_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca-rotate"]) == 2
    assert "the following arguments are required: step" in capsys.readouterr().err


def test_peer_certificate_reads_what_the_registry_serves_even_expired(tmp_path: Path, ca: tuple[bytes, bytes]) -> None:
    """The handshake that reads the served certificate (here over loopback TCP, as for a registry on
    this machine): an expired certificate is read, not refused."""
    import socket
    import ssl
    import threading

    from nodecfg import ssh
    from nodecfg.push.channels import peer_certificate

    now = dt.datetime.now(dt.UTC)
    cert_pem, key_pem = tls.make_server_cert(ca[0], ca[1], ("127.0.0.1",), now - 3 * DAY, life=DAY)
    (tmp_path / "s.crt").write_bytes(cert_pem)
    (tmp_path / "s.key").write_bytes(key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        der = peer_certificate(ssh.LocalConnection(), port, timeout=5.0)
    finally:
        thread.join(timeout=5)
        server.close()
    assert x509.load_der_x509_certificate(der) == _cert(cert_pem)
