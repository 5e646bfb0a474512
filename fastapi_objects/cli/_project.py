"""The user's project: where its root is, where its FastAPI app lives, and its .env.

A directory is a FastAPI project root when its ``pyproject.toml`` or a ``requirements*.txt``
names ``fastapi``, or when ``app/main.py``, ``main.py``, ``app.py``, ``src/<pkg>/main.py`` or
``<pkg>/main.py`` imports it. The app is the first of those files that assigns ``FastAPI(...)``.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import CliError

_NAMES_FASTAPI = re.compile(r"\bfastapi\b", re.IGNORECASE)
_IMPORTS_FASTAPI = re.compile(r"^\s*(from|import)\s+fastapi\b", re.MULTILINE)
_ASSIGNS_APP = re.compile(r"^(\w+)\s*(?::[^=\n]+)?=\s*(?:fastapi\.)?FastAPI\(", re.MULTILINE)
_SKIP_DIRS = {"migrations", "tests", "node_modules", "site-packages", "venv", "env"}


@dataclass(frozen=True)
class Project:
    """A FastAPI project found on disk."""

    root: Path
    name: str
    app_module: str
    app_attr: str
    dependencies: str
    """The file listing the project's dependencies, for the Dockerfile: ``requirements.txt``,
    ``pyproject.toml`` (its ``[project]`` lists them) or ``""`` (none that init can read)."""
    pyproject: dict[str, Any]

    @property
    def app_path(self) -> str:
        """``module:attr`` of the FastAPI app, as uvicorn takes it."""
        return f"{self.app_module}:{self.app_attr}"

    @property
    def serves_healthz(self) -> bool:
        """Whether a module of the project names ``/healthz`` (the route fly.toml checks)."""
        return any("/healthz" in path.read_text(errors="replace") for path in _modules(self.root))

    @property
    def has_alembic(self) -> bool:
        """Whether the project already has an Alembic configuration."""
        return alembic_files(self.root) != (None, None)


def alembic_files(root: Path) -> tuple[Path | None, Path | None]:
    """``(alembic.ini, pyproject.toml)`` as the ``alembic`` command reads them.

    Both are ``None`` when the project has no Alembic (no ``alembic.ini``, no ``[tool.alembic]``).
    """
    ini, toml = root / "alembic.ini", root / "pyproject.toml"
    has_toml = toml.is_file() and "alembic" in _load_toml(toml).get("tool", {})
    if not ini.is_file() and not has_toml:
        return None, None
    return (ini if ini.is_file() else None), (toml if toml.is_file() else None)


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path} is not valid TOML: {exc}") from None


def find_project(root: Path) -> Project:
    """Describe the FastAPI project rooted at ``root``, or raise ``CliError``."""
    pyproject_file = root / "pyproject.toml"
    pyproject = _load_toml(pyproject_file) if pyproject_file.is_file() else {}
    declared = [
        p for p in [pyproject_file, *sorted(root.glob("requirements*.txt"))]
        if p.is_file() and _NAMES_FASTAPI.search(p.read_text(errors="replace"))
    ]
    app_file, attr = _find_app(root)
    if not declared and app_file is None:
        raise CliError(
            f"{root} is not a FastAPI project root: no pyproject.toml or requirements*.txt "
            "names fastapi and no main.py, app.py or app/main.py imports it "
            "(run `objects init` in your project's root folder)"
        )
    rel = app_file.relative_to(root) if app_file is not None else Path("main.py")
    parts = list(rel.with_suffix("").parts)
    module_parts = parts[1:] if parts[0] == "src" and len(parts) > 2 else parts
    if (root / "requirements.txt").is_file():
        dependencies = "requirements.txt"
    elif "dependencies" in pyproject.get("project", {}):
        dependencies = "pyproject.toml"
    else:
        dependencies = ""
    name = str(pyproject.get("project", {}).get("name") or root.resolve().name)
    return Project(
        root=root,
        name=re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "app",
        app_module=".".join(module_parts),
        app_attr=attr,
        dependencies=dependencies,
        pyproject=pyproject,
    )


def _modules(root: Path) -> list[Path]:
    """The project's own Python files (not in virtual environments, hidden or skipped folders)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                   and not (Path(folder) / d / "pyvenv.cfg").exists()]
        found += [Path(folder) / name for name in files if name.endswith(".py")]
    return sorted(found)


def _find_app(root: Path) -> tuple[Path | None, str]:
    candidates = [root / "app" / "main.py", root / "main.py", root / "app.py"]
    candidates += sorted(root.glob("src/*/main.py"))
    candidates += [
        p for p in sorted(root.glob("*/main.py"))
        if not p.parent.name.startswith(".") and p.parent.name not in _SKIP_DIRS
    ]
    importing = []
    for path in dict.fromkeys(candidates):  # de-duplicated, in order
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if not _IMPORTS_FASTAPI.search(text):
            continue
        match = _ASSIGNS_APP.search(text)
        if match:
            return path, match.group(1)
        importing.append(path)
    return (importing[0], "app") if importing else (None, "app")


def read_dotenv(path: Path) -> dict[str, str]:
    """The values a .env file sets, parsed by python-dotenv as ``ObjectsSettings`` parses them."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def setting(name: str, root: Path) -> str | None:
    """``name`` from the environment, else from ``root/.env`` (e.g. Fly's ``DATABASE_URL``)."""
    return os.environ.get(name) or read_dotenv(root / ".env").get(name) or None


def merge_dotenv(
    text: str | None, values: dict[str, str], force: bool
) -> tuple[str, dict[str, str]]:
    """Return ``text`` with ``values`` set, and the differing values it keeps, by name.

    Missing names are appended; a name already set to another value is kept unless ``force``.
    """
    lines = (text or "").splitlines()
    kept: dict[str, str] = {}
    missing = dict(values)
    changed = False
    for i, line in enumerate(lines):
        key, sep, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not sep or key not in missing:
            continue
        wanted = missing.pop(key)
        value = value.strip().strip("'\"")
        if value == wanted:
            continue
        if force:
            lines[i] = f"{key}={wanted}"
            changed = True
        else:
            kept[key] = value
    if text is not None and not missing and not changed:
        return text, kept
    if missing:
        lines.append("# fastapi_objects storage (objects init)")
        lines += [f"{key}={value}" for key, value in missing.items()]
    return "\n".join(lines) + "\n", kept
