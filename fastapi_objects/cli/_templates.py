"""The templates ``objects init`` renders: the project's top-level ``templates/`` folder.

The wheel ships it inside the package (``fastapi_objects/templates``, hatch ``force-include``);
a source checkout (an editable install) reads it where it lies, next to the package.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


def templates_dir() -> Path:
    """The templates folder: inside the installed package, else beside it in the source tree."""
    packaged = Path(str(files("fastapi_objects") / "templates"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Python, TOML and Dockerfiles, not HTML
    )
    env.filters["pyrepr"] = _pyrepr
    return env


def _pyrepr(value: str | None) -> str:
    # A Python literal in the double quotes formatters prefer (JSON strings are Python strings).
    return "None" if value is None else json.dumps(value)


def render(template: str, /, **context: Any) -> str:
    """Render the Jinja2 template named ``template`` (e.g. ``"fly.toml.jinja"``)."""
    return _environment().get_template(template).render(**context)
