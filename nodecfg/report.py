"""Everything the operator reads: live progress on stderr, recap tables and --json on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from nodecfg.masking import MESSAGE_LIMIT, mask_secrets

if TYPE_CHECKING:
    from nodecfg.fleet import FleetResult, HostResult


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress(as_json: bool) -> Callable[[str], None]:
    """Live progress lines on stderr (kept even with --json: stdout stays machine-readable)."""
    del as_json
    return lambda message: _err(f"  {message}")


def host_done(as_json: bool) -> Callable[[HostResult[Any]], None]:
    del as_json

    def done(res: HostResult[Any]) -> None:
        status = "ok" if res.ok else ("UNREACHABLE" if res.unreachable else "FAILED")
        detail = "" if res.ok else f": {first_line(res.error)}"
        _err(f"  {res.host}: {status} ({res.seconds:.1f}s){detail}")

    return done


def first_line(text: str | None) -> str:
    """The first line of a message, secrets masked, at most MESSAGE_LIMIT characters."""
    line = mask_secrets(text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= MESSAGE_LIMIT else line[:MESSAGE_LIMIT - 1].rstrip() + "…"


def _masked(obj: Any) -> Any:
    """Every string in a JSON-able structure with its secrets masked (`mask_secrets`)."""
    if isinstance(obj, str):
        return mask_secrets(obj)
    if isinstance(obj, dict):
        return {k: _masked(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_masked(v) for v in obj]
    return obj


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:  # cells are text, never markup (a note may quote TOML's `[[registry]]`)
        table.add_row(*(escape(cell) for cell in row))
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(width=200, highlight=False)
    console.print(table)


def _json(obj: Any) -> None:
    def default(o: Any) -> Any:
        if is_dataclass(o) and not isinstance(o, type):
            return asdict(o)
        if isinstance(o, set | frozenset | tuple):
            return list(o)
        return str(o)

    print(json.dumps(obj, default=default, indent=2))


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def warnings(lines: Any) -> None:
    """Warnings (a certificate that expires soon: registry/expiry.py), one line each on stderr; with
    --json they are in the JSON too."""
    for line in lines:
        _err(f"nodecfg: warning: {line}")


def registry_up(result: Any, *, as_json: bool) -> None:
    warnings(result.warnings)
    if as_json:
        _json(result)
        return
    reasons = f" ({'; '.join(result.container_reasons)})" if result.container_reasons else ""
    print(f"registry on {result.master}: {result.container_action}{reasons}; "
          f"container {result.container_id[:12]}; nodes use {result.endpoint}"
          f"{' with auth' if result.auth else ''}")
    if result.note:
        print(f"  {result.note}")
    if result.shipped_registry_image:
        print("  registry image shipped from this machine (the master had none)")
    for r in result.replicas[1:] if result.replicas else ():
        print(f"replica on {r.master}: {_replica_line(r)}")
    if result.images:
        _table("images", ["image", "registry path", "size", "result", "seconds"],
               [[i.source, i.target, _size(i.size), i.action + (f": {i.error}" if i.error else ""),
                 f"{i.seconds:.1f}"] for i in result.images])
    pushed = sum(i.action == "pushed" for i in result.images)
    skipped = sum(i.action == "skipped" for i in result.images)
    failed = sum(i.action == "failed" for i in result.images)
    print(f"images: {pushed} pushed, {skipped} skipped (already in the registry), {failed} failed")
    print("catalog:")
    for repo, tags in sorted(result.catalog.items()):
        print(f"  {repo}: {', '.join(tags)}")
    if not result.catalog:
        print("  (empty)")


def _replica_line(r: Any) -> str:
    if r.container_action == "failed" or (r.error and r.sync != "failed"):
        return f"FAILED: {r.error}"
    reasons = f" ({'; '.join(r.container_reasons)})" if r.container_reasons else ""
    sync = {"pushed": "the images pushed here", "shared": "serves the same S3 bucket",
            "up to date": "already holds every image",
            "copied": f"copied {r.copied} blob(s) ({_size(r.copied_bytes)}) from the first replica inside the site",
            "failed": f"FAILED to get the images: {r.error}"}.get(r.sync, "")
    shipped = "; registry image shipped from this machine" if r.shipped_registry_image else ""
    return f"{r.container_action}{reasons}; container {r.container_id[:12]}; nodes use {r.endpoint}{shipped}; {sync}"


def registry_check(result: Any, *, as_json: bool) -> None:
    """registry-up --check: the container, the data directory and the images, as they would go."""
    warnings(result.warnings)
    if as_json:
        _json({**asdict(result), "check": True})
        return
    print(f"registry on {result.master} (check mode: nothing was changed); nodes would use {result.endpoint}")
    _container_check(result)
    for image in result.images:
        print(f"  image {image.source} -> {image.target}: "
              f"{'would push' if image.action == 'push' else 'already in the registry'}")
    if not result.images:
        print("  images: none in the inventory")
    for r in result.replicas:
        print(f"replica on {r.master}; nodes would use {r.endpoint}")
        _container_check(r)


def _container_check(result: Any) -> None:
    if result.refusal:
        print(f"  container: REFUSED: {result.refusal}")
    else:
        reasons = f" ({'; '.join(result.container_reasons)})" if result.container_reasons else ""
        which = f" {result.container}" if result.container else ""
        print(f"  container{which}: would {result.container_action}{reasons}")
    if result.note:
        print(f"  {result.note}")
    count = result.repositories
    state = "does not exist yet" if count < 0 else ("empty" if count == 0 else
                                                    f"{count} repositor{'y' if count == 1 else 'ies'}")
    print(f"  data directory: {result.data_dir} ({state}){'' if result.refusal else ', kept'}")
    if result.needed >= 0 or result.free >= 0:
        needed = _size(result.needed) if result.needed >= 0 else "unknown"
        free = f"{_size(result.free)} free" if result.free >= 0 else "free space not checked (S3 or a docker volume)"
        short = " (DOES NOT FIT: registry-up would refuse)" if 0 <= result.free < result.needed else ""
        print(f"  space: the push needs {needed}; {free}{short}")
    if result.ship_registry_image:
        print("  registry image: would be shipped from this machine (the master has none)")


def registry_down(result: Any) -> None:
    for host in (result, *result.replicas):
        if host.error:
            _err(f"nodecfg: error: {host.error}")
            continue
        what = "removed the registry container" if host.container == "removed" else "no registry container"
        if host.purge == "purged":
            data = f"deleted {host.data_dir} (the data directory it used)"
        elif host.purge == "kept":
            data = f"deleted nothing: kept {host.data_dir}"
        elif host.purge == "nothing":
            data = "no data directory of nodecfg's is left to delete"
        elif host.purge == "bucket":
            data = f"its data is in the S3 bucket {host.data_dir}, which nodecfg never empties"
        else:
            data = f"kept data in {host.data_dir}" if host.data_dir else "kept its data"
        print(f"{host.master}: {what}; {data}")
        if host.purge == "kept":
            _err(f"nodecfg: error: {host.master}: --purge refused to delete {host.data_dir}: {host.why_kept} "
                 "(delete it yourself if it is the registry's)")


def registry_prune(result: Any, *, as_json: bool) -> None:
    """registry-prune (and its --check): per registry host, the tags that go, those kept, the bytes."""
    if as_json:
        _json({**asdict(result), "hosts": [{**asdict(h), "bytes_freed": h.bytes_freed} for h in result.hosts]})
        return
    for h in result.hosts:
        if h.error:
            _err(f"nodecfg: error: {h.error}")
            continue
        tags = f"{len(h.removed)} tag(s) in {h.repositories} repositor{'y' if h.repositories == 1 else 'ies'}"
        if result.check:
            head = f"would remove {tags}, about {_size(h.bytes_estimated)}" if h.removed else "nothing to remove"
            print(f"registry on {h.master} ({h.storage}; check mode: nothing was changed): {head}")
        elif not h.removed:
            print(f"registry on {h.master} ({h.storage}): nothing to remove" + (f"; {h.note}" if h.note else ""))
        else:
            freed = (f"freed {_size(h.bytes_freed)} on disk ({_size(h.used_before)} -> {_size(h.used_after)})"
                     if h.bytes_freed >= 0 else f"freed about {_size(h.bytes_estimated)} (from the manifests)")
            stopped = f", the registry stopped {h.stopped:.0f}s" if h.stopped >= 0 else ""
            print(f"registry on {h.master} ({h.storage}): removed {tags} ({h.manifests} manifest(s)); {freed}; "
                  f"garbage collected{stopped}" + (f" ({h.gc})" if h.gc else ""))
        if h.note and (result.check or h.removed):
            print(f"  {h.note}")
        for t in h.removed:
            short = f"{t.target.partition('@')[0]}@{t.digest[:19]}"
            what = f"{short} ({t.why})" if t.why else f"{t.target} ({t.digest[:19]})"
            print(f"  {'would remove' if result.check else 'removed'} {what}")
        for t in h.kept:
            print(f"  kept {t.target}: {t.why}")


def fleet_json(fleet: FleetResult[Any], render: Callable[[Any], Any], *, mask: bool = False,
               ok: bool | None = None, extra: dict[str, Any] | None = None) -> None:
    _json((_masked if mask else _same)({
        "ok": not fleet.failed if ok is None else ok,
        **(extra or {}),
        "hosts": [
            {"name": r.host.name, "address": r.host.address, "ok": r.ok,
             "unreachable": r.unreachable, "error": r.error, "seconds": round(r.seconds, 3),
             **({"result": render(r.value)} if r.value is not None else {})}
            for r in fleet.results
        ],
    }))


def _same(obj: Any) -> Any:
    return obj


def _runtime_cell(o: Any) -> str:
    if o.status in ("absent", "masked"):
        return o.status
    return str(o.status)


def configure_recap(fleet: FleetResult[Any], options: Any, *, as_json: bool) -> None:
    """Diffs (masked where they are made, and here again), the recap table, the count. Every
    string that came from a node goes through `mask_secrets`, in the table and in --json."""
    from nodecfg import runtimes  # loads every runtime's module: only where used

    if as_json:
        fleet_json(fleet, lambda v: {
            "changed": v.changed, "files_changed": list(v.files_changed),
            **{rt.name: asdict(v.runtimes[rt.name]) for rt in runtimes.registered()},
            **({"diffs": list(v.diffs)} if v.diffs else {}),
        }, mask=True)
        return
    for r in fleet.results:
        if r.value is not None and r.value.diffs:
            print(f"--- {r.host} ---")
            for diff in r.value.diffs:
                text = mask_secrets(diff)
                print(text, end="" if text.endswith("\n") else "\n")
    names = [rt.name for rt in runtimes.registered()]
    rows = []
    for r in fleet.results:
        v = r.value
        if v is None:
            rows.append([r.host.name, *(["-"] * (len(names) + 2)),
                         ("UNREACHABLE: " if r.unreachable else "FAILED: ") + first_line(r.error)])
            continue
        work = [v.runtimes[rt.name] for rt in runtimes.by_layer()]  # lowest layer first
        actions = [f"{o.runtime} {o.action}" for o in work if o.action != "none"]
        notes = [f"{o.runtime}: {first_line(o.note)}" for o in work if o.note]
        result = ("FAILED: " + first_line(r.error)) if r.error else (
            ("would change" if options.check else "changed") if v.changed else "ok")
        if notes and not r.error:
            result += " (" + "; ".join(notes) + ")"
        rows.append([r.host.name, *(_runtime_cell(v.runtimes[n]) for n in names),
                     str(len(v.files_changed)), ", ".join(actions) or "-", result])
    title = "RECAP (check mode: nothing was changed)" if options.check else "RECAP"
    if getattr(options, "undo", False):
        title = title.replace("RECAP", "RECAP of --undo")
    _table(title, ["node", *names, "files", "reloaded/restarted", "result"], rows)
    ok = len(fleet.succeeded)
    changed = sum(1 for r in fleet.results if r.value is not None and r.value.changed and r.ok)
    print(f"{len(fleet.results)} node(s): {ok} ok ({changed} changed), {len(fleet.failed)} failed")


def smoke_recap(result: Any, *, as_json: bool) -> None:
    from nodecfg.smoke import check_names

    checks = check_names()
    fleet = result.fleet
    down = result.replicas_down
    warnings(result.warnings)
    if as_json:
        extra: dict[str, Any] = {"replicas_down": [{**asdict(d), "line": d.line} for d in down]} if down else {}
        if result.warnings:
            extra["warnings"] = list(result.warnings)
        fleet_json(fleet, lambda v: {"checks": [asdict(ch) for ch in v.checks],
                                     **({"replicas": [asdict(ch) for ch in v.replicas]} if v.replicas else {})},
                   ok=result.ok, extra=extra or None)
        return
    rows = []
    problems = []
    for r in fleet.results:
        if r.value is None:
            reason = first_line(r.error)
            rows.append([r.host.name, "UNREACHABLE" if r.unreachable else "FAIL",
                         *(["-"] * (len(checks) - 1)), "FAILED"])
            problems.append(f"{r.host}: {'SSH unreachable: ' if r.unreachable else ''}{reason}")
            continue
        by_name = {ch.name: ch for ch in r.value.checks}
        rows.append([r.host.name, *(by_name[n].status if n in by_name else "-" for n in checks),
                     "passed" if r.ok else "FAILED"])
        for ch in r.value.checks:
            if ch.status == "FAIL":
                problems.append(f"{r.host}: {ch.name}: {ch.detail}")
    plan = result.plan
    _table(f"smoke-test: {plan.image.upstream} via {plan.endpoint}",
           ["node", *checks, "verdict"], rows)
    for line in problems:
        print(f"  {line}")
    for d in down:
        print(f"{d.line} ({first_line(d.example)})")
    passed, failed = len(fleet.succeeded), len(fleet.failed)
    verdict = "every node pulls from the registry" if not failed else \
        f"{failed} of {len(fleet.results)} node(s) cannot pull"
    if not failed and not result.ok:
        verdict += f"; {len(down)} replica(s) down (--require-all-replicas)"
    print(f"{'PASS' if result.ok else 'FAIL'}: {verdict} ({passed} passed, {failed} failed)")
