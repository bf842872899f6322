"""The master's SSH connection, and every step registry-up and registry-down take over it.

One connection per run: a bare paramiko `Session` (`ssh.connect(host, fabric=False)`: registry-up
never imports Fabric), opened in the background as soon as the inventory has been checked, so
the handshake overlaps this machine's own work. Without an inventory the "master" is this machine
(`ssh.LocalConnection`).

Every step has a deadline: `step` seconds on the master, where each script runs its docker calls
under `timeout` for what is left of it (master.sh `bounded`) and `docker load` runs under `timeout`
too, so nothing of nodecfg's is left running there when a step is over; here, `step` + MARGIN,
so a master whose sshd stops answering fails the run as well, naming the master and the step.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Executor, wait
from typing import Any

from nodecfg import ssh
from nodecfg.errors import HostError
from nodecfg.inventory import Host, Inventory, RegistrySettings
from nodecfg.push.api import Connect
from nodecfg.registry import container
from nodecfg.scripts import NodeScript

MARGIN = 5.0  # seconds this side waits beyond a step's budget on the master


class Master:
    """One registry host's connection (the master's, or a replica's; None: this machine)."""

    def __init__(self, host: Host | None, step: float, pool: Executor) -> None:
        self.host = host
        self.where = str(self.host) if self.host else "localhost"
        self.become = self.host.ssh.become if self.host else False
        self.step = step
        if self.host is not None:
            ssh.preload()  # paramiko's import here, not in the thread: the connect is the critical path
        self._conn = pool.submit(_connect, self.host)

    @property
    def c(self) -> Any:
        """The connection (HostError if it could not be made)."""
        return self._conn.result()

    def settled(self) -> None:
        """Wait until the connection is made, or has failed (which `c` reports)."""
        wait([self._conn])

    def run(self, script: NodeScript, what: str) -> ssh.RunResult:
        """One master script, one SSH round trip, its secrets on stdin, within the step's deadline."""
        return self._run(script.command(), script.stdin, what)

    def _run(self, command: str, stdin: bytes | Iterable[bytes], what: str) -> ssh.RunResult:
        try:
            return ssh.run(self.c, command, stdin=stdin, become=self.become, timeout=self.step + MARGIN)
        except HostError as exc:
            if "timed out" in str(exc):
                raise HostError(f"{self.where}: {what} did not finish within {self.step:g}s "
                                "(--timeout; is dockerd or sshd on the master hung?)") from None
            raise

    def load_image(self, stream: Iterable[bytes], image: str, image_id: str) -> str:
        """`docker load` of a docker archive stream, the image tagged by id under `image`: its id."""
        res = self._run(container.load_command(image, image_id, self.step), stream, f"docker load of {image}")
        if not res.ok:
            raise HostError(f"{self.where}: docker load of {image} failed: {whole(res)}")
        loaded = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if not loaded:
            raise HostError(f"{self.where}: {image} is not there after docker load: {whole(res)}")
        return loaded

    def connector(self, settings: RegistrySettings, *, direct: bool = False, ca: bytes | None = None,
                  route: tuple[str, int] | None = None, address: str | None = None) -> Connect:
        """HTTP(S) connections to the registry: through this connection to 127.0.0.1 (or to `route`,
        the container's own address: MasterFacts.route), or with `direct` to its `address`
        (default: registry.address); each
        request bounded by the step. Over TLS (`ca`) the certificate is verified, for the registry's own
        name, against the CA the nodes trust."""
        from nodecfg.push import channels

        tls = (ca, settings.address) if ca is not None else None
        if direct:
            return channels.direct(address or settings.address, settings.port, timeout=self.step, tls=tls)
        return channels.connector(self.c, settings.port, timeout=self.step, tls=tls, route=route)

    def close(self) -> None:
        """Close the connection once it is made (an error making it was reported by `c`)."""
        try:
            c = self.c
        except Exception:  # noqa: BLE001 -- no connection, nothing to close
            return
        ssh.close(c)


def _connect(host: Host | None) -> Any:
    return ssh.LocalConnection() if host is None else ssh.connect(host, fabric=False)


def whole(res: ssh.RunResult) -> str:
    """docker's whole message on one line (its last line alone is often "See 'docker run --help'")."""
    text = res.stderr.strip() or res.stdout.strip()
    return " ".join(ln.strip() for ln in text.splitlines() if ln.strip()) or f"exit code {res.exit_code}"


def catalog(inv: Inventory, step: float = 60.0) -> dict[str, list[str]]:
    """The registry's catalog (repository -> tags), asked over the master's SSH connection (smoke-test
    uses it when neither --image nor the inventory names an image)."""
    from concurrent.futures import ThreadPoolExecutor

    from nodecfg.credentials import Credentials
    from nodecfg.push.api import RegistryAPI

    creds = Credentials.of(inv.registry.auth)
    ca = None
    if inv.registry.tls is not None:
        from nodecfg.registry.tls import ca_for_nodes

        ca = ca_for_nodes(inv.registry.tls, write=False)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog") as pool:
        master = Master(inv.master, step, pool)
        try:
            api = RegistryAPI(master.connector(inv.registry, ca=ca), creds.authorization() if creds else None)
            try:
                return api.catalog()
            finally:
                api.close()
        finally:
            master.close()
