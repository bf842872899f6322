"""The Jinja templates shipped inside the wheel (the top-level `templates/` folder of the source
tree is installed as the `nodecfg.templates` package data)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


def templates_dir() -> Path:
    from importlib.resources import files

    try:
        path = Path(str(files("nodecfg.templates")))
        if (path / "daemon.json.j2").exists():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "templates"  # a source checkout


@cache
def _env() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)  # noqa: S701 -- renders JSON and TOML, never HTML


def render(name: str, **context: Any) -> str:
    return _env().get_template(name).render(**context)
