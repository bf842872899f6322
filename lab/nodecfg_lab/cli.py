"""`nodecfg-lab up|down|status|inventory|flavors`: parse flags, call the fleet, map errors to exit
codes (0 done; 1 a LabError, one line on stderr; 2 bad usage, reported before the Docker engine is
asked anything). Anything else is a bug and gets its traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from nodecfg_lab import fleet
from nodecfg_lab.errors import LabError, LabUsageError
from nodecfg_lab.flavors import DEFAULT_FLAVOR, FLAVORS, assign_flavors
from nodecfg_lab.images import built_flavors
from nodecfg_lab.settings import lab_paths

PROG = "nodecfg-lab"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise LabUsageError(f"{self.prog}: {message} (see --help)")


def _count(text: str, least: int = 1) -> int:
    if not text.isdigit() or int(text) < least:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least {least}, got {text!r}")
    return int(text)


def _count0(text: str) -> int:
    return _count(text, 0)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected names separated by commas")
    return names


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=(
        "nodecfg's dev lab: a master and N Debian nodes (systemd, sshd, docker, containerd) as "
        "containers on this machine's Docker engine, with a nodecfg inventory for them; optionally "
        "registry replicas and an S3 store (SeaweedFS) for the registry."))
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    p = sub.add_parser("up", help="build (once) and start the lab; write its inventory")
    p.add_argument("--nodes", type=_count, default=3, metavar="N",
                   help="number of nodes besides the master (default: 3)")
    p.add_argument("--pull", action="store_true",
                   help="try to pull registry:2 and the test images before building them")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild the node images in use from scratch (a derived flavor reuses its base's rootfs)")
    p.add_argument("--flavors", type=_names, default=[DEFAULT_FLAVOR], metavar="LIST",
                   help="node flavors, comma-separated: node1, node2, ... take them in turn; the master, "
                   f"which runs the registry, is bookworm (default: {DEFAULT_FLAVOR}; `{PROG} flavors` lists them)")
    p.add_argument("--minimal", type=_names, default=[], metavar="NAMES",
                   help="hosts that get neither curl nor wget (comma-separated, e.g. node3)")
    p.add_argument("--replicas", type=_count0, default=0, metavar="K",
                   help="registry replicas besides the master: hosts replica1..replicaK (bookworm, "
                   "addresses after the nodes'), listed under registry.replicas in the inventory (default: 0)")
    p.add_argument("--s3", action="store_true",
                   help="an S3 store for the registry: SeaweedFS on hosts s3a and s3b (after the replicas), "
                   "bucket `registry`, keys in the lab's directory; the inventory names it under "
                   "registry.storage.s3 (needs the lab's s3 extra: pip install 'nodecfg-lab[s3]')")
    p.set_defaults(func=_up)
    sub.add_parser("down", help="remove the lab's containers, volumes and network").set_defaults(func=_down)
    sub.add_parser("status", help="list the lab's hosts").set_defaults(func=_status)
    sub.add_parser("inventory", help="print the path of the lab's inventory").set_defaults(func=_inventory)
    sub.add_parser("flavors", help="list the node flavors and which images are built").set_defaults(func=_flavors)
    return parser


def _up(args: argparse.Namespace) -> int:
    path = fleet.lab_up(args.nodes, say=_say, pull=args.pull, rebuild=args.rebuild,
                        flavors=args.flavors, minimal=args.minimal, replicas=args.replicas, s3=args.s3)
    used = ", ".join(dict.fromkeys(assign_flavors(args.nodes, args.flavors)))
    extra = "".join([f" + {args.replicas} replica(s)" if args.replicas else "",
                     " + an S3 store (s3a, s3b)" if args.s3 else ""])
    print(f"lab is up: master + {args.nodes} node(s) ({used}){extra}; inventory: {path}")
    print(f"  ssh -i {lab_paths().key} root@<address>      {PROG} status")
    return 0


def _down(_args: argparse.Namespace) -> int:
    count = fleet.lab_down(say=_say)
    print(f"lab is down ({count} host(s) removed)")
    return 0


def _status(_args: argparse.Namespace) -> int:
    nodes = fleet.lab_status()
    if not nodes:
        print(f"no lab is running ({PROG} up)")
        return 1
    for n in nodes:
        print(f"{n.name:<10} {n.address:<16} {n.state:<10} {n.flavor}{' minimal' if n.minimal else ''}")
    print(f"inventory: {lab_paths().inventory}")
    return 0


def _flavors(_args: argparse.Namespace) -> int:
    built = built_flavors()
    for f in FLAVORS.values():
        print(f"{f.name:<12} {'image' if f.name in built else '-':<6} {f.description}")
    return 0


def _inventory(_args: argparse.Namespace) -> int:
    print(lab_paths().inventory)
    return 0


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        if args.action is None:
            raise LabUsageError("choose an action: up, down, status, inventory, flavors (see --help)")
        return int(args.func(args))
    except LabError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The `nodecfg-lab` console script."""
    sys.exit(main())
