"""How the CLI fails: one clear line on stderr and exit code 1, no traceback for user errors."""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
import typer
from alembic.util import CommandError

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
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (ValueError, sa.exc.ArgumentError):  # unparsable: hide what looks like a password
        return re.sub(r"://([^:/@]*):[^/@]*@", r"://\1:***@", url)


def reported(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            message = str(exc)
        except ObjectsError as exc:
            message = exc.message
        except CommandError as exc:
            message = f"alembic: {exc}"
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            message = f"database unreachable: {exc.orig}"
        except BrokenPipeError:  # our stdout went away (e.g. `| head`): nothing to say
            raise typer.Exit(1) from None
        except (ConnectionError, socket.gaierror, TimeoutError) as exc:
            message = f"database unreachable: {exc}"
        except OSError as exc:  # e.g. a file the command cannot write
            message = str(exc)
        except sa.exc.DBAPIError as exc:
            message = f"the database refused the operation: {exc.orig}"
        typer.echo(f"error: {one_line(message)}", err=True)
        raise typer.Exit(1)

    return wrapper
