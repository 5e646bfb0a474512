"""The ``objects`` command line: ``init`` a project, ``migrate`` it, inspect and restore objects.

Run ``objects --help``; each command is described in ``docs/cli.md``.
"""

from __future__ import annotations

import typer

from .history import history, restore
from .init import init
from .manage import ls, rm, show, stats
from .migrate import migrate
from .nodes import nodes
from .queue import queue

app = typer.Typer(
    name="objects",
    help="Durable objects for FastAPI: set up storage and migrations, inspect objects and nodes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold database passwords
    rich_markup_mode=None,  # plain help: flags shown as flags, not `--force <bool>`
)
app.command()(init)
app.command()(migrate)
app.command()(ls)
app.command()(show)
app.command()(rm)
app.command()(history)
app.command()(restore)
app.command()(stats)
app.command()(nodes)
app.add_typer(queue, name="queue")

__all__ = ["app", "main"]


def main() -> None:
    """Run the ``objects`` command (the console script)."""
    app(prog_name="objects")
