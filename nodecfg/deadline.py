"""One node's time budget (smoke-test's `--timeout`), shared by every step on the node and enforced there.

The contract, said once here:

- `NodeDeadline.start(seconds)` when the node's work starts (before its SSH connect); every step
  after that gets what is left of the same budget, never a fresh one.
- On the node, a script run through `BoundedNode.run` gets `-T N` (N: the whole seconds left,
  rounded down) and calls lib.sh's `budget N`: each of its docker / ctr / crictl / podman /
  systemctl / `containerd config dump` calls goes through `bounded`, which runs it under coreutils
  `timeout -k KILL_GRACE S` on the node, S its own cap or less: its TERM comes KILL_GRACE seconds
  before the budget's end at the latest, and its KILL at that end. The script as a whole runs under
  `timeout -k KILL_GRACE N+1` (for anything it does not bound itself). So nothing of nodecfg's
  outlives the budget on the node, whether or not anyone is still listening here. A call that ran
  out of time prints `timeout.<tag> <S> <base64 of the command>` (S 0: no time was left to start
  it), which the runtimes' diagnoses turn into "`docker pull ...` did not answer within 18 s:
  dockerd hung?" (`runtimes.base.timeout_problem`). Every script run here ends with an `end` record:
  output without one was cut short.
- Here, each SSH step waits at most what is left + `MARGIN`, and `ssh.connect(give_up_at=...)`
  cuts the node's SSH socket at the budget's end + `MARGIN`: a node whose SSH itself hangs
  (connect, banner, a channel) fails in time too. The other nodes go on (nodecfg/fleet.py).
- The CRI pull (nodecfg/cri/) gets what is left as its timeout; its python3 bridge on the node
  runs under `timeout -k` too (`cri.tunnel.bridge_command`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

from nodecfg import ssh
from nodecfg.errors import HostError
from nodecfg.scripts import NodeScript

KILL_GRACE = 2  # `timeout -k`: seconds between a TERM and its KILL on the node (lib.sh's kill_grace)
MARGIN = KILL_GRACE + 2.0  # how much longer than the node's budget this side waits: the whole
# script's KILL (N+1+KILL_GRACE) and a round trip
END = "end\t"  # the record every script run here ends with (`rec end <script>`)


@dataclass(frozen=True)
class NodeDeadline:
    at: float  # time.monotonic() when the node's budget ends
    seconds: float  # the whole budget, for messages

    @classmethod
    def start(cls, seconds: float) -> NodeDeadline:
        return cls(time.monotonic() + seconds, seconds)

    def left(self) -> float:
        """Seconds left of the budget (0 when it is spent)."""
        return max(0.0, self.at - time.monotonic())

    def node_seconds(self) -> int:
        """What the node gets as its `-T`: the whole seconds left, rounded down (the node counts in
        whole seconds; rounding down keeps its end before ours)."""
        return math.floor(self.left())

    @property
    def give_up_at(self) -> float:
        """When this side stops waiting for the node: its budget's end + MARGIN."""
        return self.at + MARGIN


@dataclass(frozen=True)
class BoundedNode:
    """An open connection to a node and its deadline: what a smoke-test step runs on (the probe,
    the runtimes' `probe_more`, the CRI pull)."""

    name: str  # the host, as messages name it
    c: Any  # a Fabric Connection or ssh.Session
    become: bool
    deadline: NodeDeadline

    def run(self, script: NodeScript, step: str) -> ssh.RunResult:
        """A node script (probe.sh, call.sh: `-T` is their first option) given `-T <seconds left>`,
        bounded on the node and here as the module docstring says. Raises HostError naming `step`
        when the node gives no answer in time, or when the script was cut short on the node (its
        output lacks its `end` record)."""
        n = self.deadline.node_seconds()
        bounded = replace(script, args=("-T", str(n), *script.args))
        try:
            res = ssh.run(self.c, bounded.command(f"timeout -k {KILL_GRACE} {n + 1}"),
                          stdin=bounded.stdin, become=self.become, timeout=self.deadline.left() + MARGIN)
        except HostError as exc:
            if self.deadline.left() > 0:
                raise
            raise HostError(f"{self.name}: {step} gave no answer within the node's {self.deadline.seconds:g}s "
                            f"(smoke-test --timeout): the node or its SSH connection hangs ({exc})") from None
        if not any(line.startswith(END) for line in res.stdout.splitlines()):
            why = ("cut short on the node when its smoke-test --timeout of "
                   f"{self.deadline.seconds:g}s ran out" if res.exit_code in (124, 137) else res.brief())
            raise HostError(f"{self.name}: {step} did not finish: {why}")
        return res
