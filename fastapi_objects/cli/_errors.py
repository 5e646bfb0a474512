"""How the CLI fails: one clear line on stderr and exit code 1, no traceback for user errors.

Nothing heavy is imported here: SQLAlchemy's and Alembic's exceptions are looked at only when
the command loaded them, so ``objects --help`` does not load either to describe them.
"""

from __future__ import annotations

import functools
import socket
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from .._exceptions import ObjectsError

P = ParamSpec("P")
R = TypeVar("R")


class CliError(Exception):
    """A user-facing failure of a command (printed as ``error: <message>``)."""


def one_line(text: object) -> str:
    """Collapse a (driver) message onto one line."""
    return " ".join(str(text).split())


def redact(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    from ..storage.urls import redact as redact_url

    return redact_url(url)


def reported(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:  # our stdout went away (e.g. `| head`): nothing to say
            raise typer.Exit(1) from None
        except Exception as exc:
            message = _describe(exc)
            if message is None:
                raise
        typer.echo(f"error: {one_line(message)}", err=True)
        raise typer.Exit(1)

    return wrapper


def _describe(exc: Exception) -> str | None:
    """The message for an error a user can cause, or ``None`` for a bug (re-raised)."""
    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, ObjectsError):  # the operator's terminal: the driver's word too
        return getattr(exc, "detail", None) or exc.message
    # An Alembic or SQLAlchemy error can only come from a command that loaded them.
    if "alembic.util" in sys.modules:
        from alembic.util import CommandError

        if isinstance(exc, CommandError):
            return f"alembic: {exc}"
    if "sqlalchemy.exc" in sys.modules:
        from sqlalchemy import exc as sa_exc

        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return f"database unreachable: {exc.orig}"
        if isinstance(exc, sa_exc.DBAPIError):
            return f"the database refused the operation: {exc.orig}"
    if isinstance(exc, ConnectionError | socket.gaierror | TimeoutError):
        return f"database unreachable: {exc}"
    if isinstance(exc, OSError):  # e.g. a file the command cannot write
        return str(exc)
    return None
