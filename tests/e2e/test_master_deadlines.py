"""Issue 21 (1): every wait on the master has a deadline. A master whose dockerd is frozen
(SIGSTOP: it accepts connections and never answers) fails registry-up and registry-down within
`--timeout` + a few seconds, naming the master and what did not answer; once dockerd resumes,
nothing of nodecfg's is left running there (every docker call ran under `timeout` on the master)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Lab, nodecfg, start_lab

TIMEOUT = 10  # --timeout
SLACK = 8  # seconds beyond it: the SSH connect, the margin nodecfg gives a step, Python's start


@pytest.fixture(scope="module")
def lab() -> Lab:
    return start_lab(1)


def _leftovers(lab: Lab) -> list[str]:
    """Processes on the master that nodecfg started: its scripts (`sh -c PROGRAM nodecfg ...`), their
    `timeout`s and docker CLI calls, curl, sleep."""
    ps = lab.ssh("master", "ps -eo pid=,ppid=,args=").stdout.splitlines()
    return [p for p in ps if " nodecfg " in f" {p} " or "timeout -k" in p or " docker " in f" {p} "
            or "curl " in p]


@pytest.fixture
def frozen(lab: Lab) -> Iterator[str]:
    """dockerd stopped on the master while the test runs; continued after it."""
    pid = lab.ssh("master", "pidof dockerd").stdout.strip()
    assert pid.isdigit()
    lab.ssh("master", f"kill -STOP {pid}")
    try:
        yield pid
    finally:
        lab.ssh("master", f"kill -CONT {pid}")
    for _ in range(20):  # what was waiting on dockerd ends once it answers again: give it a moment
        if not _leftovers(lab):
            break
        time.sleep(0.5)


def _timed(*args: str) -> tuple[float, str, int]:
    start = time.monotonic()
    proc = nodecfg(*args, timeout=120)
    return time.monotonic() - start, proc.stderr + proc.stdout, proc.returncode


def test_registry_up_then_down_with_a_frozen_dockerd(lab: Lab, frozen: str) -> None:
    del frozen
    inv = str(lab.inventory)
    seconds, out, code = _timed("registry-up", "-i", inv, "--timeout", str(TIMEOUT))
    print(f"registry-up against a frozen dockerd: exit {code} in {seconds:.1f}s: {out.strip()}")
    assert code == 1 and seconds < TIMEOUT + SLACK, out
    assert f"master ({lab.hosts['master']})" in out and "dockerd on the master did not answer" in out
    assert "Traceback" not in out
    seconds, out, code = _timed("registry-down", "-i", inv, "--timeout", str(TIMEOUT))
    print(f"registry-down against a frozen dockerd: exit {code} in {seconds:.1f}s: {out.strip()}")
    assert code == 1 and seconds < TIMEOUT + SLACK, out
    assert f"master ({lab.hosts['master']})" in out and "did not answer" in out and "Traceback" not in out


def test_nothing_of_nodecfg_is_left_running_on_the_master(lab: Lab) -> None:
    """Runs after the frozen test's dockerd is continued: its docker calls were killed by `timeout` on
    the master itself, not left waiting for a dockerd that might answer hours later."""
    assert _leftovers(lab) == []
    # and the master works again: the registry comes up
    proc = nodecfg("registry-up", "-i", str(lab.inventory), "--timeout", "60")
    assert proc.returncode == 0, proc.stderr
