"""The package's templates (``fastapi_objects/templates``, shipped inside the wheel)."""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2


def templates_dir() -> Path:
    """The templates folder of the installed package."""
    return Path(str(files("fastapi_objects") / "templates"))


@functools.cache
def _environment() -> jinja2.Environment:
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
