"""Every package nodecfg imports is declared in pyproject.toml, and every declared one is imported:
a scan of each `import` in nodecfg/ (inside functions and TYPE_CHECKING blocks too), each top-level
name mapped to the distribution that installs it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import nodecfg

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(nodecfg.__file__).resolve().parent


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def declared() -> set[str]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    out = set()
    for req in doc["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        assert name, f"pyproject.toml: cannot read the dependency {req!r}"
        out.add(_normal(name[0]))
    return out


def imported() -> dict[str, set[str]]:
    """Top-level module name -> the nodecfg files importing it (third-party modules only)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top != "nodecfg":
                    found.setdefault(top, set()).add(str(path.relative_to(PACKAGE.parent)))
    return found


def test_every_imported_package_is_declared() -> None:
    owners = packages_distributions()
    wanted = declared()
    missing = []
    for module, files in sorted(imported().items()):
        dists = {_normal(d) for d in owners.get(module, [])}
        if not dists & wanted:
            where = ", ".join(sorted(files))
            missing.append(f"{module} (imported by {where}; installed by {sorted(dists) or 'nothing here'})")
    assert not missing, ("pyproject.toml [project].dependencies does not declare what nodecfg imports: "
                         + "; ".join(missing) + ". Declare each with the version range the tests ran on.")


def test_every_declared_package_is_imported() -> None:
    owners = packages_distributions()
    used = {_normal(d) for module in imported() for d in owners.get(module, [])}
    unused = sorted(declared() - used)
    assert not unused, f"pyproject.toml declares {unused}, which nothing in nodecfg/ imports: drop them"
