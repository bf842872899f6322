"""registry-down: nodecfg's registry container removed from the master and every replica, and with
`--purge` the data directory each used (scripts/master_down.sh says which directory that is, and
which it refuses: one nodecfg did not create or adopt, one holding more than a registry's storage;
an S3 bucket is never emptied). A container nodecfg did not make is left, data and all. Each host's
step runs under `--timeout` (master.py); one that fails does not stop the others."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from nodecfg import tagged
from nodecfg.errors import ConflictError, HostError
from nodecfg.inventory import Host, Inventory, RegistrySettings
from nodecfg.registry.container import down_script
from nodecfg.registry.master import Master, whole
from nodecfg.registry.results import DownAction, RegistryDownResult


def registry_down(inv: Inventory | None, *, purge: bool = False, step: float = 60.0) -> RegistryDownResult:
    settings = inv.registry if inv else RegistrySettings(address="127.0.0.1")
    hosts: tuple[Host | None, ...] = inv.registry_hosts if inv else (None,)
    with ThreadPoolExecutor(max_workers=2 * len(hosts), thread_name_prefix="registry-down") as pool:
        masters = [Master(h, step, pool) for h in hosts]
        done = [pool.submit(_down, m, settings, step, purge) for m in masters]
        results: list[RegistryDownResult] = []
        try:
            for m, fut in zip(masters, done, strict=True):
                try:
                    results.append(fut.result())
                except HostError as exc:
                    if len(hosts) == 1:
                        raise
                    why = str(exc) if str(exc).startswith(m.where) else f"{m.where}: {exc}"
                    results.append(RegistryDownResult(m.where, "absent", "not asked", "", error=why))
        finally:
            for m in masters:
                m.close()
    first, *others = results
    if others:
        return RegistryDownResult(first.master, first.container, first.purge, first.data_dir, first.why_kept,
                                  tuple(others), first.error)
    return first


def _down(master: Master, settings: RegistrySettings, step: float, purge: bool) -> RegistryDownResult:
    where = master.where
    res = master.run(down_script(settings, step, purge=purge), "registry-down")
    lines = {r.tag: r.fields for r in tagged.decode(res.stdout)}
    if not res.ok:
        raise HostError(f"{where}: registry-down failed: {whole(res)}")
    if "hung" in lines:
        raise HostError(f"{where}: dockerd on the master did not answer within {step:g}s (is it hung? "
                        "`systemctl status docker` there); nothing was changed")
    if "foreign" in lines:
        raise ConflictError(f"{where}: the container {settings.container!r} was not made by nodecfg; "
                            f"registry-down leaves it and its data (remove it yourself: docker rm -f "
                            f"{settings.container})")
    container: DownAction = "removed" if "removed" in lines else "absent"
    if "purged" in lines:
        return RegistryDownResult(where, container, "purged", lines["purged"][-1])
    if "kept" in lines:
        path, why = ([*lines["kept"], "", ""])[:2]
        return RegistryDownResult(where, container, "kept", path, why)
    if "bucket" in lines and settings.storage is not None:
        return RegistryDownResult(where, container, "bucket", f"{settings.storage.endpoint}/{settings.storage.bucket}")
    used = lines["mount"][-1] if "mount" in lines else ""
    return RegistryDownResult(where, container, "nothing" if purge else "not asked", used)
