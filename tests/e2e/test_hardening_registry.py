"""Issue 12 (2) on a real lab master: an inventory value is data, never shell code run as root.

A username with a newline used to end the htpasswd here-document on the master, and the lines after
it ran as root. Now it is refused before any host is contacted; a username with the shell
metacharacters that htpasswd does allow works end to end.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab, nodecfg, run_json, start_lab

PW_ENV = "NODECFG_E2E_PW"
# the old exploit: end the here-doc, run a command, open a new here-doc that eats the rest
HOSTILE_USER = "u\nNODECFG_EOF\ntouch /tmp/pwned\ncat <<'NODECFG_EOF'"
USER = "o'brien$x"
PASSWORD = "p\"w'$(touch /tmp/pwned-pw)`x`\\;|&"


@pytest.fixture(scope="module")
def lab() -> Lab:
    return start_lab(1)


def _inventory(lab: Lab, path: Path, username: str) -> str:
    data = lab.inventory_data()
    data["registry"]["auth"] = {"username": username, "password_env": PW_ENV}
    return str(lab.write_inventory(path, data))


def _ssh_logins(lab: Lab) -> int:
    """Accepted SSH logins on the master so far (this call's own included)."""
    out = lab.ssh("master", "journalctl -u ssh.service -o cat --no-pager | grep -c '^Accepted ' || true")
    return int(out.stdout.strip() or 0)


def test_newline_in_username_is_refused_before_any_host(lab: Lab, tmp_path: Path) -> None:
    inv = _inventory(lab, tmp_path / "inventory.yaml", HOSTILE_USER)
    before = _ssh_logins(lab)
    proc = nodecfg("registry-up", "-i", inv, env={PW_ENV: "pw"})
    assert _ssh_logins(lab) == before + 1  # this count's own login: nodecfg never connected
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"nodecfg: error: {inv}:") and "registry.auth.username" in proc.stderr
    assert lab.ssh("master", "test ! -e /tmp/pwned", check=False).returncode == 0


def test_username_with_shell_metacharacters_works_end_to_end(lab: Lab, tmp_path: Path) -> None:
    inv = _inventory(lab, tmp_path / "inventory.yaml", USER)
    rc, up, err = run_json("registry-up", "-i", inv, env={PW_ENV: PASSWORD})
    assert rc == 0, (up, err)
    assert up["auth"] is True
    assert lab.ssh("master", "cut -d: -f1 /etc/nodecfg/registry/htpasswd").stdout == USER + "\n"

    def status(credentials: str) -> str:
        return lab.ssh("master", "curl -s -o /dev/null -w '%{http_code}' --max-time 5 "
                                 f"-u {shlex.quote(credentials)} http://127.0.0.1:5000/v2/").stdout

    assert status(f"{USER}:{PASSWORD}") == "200"
    assert status(f"{USER}:wrong") == "401"
    assert lab.ssh("master", "test ! -e /tmp/pwned-pw", check=False).returncode == 0
    # the stored htpasswd is recognised: a second run changes nothing
    rc, again, err = run_json("registry-up", "-i", inv, env={PW_ENV: PASSWORD})
    assert rc == 0 and again["container_action"] == "keep", (again, err)
