"""A registry host's disk around a push (registry/up.py drives these for each replica):

- the fit check: before a byte is sent, the bytes the registry lacks (the source's blob sizes:
  push/pipeline.py) against the space free under its data directory (the facts' `df`; a docker
  volume or S3 storage: not checked), refused in one line naming both;
- a full disk all the same (another writer): the pipeline stops on the registry's ENOSPC and
  cancels its uploads; those distribution will not cancel (part of their body written) and those
  whose opening failed there are removed on the host (scripts/master_prune.sh `-x uploads`), then
  one line: "no space left on <dir> on <host>";
- the record of what nodecfg pushed: STATE_DIR/pushed on each registry host
  (scripts/master_record.sh says its format), what registry-prune may remove, and only that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nodecfg import tagged
from nodecfg.bundle.progress import human
from nodecfg.errors import HostError
from nodecfg.registry.container import STATE_DIR, SUPERSEDED, Pushed, prune_script, record_script
from nodecfg.registry.master import whole

if TYPE_CHECKING:
    from nodecfg.push import pipeline
    from nodecfg.registry.replica import Replica, Setup


def fit_check(where: str, data_dir: str, free: int | None,
              progress: Callable[[str], None]) -> Callable[[int], None] | None:
    """The pipeline's `fits` for a push into `data_dir` on `where` with `free` bytes free there
    (None: not known, no check)."""
    if free is None:
        return None

    def fits(needed: int) -> None:
        if needed > free:
            raise HostError(f"{data_dir} on {where} has {human(free)} free; this push needs {human(needed)} "
                            "(nothing was sent; free space there or set registry.data_dir to a larger disk)")
        if needed:
            progress(f"{where}: this push needs {human(needed)}; {data_dir} has {human(free)} free")

    return fits


@contextmanager
def full_disk(replica: Replica, setup: Setup, name: str, *, own_disk: bool) -> Iterator[None]:
    """A push into `replica` (its registry container `name`) that stopped on a full disk: what the
    registry left of its uploads removed on its host (`own_disk`: the filesystem driver), then one line."""
    from nodecfg.push.pipeline import NoSpaceLeft

    try:
        yield
    except NoSpaceLeft as exc:
        removed, left = exc.cancelled, len(exc.stuck)
        if own_disk:
            res = replica.master.run(prune_script(setup.settings, replica.master.step, name, "uploads", s3=False,
                                                  auth=setup.creds,
                                                  uploads=[*exc.stuck, *((r, "-") for r in exc.repos)]),
                                     "removing the partial uploads")
            said = [r.tag for r in tagged.decode(res.stdout)] if res.ok else []
            removed, left = removed + said.count("removed") + said.count("debris"), left - said.count("removed")
        raise HostError(f"{exc}; {removed} partial upload(s) it had opened were removed"
                        + (f", {left} could not be" if left else "")) from None


def record(replica: Replica, pushed: Pushed, before: Pushed) -> None:
    """The tags just pushed into `replica`, recorded on its host, and the revisions they replaced
    that nodecfg had pushed (`before`: the record as the facts read it)."""
    if not pushed:
        return
    res = replica.master.run(record_script(replica.master.step, record_entries(pushed, before)),
                             "recording the tags pushed")
    if not res.ok:
        raise HostError(f"{replica.where}: recording the tags pushed in {STATE_DIR}/pushed failed: {whole(res)}")


def record_entries(pushed: Pushed, before: Pushed) -> Pushed:
    """The record's new lines: each tag pushed, and each revision nodecfg had pushed under that tag
    which this push replaced (`@<digest>`: it stays in the registry untagged)."""
    entries = dict(pushed)
    for (repo, tag), digest in pushed.items():
        old = before.get((repo, tag), "")
        if old and old != digest:
            entries[(repo, SUPERSEDED + old)] = old
    return entries


def pushed_of(results: Sequence[pipeline.ImageResult]) -> Pushed:
    """(repository, tag) -> manifest digest of each image a push tagged."""
    return {(r.image.repo, r.image.ref.tag): r.digest for r in results if r.outcome == "pushed" and r.digest}
