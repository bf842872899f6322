"""The Jinja templates shipped inside the wheel (the top-level `templates/` folder of the source
tree is installed as the `nodecfg.templates` package data).

Templates are read through `importlib.resources`, never through a filesystem path: in an installed
wheel `nodecfg.templates` is a namespace package, whose `files()` is a MultiplexedPath that has no
single directory behind it (turning it into a `Path` found no template in every installed copy).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

PACKAGE = "nodecfg.templates"


def templates_root() -> Traversable:
    """Where the templates are: the installed package data, else a source checkout's folder."""
    from importlib.resources import files

    try:
        root = files(PACKAGE)
        if root.joinpath("daemon.json.j2").is_file():
            return root
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "templates"  # a source tree, not installed


def read_template(name: str) -> str:
    return templates_root().joinpath(name).read_text(encoding="utf-8")


@cache
def _env() -> jinja2.Environment:
    import jinja2

    def load(name: str) -> tuple[str, str | None, Callable[[], bool]]:
        try:
            return read_template(name), None, lambda: True
        except (FileNotFoundError, NotADirectoryError):
            raise jinja2.TemplateNotFound(name) from None

    return jinja2.Environment(loader=jinja2.FunctionLoader(load),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)  # noqa: S701 -- renders JSON and TOML, never HTML


def render(name: str, **context: Any) -> str:
    return _env().get_template(name).render(**context)
