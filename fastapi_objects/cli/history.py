"""``objects history TYPE KEY`` and ``objects restore TYPE KEY --rev N | --at TIME``.

``history`` reads the states a class's ``history`` option kept (storage version 5), without
waking the object. ``restore`` is a turn on the object's owner, like any call: the command
joins the cluster as a short-lived node with the app's classes (``--app``: the state model
validates the restored state) and sends it there.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._console import console
from ._errors import CliError, reported
from ._target import AppOption, DatabaseUrlOption, SchemaOption, Target, load_runtime, open_target
from .manage import KeyArgument, TypeArgument, YesOption, _check_type, _target, _time

if TYPE_CHECKING:
    from ..runtime import Runtime


@reported
def history(
    type_name: TypeArgument,
    key: KeyArgument,
    rev: Annotated[
        int | None, typer.Option(min=1, help="Show the state kept at (or last before) this rev.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many rows.")] = 20,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """List an object's kept states (its class's history option), newest first."""
    from ..runtime.keys import validate_key

    key = validate_key(key)
    asyncio.run(_history(_target(app, database_url, schema), type_name, key, rev, limit))


async def _history(
    target: Target, type_name: str, key: str, rev: int | None, limit: int
) -> None:
    from rich.json import JSON
    from rich.table import Table

    async with open_target(target, version=5) as storage:
        await _check_type(storage, target, type_name)
        if rev is not None:
            kept = await storage.kept_state(type_name, key, rev=rev)
            if kept is None:
                raise CliError(f"no state of {type_name}:{key} kept at or before rev {rev}")
            out = console()
            out.print(f"{type_name}:{key} at rev {kept.rev} (state version "
                      f"{kept.state_version}, committed {_time(kept.at)} UTC):")
            out.print(JSON.from_data(kept.state))
            return
        kept_states = await storage.history(type_name, key, limit=limit)
    out = console()
    if not kept_states:
        out.print(
            f"no kept states of {type_name}:{key}: its class keeps them with history = "
            "timedelta(...) (an event-sourced object restores from its journal: "
            "objects show --journal N)"
        )
        return
    table = Table("rev", "committed (UTC)", "state version", title=f"{type_name}:{key}")
    for kept in kept_states:
        table.add_row(str(kept.rev), _time(kept.at), str(kept.state_version))
    out.print(table)
    out.print(f"objects history {type_name} {key} --rev N shows one; "
              f"objects restore {type_name} {key} --rev N restores it")


@reported
def restore(
    type_name: TypeArgument,
    key: KeyArgument,
    rev: Annotated[
        int | None,
        typer.Option(min=1, help="The rev to go back to (event-sourced: a journal rev)."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="The time to go back to, ISO 8601 (UTC if no offset)."),
    ] = None,
    yes: YesOption = False,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Restore an object's state as it was at a rev or a time: a journaled turn on its owner."""
    from ..runtime.keys import validate_key

    key = validate_key(key)
    if (rev is None) == (at is None):
        raise CliError("say what to restore: --rev N or --at TIME (one of them)")
    moment = _moment(at) if at is not None else None
    if app is None:
        raise CliError(
            "restore runs your class's code (its state model) as a turn on the object's owner: "
            "pass --app MODULE:ATTR (e.g. app.main:app)"
        )
    target = _target(app, database_url, schema)
    assert target.types is not None
    if type_name not in target.types:
        known = ", ".join(sorted(target.types)) or "none"
        raise CliError(f"unknown object type {type_name!r} (registered: {known})")
    what = f"rev {rev}" if rev is not None else f"{moment.isoformat() if moment else at}"
    if not yes:
        typer.confirm(f"Restore {type_name}:{key} to its state at {what}?", abort=True)
    done = asyncio.run(_restore(load_runtime(app), target, type_name, key, rev, moment))
    typer.echo(
        f"restored {type_name}:{key} to rev {done['restored']}: it is now at rev {done['rev']} "
        f"(undo: objects restore {type_name} {key} --rev {done['rev'] - 1} --app {app})"
    )


async def _restore(
    app: Runtime, target: Target, type_name: str, key: str, rev: int | None,
    at: datetime | None,
) -> dict[str, Any]:
    from ..runtime import Runtime

    settings = app.settings.model_copy(update={
        "database_url": target.url, "db_schema": target.schema, "node_id": None,
        "internal_port": 0, "create_tables": False,
    })
    async with Runtime(list(app.types.values()), settings=settings) as runtime:
        cls = runtime.object_type(type_name)
        by = f"objects restore ({getpass.getuser()}@{socket.gethostname()})"
        return await runtime.restore(cls, key, rev=rev, at=at, by=by)


def _moment(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--at takes an ISO 8601 time such as 2026-05-01T12:00:00Z, not {text!r}"
        ) from None
