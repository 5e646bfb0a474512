"""Alembic for ``objects init``: render the async environment, find the head, plan the revision.

As advanced-alchemy does, a ``Config`` subclass points ``alembic.command.init`` at the package's
own template folder, so the environment is rendered by Alembic itself.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import rev_id

from ._project import Project, alembic_files
from ._templates import render, templates_dir

ENV_TEMPLATE = "alembic_async"
MIGRATIONS_DIR = "migrations"
_MARKER = "Written by `objects init`"
_QUIET = argparse.Namespace(quiet=True)
# The storage DDL a revision runs; a hand-written one without version= is version 1.
_CREATES = re.compile(r"create_storage_tables\((?:version=(\d+))?")


class TemplateConfig(Config):
    """An Alembic ``Config`` whose ``init`` templates are fastapi_objects' own."""

    def get_template_directory(self) -> str:
        """The package's templates folder (holding ``alembic_async/``)."""
        return str(templates_dir())


@dataclass(frozen=True)
class StorageRevision:
    """A revision in the project's history that creates the storage tables."""

    path: Path
    revision: str
    down_revision: str | None
    written_by_init: bool


def render_environment() -> dict[Path, str]:
    """Render ``alembic.ini`` and ``migrations/`` with ``alembic init`` in a scratch folder.

    Returns the files by their path relative to the project root; nothing is written there.
    """
    with (
        tempfile.TemporaryDirectory() as tmp,
        contextlib.chdir(tmp),
        contextlib.redirect_stdout(io.StringIO()),  # its "Generating ..." lines name the scratch
    ):
        # Relative paths, so that alembic.ini says script_location = %(here)s/migrations.
        config = TemplateConfig("alembic.ini", cmd_opts=_QUIET)
        command.init(config, MIGRATIONS_DIR, template=ENV_TEMPLATE)
        root = Path(tmp)
        return {
            path.relative_to(root): path.read_text()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }


def project_config(project: Project) -> Config:
    """The project's Alembic ``Config`` (``alembic.ini`` and/or ``[tool.alembic]``)."""
    ini, toml = alembic_files(project.root)
    return Config(file_=ini, toml_file=toml, cmd_opts=_QUIET)


def existing_history(
    project: Project,
) -> tuple[ScriptDirectory, str | None, dict[int, StorageRevision]]:
    """The project's script directory, its single head, and its storage revisions by version.

    Several heads raise Alembic's ``CommandError`` ("multiple heads"): merge them first.
    """
    script = ScriptDirectory.from_config(project_config(project))
    head = script.get_current_head()
    found: dict[int, StorageRevision] = {}
    for sc in script.walk_revisions():
        text = Path(sc.path).read_text()
        match = _CREATES.search(text)
        if match is not None:
            down = sc.down_revision
            found.setdefault(int(match.group(1) or 1), StorageRevision(
                path=Path(sc.path).resolve().relative_to(project.root.resolve()),
                revision=sc.revision,
                down_revision=down if isinstance(down, str) or down is None else None,
                written_by_init=_MARKER in text,
            ))
    return script, head, found


def revision_file(versions_dir: Path, revision: str, version: int) -> Path:
    """Where a new storage revision goes (Alembic finds any ``.py`` in ``versions/``)."""
    return versions_dir / f"{revision}_objects_storage_v{version}.py"


def new_revision_id() -> str:
    """A fresh Alembic revision id."""
    return rev_id()


def render_revision(
    revision: str, down_revision: str | None, schema: str | None, version: int
) -> str:
    """The revision that calls ``create_storage_tables(version=version, schema=...)``."""
    return render(
        "objects_storage.py.jinja",
        revision=revision,
        down_revision=down_revision,
        schema=schema,
        version=version,
    )
