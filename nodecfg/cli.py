"""Command line: parse flags, load the inventory, call the work, map errors to exit codes.

Nothing else lives here. Exit codes: 0 all good, 1 one or more hosts failed, 2 bad usage or bad
inventory (reported before any host is contacted). Known errors are one line on stderr; anything
else is a bug and gets its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from nodecfg import __version__
from nodecfg.errors import NodecfgError, UsageError
from nodecfg.inventory import DEFAULT_INVENTORY, Inventory, load_inventory, parse_inventory

if TYPE_CHECKING:
    from nodecfg.bundle.manifests import Platform
    from nodecfg.bundle.sources import Endpoint


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected node names separated by commas")
    return names


def _platform(text: str) -> Platform:
    from nodecfg.bundle.manifests import parse_platform

    try:
        return parse_platform(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _source(text: str) -> tuple[str, Endpoint]:
    from nodecfg.bundle.sources import parse_source_option

    try:
        return parse_source_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_inventory(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--inventory", metavar="FILE", default=None,
                   help=f"inventory file (default: ./{DEFAULT_INVENTORY})")


SMOKE_TIMEOUT_HELP = ("seconds for each node's whole smoke test, one deadline from its SSH connect to its last "
                      "answer: the probe, every pull (docker, ctr, crictl, podman, the kubelet's CRI PullImage) "
                      "and the cleanup share it (default: 120; the SSH connect itself at most the inventory's "
                      "ssh.connect_timeout, else 10). It is enforced on the node too (coreutils timeout): a node "
                      "past it is failed, with what did not answer, and nothing of nodecfg's is left running there; "
                      "the other nodes go on")
STEP_TIMEOUT_HELP = ("seconds for the SSH connect and for each step on a node: gathering facts, writing "
                     "and validating, each reload or restart coming back, each verify, a rollback "
                     "(default: connect per the inventory's ssh.connect_timeout, else 10; each step 60). "
                     "A node past it is failed and named, its runtime left as found or rolled back; "
                     "the other nodes go on")


MASTER_TIMEOUT_HELP = ("seconds for the SSH connect and for each step on each registry host (the master, "
                       "every replica): gathering facts, each docker call, each request to the registry, "
                       "(re)starting the container until it answers (default: connect per the inventory's "
                       "ssh.connect_timeout, else 10; each step 60). Every docker call there runs under "
                       "`timeout`, so nothing is left running on a registry host after a step is over")


def _add_master_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=_seconds, default=None, metavar="S", help=MASTER_TIMEOUT_HELP)


def _step(args: argparse.Namespace) -> dict[str, float]:
    """The --timeout of a command that takes one, as the step deadline's keyword (absent: the default)."""
    return {"step": args.timeout} if args.timeout is not None else {}


def _add_fleet(p: argparse.ArgumentParser, timeout_help: str) -> None:
    from nodecfg.fleet import DEFAULT_FORKS

    p.add_argument("--forks", type=_positive_int, default=DEFAULT_FORKS, metavar="N",
                   help=f"nodes worked on at once (default: {DEFAULT_FORKS})")
    p.add_argument("--limit", type=_names, default=None, metavar="NAMES",
                   help="only these nodes (names or addresses, comma-separated)")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="S", help=timeout_help)
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nodecfg", description=(
        "Point an offline Kubernetes fleet's docker and containerd at a local registry, over SSH."))
    parser.add_argument("--version", action="version", version=f"nodecfg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("registry-up", help="start the registry on the master and push the images",
                       description="Start registry:2 on the master (shipping the image if the "
                       "master lacks it) and push the inventory's images into it. Without an "
                       "inventory, runs on this machine's own Docker engine.")
    _add_inventory(p)
    p.add_argument("--bundle", metavar="FILE", default=None,
                   help="push the images of this bundle file (from `bundle create`) over the registry's HTTP "
                   "API through SSH, upstream digests kept; the registry's image comes from the bundle too, "
                   "so this machine needs no Docker engine")
    p.add_argument("--check", action="store_true",
                   help="show what would be done to the registry container, its data directory and the "
                   "images, and change nothing")
    p.add_argument("--replace", action="store_true",
                   help="recreate a registry container nodecfg did not make as nodecfg's own (its data "
                   "directory is kept unless registry.data_dir names another); without it such a registry "
                   "is adopted as it is, or refused with the setting that would keep it")
    p.add_argument("--direct", action="store_true",
                   help="send the images to the registry's address and port over plain HTTP, as the nodes pull "
                   "(faster: no SSH encryption), instead of through the master's SSH connection; the registry's "
                   "password, if any, then crosses the network as it does for the nodes")
    p.add_argument("--renew-cert", action="store_true",
                   help="issue the registry's TLS certificate again now from nodecfg's CA (a new serial), put it on "
                   "every registry host and restart the registry once; nodes trust the CA, so nothing changes on "
                   "them. A brought certificate (registry.tls.cert) is refused: renew it with its issuer")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    _add_master_timeout(p)
    p.set_defaults(func=_cmd_registry_up)

    p = sub.add_parser("registry-down", help="stop and remove the registry container",
                       description="Stop and remove the registry container on the master. "
                       "Its data stays unless --purge.")
    _add_inventory(p)
    p.add_argument("--purge", action="store_true",
                   help="also delete the data directory the registry used (the one its container mounts; "
                   "one nodecfg did not create or adopt is refused, and named)")
    _add_master_timeout(p)
    p.set_defaults(func=_cmd_registry_down)

    p = sub.add_parser("registry-prune", help="remove the images nodecfg pushed that the inventory no longer lists",
                       description="Delete from the registry (the master's, and every replica's) the tags "
                       "nodecfg pushed that the inventory (or --bundle's images) no longer lists, never a tag it "
                       "did not push, then run the registry's garbage collector with the registry stopped "
                       "meanwhile, and say what was freed.")
    _add_inventory(p)
    p.add_argument("--bundle", metavar="FILE", default=None,
                   help="keep the images of this bundle file instead of the inventory's")
    p.add_argument("--check", action="store_true",
                   help="list the tags that would go and the bytes they hold; change nothing")
    p.add_argument("--all-unlisted", action="store_true",
                   help="remove every tag the inventory does not list, also those nodecfg did not push")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    _add_master_timeout(p)
    p.set_defaults(func=_cmd_registry_prune)

    p = sub.add_parser("configure-nodes", help="point every node's docker and containerd at the registry",
                       description="Merge the registry into every node's daemon.json and "
                       "containerd mirror configs, validate, reload or restart only what changed, "
                       "verify, and roll back a node whose runtime doesn't come back.")
    _add_inventory(p)
    _add_fleet(p, STEP_TIMEOUT_HELP)
    p.add_argument("--check", action="store_true", help="show what would change; change nothing")
    p.add_argument("--diff", action="store_true", help="print unified diffs of changed files")
    p.add_argument("--ask-become-pass", action="store_true",
                   help="prompt once for the sudo password of become users")
    p.add_argument("--undo", action="store_true",
                   help="take nodecfg's settings off each node instead: files it created removed, files it edited "
                   "given back their bytes from before its first change (or, changed since, only its entries "
                   "taken out), reload/restart only what changed, verify, roll back on failure (docs/undo.md)")
    p.add_argument("--keep-backups", type=_positive_int, default=3, metavar="N",
                   help="keep the newest N of nodecfg's backups of each file it changes (<file>.nodecfg-<time>.bak, "
                   "at most 0600: they may hold old credentials); older ones are removed (default: 3)")
    p.set_defaults(func=_cmd_configure_nodes)

    p = sub.add_parser("kubespray-vars", help="print kubespray's offline.yml registry values",
                       description="Print the offline.yml values (registry_host and every "
                       "*_image_repo) that point kubespray at what registry-up pushed. Contacts no host.")
    _add_inventory(p)
    p.add_argument("--json", action="store_true", help="print the values as JSON on stdout")
    p.set_defaults(func=_cmd_kubespray_vars)

    p = sub.add_parser("smoke-test", help="prove every node can pull from the registry",
                       description="On every node, for each active runtime, reach the registry "
                       "and pull an image through the mirror config; diagnose what fails.")
    _add_inventory(p)
    _add_fleet(p, SMOKE_TIMEOUT_HELP)
    p.add_argument("--image", metavar="REF", default=None,
                   help="image to pull (default: the first inventory image)")
    p.add_argument("--require-all-replicas", action="store_true",
                   help="fail (exit 1) when any replica of the registry is down from any node; without it a "
                   "replica down is named and the run passes while every node pulls by upstream name")
    p.set_defaults(func=_cmd_smoke_test)

    _add_ca_rotate(sub)
    _add_bundle(sub)
    return parser


def _add_ca_rotate(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("ca-rotate", help="replace nodecfg's CA in three steps, every node pulling throughout",
                       description="Rotate the CA nodecfg made (registry.tls without cert/key/ca), one command a "
                       "step: begin (a new CA beside the old; configure-nodes: every node trusts both), switch "
                       "(the new CA signs; registry-up: the registry's certificate issued again), finish (the old "
                       "CA retired; configure-nodes: every node trusts the new one alone). docs/tls.md.")
    _add_inventory(p)
    p.add_argument("step", choices=("begin", "switch", "finish"), help="the step to take")
    p.add_argument("--bundle", metavar="FILE", default=None,
                   help="switch: registry-up pushes from this bundle file (as registry-up --bundle)")
    from nodecfg.fleet import DEFAULT_FORKS

    p.add_argument("--forks", type=_positive_int, default=DEFAULT_FORKS, metavar="N",
                   help=f"begin, finish: nodes worked on at once (default: {DEFAULT_FORKS})")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                   help="as configure-nodes --timeout (begin, finish) or registry-up --timeout (switch)")
    p.add_argument("--json", action="store_true", help="print configure-nodes' or registry-up's results as JSON")
    p.set_defaults(func=_cmd_ca_rotate)


def _cmd_ca_rotate(args: argparse.Namespace) -> int:
    """One step of a CA rotation (registry/rotate.py): the CA directory's files, then configure-nodes
    or registry-up, run as their own commands (every flag of theirs at its default)."""
    import datetime as dt

    from nodecfg.registry import rotate
    from nodecfg.registry.tls import default_ca_dir

    if args.bundle and args.step != "switch":
        raise UsageError(f"ca-rotate {args.step}: --bundle goes with switch (the step that runs registry-up)")
    inv = _offline_inventory(args, optional=False)
    assert inv is not None
    settings = inv.registry.tls
    if settings is None:
        raise UsageError("ca-rotate: registry.tls is not set: the registry serves plain HTTP, there is no CA")
    if settings.provided:
        raise UsageError(f"ca-rotate: the CA is brought (registry.tls.ca: {settings.ca}): nodecfg rotates only "
                         "its own; docs/tls.md says how to rotate yours in the same three steps")
    done = rotate.run_step(args.step, settings.ca_dir or default_ca_dir(), dt.datetime.now(dt.UTC))
    print(f"nodecfg: ca-rotate {args.step}: {done.said}; running {done.then}", file=sys.stderr, flush=True)
    argv = [done.then, *(["-i", args.inventory] if args.inventory else []),
            *(["--timeout", str(args.timeout)] if args.timeout is not None else []),
            *(["--json"] if args.json else [])]
    if done.then == "configure-nodes":
        argv += ["--forks", str(args.forks)]
    elif args.bundle:
        argv += ["--bundle", args.bundle]
    then = make_parser().parse_args(argv)
    code = int(then.func(then))
    print(f"nodecfg: ca-rotate {args.step}: {done.then} " + (f"done; next: {done.next_step}" if code == 0 else
          f"exited {code}: fix what it names and run `nodecfg ca-rotate {args.step}` again"), file=sys.stderr)
    return code


def _add_bundle(sub: argparse._SubParsersAction[_Parser]) -> None:
    bundle = sub.add_parser("bundle", help="one file holding images for an offline site, upstream digests kept",
                            description="An image bundle: one tar file holding an OCI image layout, "
                            "made on the connected side from the images' upstream registries.")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", metavar="ACTION", parser_class=_Parser)
    p = bundle_sub.add_parser("create", help="fetch the images into a bundle file",
                              description="Fetch the inventory's images (and --images-file's) from their "
                              "upstream registries over the registry HTTP API into one bundle file: every "
                              "platform and every upstream digest kept unless --platform. An interrupted "
                              "run resumes from FILE.partial/.")
    _add_inventory(p)
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="the bundle file to write")
    p.add_argument("--images-file", metavar="FILE", action="append", default=[],
                   help="more images, one reference per line (kubespray's images.list format)")
    p.add_argument("--platform", metavar="OS/ARCH", action="append", type=_platform, default=[],
                   help="keep only this platform of multi-platform images (repeatable; rewrites their "
                   "index digest; default: every platform)")
    p.add_argument("--source", metavar="HOST=URL", action="append", type=_source, default=[],
                   help="fetch images of upstream HOST from URL instead (a mirror; repeatable; over the "
                   "inventory's bundle.sources)")
    p.add_argument("--no-registry-image", action="store_true",
                   help="leave out the registry's own image (the inventory's registry.image, default "
                   "registry:2), which `registry-up --bundle` loads on a master that lacks it")
    p.set_defaults(func=_cmd_bundle_create)
    p = bundle_sub.add_parser("inspect", help="list a bundle's images, platforms, digests and sizes")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print it as JSON on stdout")
    p.set_defaults(func=_cmd_bundle_inspect)
    p = bundle_sub.add_parser("verify", help="check every blob of a bundle (sha256, presence, size)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=_cmd_bundle_verify)
    bundle.set_defaults(func=lambda _args: _fail_usage("bundle: choose an action: create, inspect, verify"))


def _fail_usage(message: str) -> int:
    raise UsageError(message)


def _inventory(args: argparse.Namespace, *, optional: bool = False,
               connect_timeout: float | None = None) -> Inventory | None:
    """The inventory of -i (or ./inventory.yaml), every host's SSH connect timeout set to
    `connect_timeout` when given, its encrypted keys unlocked."""
    path = args.inventory
    if path is None:
        if optional and not Path(DEFAULT_INVENTORY).exists():
            return None
        path = DEFAULT_INVENTORY
    inv = load_inventory(path)
    if connect_timeout is not None:
        inv = inv.with_connect_timeout(connect_timeout)
    _unlock_keys(inv)
    return inv


def _unlock_keys(inv: Inventory) -> None:
    """Encrypted SSH keys: ask for each passphrase once, before any host is contacted."""
    import getpass

    from nodecfg import ssh

    keys = [h.ssh.key for h in (inv.master, *inv.nodes) if h.ssh.key is not None]
    ssh.unlock_keys(keys, getpass.getpass if sys.stdin.isatty() else None)


def _cmd_registry_up(args: argparse.Namespace) -> int:
    from nodecfg import report
    from nodecfg.registry import up
    from nodecfg.registry.results import RegistryCheck

    inv = _inventory(args, optional=True, connect_timeout=args.timeout)
    bundle = Path(args.bundle) if args.bundle else None
    if args.renew_cert:
        _renewable(inv)
    if inv is not None and inv.registry.auth is not None and inv.registry.tls is None:
        print("nodecfg: warning: registry.auth without registry.tls: the password crosses the network in "
              "clear on every pull (HTTP Basic); set registry.tls: true", file=sys.stderr)
    result = up.registry_up(inv, progress=report.progress(args.json), bundle=bundle, check=args.check,
                            replace=args.replace, direct=args.direct, renew_cert=args.renew_cert, **_step(args))
    if isinstance(result, RegistryCheck):
        report.registry_check(result, as_json=args.json)
    else:
        report.registry_up(result, as_json=args.json)
    return result.exit_code


def _renewable(inv: Inventory | None) -> None:
    """registry-up --renew-cert: only nodecfg's own certificate."""
    tls = inv.registry.tls if inv is not None else None
    if tls is None:
        raise UsageError("registry-up --renew-cert: registry.tls is not set in the inventory: the registry serves "
                         "plain HTTP, there is no certificate to renew")
    if tls.provided:
        raise UsageError(f"registry-up --renew-cert: the registry's certificate is brought (registry.tls.cert: "
                         f"{tls.cert}): nodecfg never replaces it; renew it with its issuer and re-run registry-up")


def _cmd_registry_down(args: argparse.Namespace) -> int:
    from nodecfg import report
    from nodecfg.registry import down

    inv = _inventory(args, optional=True, connect_timeout=args.timeout)
    result = down.registry_down(inv, purge=args.purge, **_step(args))
    report.registry_down(result)
    return result.exit_code


def _cmd_registry_prune(args: argparse.Namespace) -> int:
    from nodecfg import report
    from nodecfg.registry import prune

    inv = _inventory(args, connect_timeout=args.timeout)
    assert inv is not None
    result = prune.registry_prune(inv, bundle=Path(args.bundle) if args.bundle else None, check=args.check,
                                  all_unlisted=args.all_unlisted, progress=report.progress(args.json), **_step(args))
    report.registry_prune(result, as_json=args.json)
    return result.exit_code


def _cmd_configure_nodes(args: argparse.Namespace) -> int:
    from nodecfg import configure, report

    inv = _inventory(args, connect_timeout=args.timeout)
    assert inv is not None
    hosts = inv.select(args.limit)
    become_pass = None
    if args.ask_become_pass:
        import getpass

        from nodecfg.inventory import Secret

        become_pass = Secret(getpass.getpass("BECOME password: "))
    options = configure.Options(check=args.check, diff=args.diff, become_password=become_pass,
                                keep_backups=args.keep_backups, undo=args.undo,
                                **({"step_timeout": args.timeout} if args.timeout is not None else {}))
    fleet = configure.configure_nodes(inv, hosts, options, forks=args.forks,
                                      on_done=report.host_done(args.json))
    report.configure_recap(fleet, options, as_json=args.json)
    return fleet.exit_code


def _cmd_kubespray_vars(args: argparse.Namespace) -> int:
    import json

    from nodecfg import kubespray

    inv = _offline_inventory(args, optional=False)
    assert inv is not None
    print(json.dumps(kubespray.offline_vars(inv), indent=2) if args.json else kubespray.offline_yaml(inv),
          end="\n" if args.json else "")
    return 0


def _cmd_smoke_test(args: argparse.Namespace) -> int:
    from nodecfg import report, smoke

    inv = _inventory(args)
    assert inv is not None
    hosts = inv.select(args.limit)
    result = smoke.smoke_test(inv, hosts, image=args.image, forks=args.forks,
                              timeout=args.timeout or smoke.DEFAULT_TIMEOUT,
                              require_all_replicas=args.require_all_replicas, on_done=report.host_done(args.json))
    report.smoke_recap(result, as_json=args.json)
    return result.exit_code


def _offline_inventory(args: argparse.Namespace, *, optional: bool = True) -> Inventory | None:
    """The inventory for commands that contact no host (`bundle create`, `kubespray-vars`): only
    its images, registry and bundle sources matter, so its SSH keys need not exist here."""
    path = args.inventory
    if path is None:
        if optional and not Path(DEFAULT_INVENTORY).exists():
            return None
        path = DEFAULT_INVENTORY
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return load_inventory(path)  # raises its one-line error
    return parse_inventory(text, str(path), check_files=False) if text.strip() else load_inventory(path)


def _cmd_bundle_create(args: argparse.Namespace) -> int:
    from nodecfg.bundle import create, sources
    from nodecfg.images import plan_targets

    inv = _offline_inventory(args)
    images = list(inv.images) if inv else []
    for path in args.images_file:
        images += sources.read_images_file(path)
    if not images:
        raise UsageError("bundle create: no images: list them under `images:` in the inventory "
                         "or pass --images-file FILE")
    refs = plan_targets(images)
    roles: dict[str, str] = {}
    if inv is not None and not args.no_registry_image:
        from nodecfg.images import parse_ref

        reg = parse_ref(inv.registry.image)
        if any(r.upstream == reg.upstream for r in refs):
            roles[reg.upstream] = "image,registry"
        else:
            refs.append(reg)
            roles[reg.upstream] = "registry"
    srcs = sources.parse_sources(dict(inv.bundle_sources) if inv else {})
    srcs.update(dict(args.source))
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"-o {out}: is a directory; name the bundle file, e.g. {out / 'images.tar'}")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: the directory {out.parent} does not exist")
    try:
        result = create.create_bundle(refs, out, platforms=tuple(dict.fromkeys(args.platform)), sources=srcs,
                                      roles=roles)
    except KeyboardInterrupt:
        _say(f"what was fetched is kept in {create.work_dir_for(out)}/; the same command resumes")
        raise
    print(create.summary(result))
    return 0


def _cmd_bundle_inspect(args: argparse.Namespace) -> int:
    import json

    from nodecfg.bundle import inspect

    info = inspect.inspect_bundle(args.file)
    print(json.dumps(inspect.to_json(info), indent=2) if args.json else inspect.render(info))
    return 0


def _cmd_bundle_verify(args: argparse.Namespace) -> int:
    from nodecfg.bundle import inspect
    from nodecfg.bundle.progress import Bar, human

    with Bar(True) as bar:
        result = inspect.verify_bundle(args.file, on_bytes=bar.advance,
                                       on_total=lambda total: bar.phase("verifying", total))
    print(f"{result.path}: ok: {result.images} image(s), {result.blobs} blobs, {human(result.blob_bytes)}, "
          "every sha256 and every reference checked")
    return 0


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# `nodecfg lab` was a command of nodecfg until the lab became a package of its own (lab/)
_LAB_MOVED = ("`nodecfg lab` is not part of nodecfg: the test lab is a separate dev tool, `nodecfg-lab`, "
             "in nodecfg's repository (lab/)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    try:
        if (sys.argv[1:] if argv is None else list(argv))[:1] == ["lab"]:
            raise UsageError(_LAB_MOVED)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.func(args))
    except NodecfgError as exc:
        print(f"nodecfg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("nodecfg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        if "nodecfg.ssh" in sys.modules:
            sys.modules["nodecfg.ssh"].close_gateways()


def run() -> NoReturn:
    """The `nodecfg` console script: main(), then out without tearing the interpreter down.

    Finalizing every module paramiko, cryptography and yaml bring takes 50-90 ms on a small
    machine, a tenth of an unchanged registry-up, and nothing of nodecfg's needs it. What the
    interpreter's exit does that matters is done here: the threads nodecfg started are joined (its
    thread pools are shut down by then; paramiko's transport threads are daemons), atexit handlers
    run (temporary directories), and stdout and stderr are flushed."""
    import atexit
    import threading

    code = main()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said there
            code = code or 1
    os._exit(code)


if __name__ == "__main__":
    run()
