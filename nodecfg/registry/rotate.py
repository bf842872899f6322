"""A rotation of nodecfg's CA, in three steps, the nodes pulling throughout (`nodecfg ca-rotate STEP`).

The steps change files in the CA directory only; the command then runs configure-nodes or
registry-up (cli.py), which do the rest as they always do:

1. `begin`: a new CA is made beside the old (`ca-next.crt`, `ca-next.key`); configure-nodes gives
   every node both (one ca.crt bundle: `tls.ca_for_nodes`). The registry still serves the
   certificate the old CA signed.
2. `switch`: the new CA signs (`ca.crt`, `ca.key`), the old one is kept as `ca-previous.*`, still
   trusted; registry-up issues the registry's certificate again from the new CA (it was "not issued
   by this CA") and restarts the registry once. No node file changes.
3. `finish`: the old CA is retired (`retired/ca-<time>.*`, kept, never trusted again); configure-nodes
   leaves every node the new CA alone.

A step run again does its command again (a node that was down gets it); a step out of order is
refused in one line naming the step to run. What a step does to the files is atomic per file
(rename); the state is read from which files exist:

    ca.crt                 no rotation under way
    ca.crt + ca-next.*     begun (nodes given both)
    ca.crt + ca-previous.* switched (the new CA signs; nodes given both)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509

from nodecfg.errors import UsageError
from nodecfg.registry import tls

Step = Literal["begin", "switch", "finish"]
STEPS: tuple[Step, ...] = ("begin", "switch", "finish")
State = Literal["none", "begun", "switched"]


@dataclass(frozen=True)
class Done:
    """What a step did to the CA directory, and what its command runs next."""

    said: str  # one line
    then: Literal["configure-nodes", "registry-up"]
    next_step: str  # what the operator runs after it


def state(ca_dir: Path) -> State:
    nxt, prev = (ca_dir / f"{tls.NEXT}.crt").exists(), (ca_dir / f"{tls.PREVIOUS}.crt").exists()
    if nxt and prev:
        raise UsageError(f"ca-rotate: {ca_dir} holds both {tls.NEXT}.crt and {tls.PREVIOUS}.crt: not a state "
                         "nodecfg leaves; move one of them away")
    return "begun" if nxt else "switched" if prev else "none"


def _until(path: Path) -> str:
    return f"{x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc:%Y-%m-%d}"


def _move(src: Path, dst: Path) -> None:
    src.replace(dst)


def begin(ca_dir: Path, now: dt.datetime) -> Done:
    """Step 1: a new CA beside the old one (kept when a begun rotation has it already)."""
    if not (ca_dir / "ca.crt").exists():
        raise UsageError(f"ca-rotate begin: there is no CA in {ca_dir} (registry-up makes one): nothing to rotate")
    st = state(ca_dir)
    if st == "switched":
        raise UsageError(f"ca-rotate begin: a rotation is under way and switched already ({ca_dir}/"
                         f"{tls.PREVIOUS}.crt): finish it first: nodecfg ca-rotate finish")
    nxt = ca_dir / f"{tls.NEXT}.crt"
    if st == "begun":
        said = f"the new CA {nxt} exists already (valid until {_until(nxt)}): every node is given both CAs again"
    else:
        cert_pem, key_pem = tls.make_ca(now, f"nodecfg registry CA {now:%Y-%m-%dT%H:%M:%SZ}")
        tls.private_dir(ca_dir)
        tls.write_private(ca_dir / f"{tls.NEXT}.key", key_pem, 0o600)
        tls.write_private(nxt, cert_pem, 0o644)
        said = (f"made the new CA {nxt} (valid until {_until(nxt)}) beside the old {ca_dir / 'ca.crt'}: "
                "every node is given both")
    return Done(said, "configure-nodes", "nodecfg smoke-test, then nodecfg ca-rotate switch")


def switch(ca_dir: Path) -> Done:
    """Step 2: the new CA signs, the old one stays trusted."""
    st = state(ca_dir)
    if st == "none":
        raise UsageError("ca-rotate switch: no rotation under way (no new CA in "
                         f"{ca_dir}): start it: nodecfg ca-rotate begin")
    if st == "begun":
        for ext in ("crt", "key"):  # old aside first: ca.* is never missing while a new one is absent
            _move(ca_dir / f"ca.{ext}", ca_dir / f"{tls.PREVIOUS}.{ext}")
        for ext in ("key", "crt"):
            _move(ca_dir / f"{tls.NEXT}.{ext}", ca_dir / f"ca.{ext}")
        said = (f"the new CA {ca_dir / 'ca.crt'} signs now; the old one, still trusted, is "
                f"{ca_dir / (tls.PREVIOUS + '.crt')}: the registry's certificate is issued again")
    else:
        said = f"the new CA {ca_dir / 'ca.crt'} signs already: the registry's certificate is checked again"
    return Done(said, "registry-up", "nodecfg smoke-test, then nodecfg ca-rotate finish")


def finish(ca_dir: Path, now: dt.datetime) -> Done:
    """Step 3: the old CA retired (kept aside, trusted no more)."""
    st = state(ca_dir)
    if st == "begun":
        raise UsageError(f"ca-rotate finish: the new CA {ca_dir}/{tls.NEXT}.crt does not sign yet: "
                         "nodecfg ca-rotate switch first")
    if st == "switched":
        retired = ca_dir / "retired"
        retired.mkdir(mode=0o700, exist_ok=True)
        stem = f"ca-{now:%Y%m%dT%H%M%SZ}"
        for ext in ("key", "crt"):
            if (ca_dir / f"{tls.PREVIOUS}.{ext}").exists():
                _move(ca_dir / f"{tls.PREVIOUS}.{ext}", retired / f"{stem}.{ext}")
        said = f"the old CA is retired to {retired / (stem + '.crt')}: every node is left the new CA alone"
    else:
        said = f"no old CA left in {ca_dir}: every node is given {ca_dir / 'ca.crt'} alone"
    return Done(said, "configure-nodes", "nodecfg smoke-test")


def run_step(step: Step, ca_dir: Path, now: dt.datetime) -> Done:
    try:
        if step == "begin":
            return begin(ca_dir, now)
        if step == "switch":
            return switch(ca_dir)
        return finish(ca_dir, now)
    except OSError as exc:
        raise UsageError(f"ca-rotate {step}: CA directory {ca_dir}: {exc.strerror}: {exc.filename}") from None
