"""registry-down: nodecfg's registry container removed from the master, and with `--purge` the data
directory it used (scripts/master_down.sh says which directory that is, and which it refuses: one
nodecfg did not create or adopt, one holding more than a registry's storage). A container nodecfg
did not make is left, data and all. The step runs under `--timeout` on the master (master.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from nodecfg import tagged
from nodecfg.errors import ConflictError, HostError
from nodecfg.inventory import Inventory, RegistrySettings
from nodecfg.registry.container import down_script
from nodecfg.registry.master import Master, whole
from nodecfg.registry.results import DownAction, RegistryDownResult


def registry_down(inv: Inventory | None, *, purge: bool = False, step: float = 60.0) -> RegistryDownResult:
    settings = inv.registry if inv else RegistrySettings(address="127.0.0.1")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry-down") as pool:
        master = Master(inv, step, pool)
        try:
            res = master.run(down_script(settings, step, purge=purge), "registry-down")
        finally:
            master.close()
    where = master.where
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
    used = lines["mount"][-1] if "mount" in lines else ""
    return RegistryDownResult(where, container, "nothing" if purge else "not asked", used)
