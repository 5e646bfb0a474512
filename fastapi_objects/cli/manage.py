"""``objects ls``, ``show``, ``rm`` and ``stats``: look at stored objects without thawing them.

``ls`` and ``show`` name each object's owner: the node holding it live, or ``-`` when no node
does (released on hibernation or a graceful stop, or never claimed), and when an object of a
class with ``expire_after`` expires unless it is used before (its ``objects:expire`` alarm).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._console import console
from ._errors import CliError, reported
from ._target import AppOption, DatabaseUrlOption, SchemaOption, Target, open_target, resolve

if TYPE_CHECKING:
    from ..storage import Alarm
    from ..storage.sql import SQLStorage

# storage.base.STATUSES, spelled out so that `objects --help` need not import the storage layer
# (tests/test_cli_manage.py keeps the two equal).
STATUSES = ("active", "hibernated")
NO_OWNER = "-"  # no node holds the object: released (hibernated, node stopped) or never claimed
TypeArgument = Annotated[str, typer.Argument(metavar="TYPE", help="Object type, e.g. counter.")]
KeyArgument = Annotated[str, typer.Argument(metavar="KEY", help="Object key.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


@reported
def ls(
    type_name: Annotated[
        str | None,
        typer.Argument(metavar="[TYPE]", help="Object type, e.g. counter; none: list the types."),
    ] = None,
    status: Annotated[
        str | None, typer.Option(help=f"Only objects in this status ({', '.join(STATUSES)}).")
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Only keys starting with this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many rows.")] = 50,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """List the stored objects of TYPE, by key; without TYPE, the types and their counts."""
    from ..runtime.keys import validate_key_prefix

    if type_name is None:
        if status is not None or prefix is not None:
            raise CliError("--status and --prefix filter the objects of one TYPE: name it")
        asyncio.run(_stats(_target(app, database_url, schema), hint=True))
        return
    if status is not None and status not in STATUSES:
        raise CliError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    if prefix:
        validate_key_prefix(prefix)
    asyncio.run(_ls(_target(app, database_url, schema), type_name, status, prefix, limit))


async def _ls(
    target: Target, type_name: str, status: str | None, prefix: str | None, limit: int
) -> None:
    from rich.table import Table

    from ..storage import ObjectQuery

    async with open_target(target, version=2) as storage:
        await _check_type(storage, target, type_name)
        page = await storage.query(
            ObjectQuery(type=type_name, status=status, key_prefix=prefix, limit=limit)
        )
        idents = [(cp.type, cp.key) for cp in page.items]
        owners = await storage.owners(idents)  # one query
        expiries = _expiries(await _alarms(storage, idents))  # and one
    out = console()
    if not page.items:
        out.print(f"no {type_name} objects match")
        return
    columns = ["key", "status", "owner", "rev", "version", "updated (UTC)"]
    table = Table(*columns, *(["expires (UTC)"] if expiries else []), "state", title=type_name)
    for cp in page.items:
        state = json.dumps(cp.state, separators=(",", ":"))
        expiry = expiries.get((cp.type, cp.key))
        table.add_row(
            cp.key, cp.status, owners.get((cp.type, cp.key), NO_OWNER), str(cp.rev),
            str(cp.state_version), _time(cp.updated_at),
            *([_expires(expiry, cp.status)] if expiries else []),
            state if len(state) <= 60 else state[:59] + "…",
        )
    out.print(table)
    if page.next_cursor is not None:
        out.print(f"(first {limit} shown; raise --limit for more)")


@reported
def show(
    type_name: TypeArgument,
    key: KeyArgument,
    journal: Annotated[int, typer.Option(min=0, help="How many journal entries to show.")] = 10,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Show one object: state, rev, state version, status, times and its journal tail."""
    from ..runtime.keys import validate_key

    key = validate_key(key)
    asyncio.run(_show(_target(app, database_url, schema), type_name, key, journal))


async def _show(target: Target, type_name: str, key: str, tail: int) -> None:
    from rich.json import JSON
    from rich.table import Table

    async with open_target(target, version=2) as storage:
        await _check_type(storage, target, type_name)
        cp = await storage.load(type_name, key)
        if cp is None:
            raise CliError(f"no object {type_name}:{key}")
        entries = await storage.read_journal(type_name, key, max(0, cp.journal_rev - tail))
        owner = (await storage.owners([(type_name, key)])).get((type_name, key), NO_OWNER)
        alarms = (await _alarms(storage, [(type_name, key)])).get((type_name, key), [])
    expiry = _expiries({(type_name, key): alarms}).get((type_name, key))
    alarms = [alarm for alarm in alarms if alarm is not expiry]
    out = console()
    fields = Table.grid(padding=(0, 2))
    for name, value in [
        ("object", f"{type_name}:{key}"), ("status", cp.status), ("owner", owner),
        ("rev", cp.rev),
        ("state version", cp.state_version), ("journal rev", cp.journal_rev),
        ("snapshot rev", cp.snapshot_rev), ("created (UTC)", _time(cp.created_at)),
        ("updated (UTC)", _time(cp.updated_at)),
        *([("expires (UTC)", _expires(expiry, cp.status))] if expiry is not None else []),
    ]:
        fields.add_row(name, str(value))
    out.print(fields)
    out.print("state:")
    out.print(JSON.from_data(cp.state))
    if alarms:
        table = Table("alarm", "status", "due (UTC)", "retries", "every / cron", "last error",
                      title="alarms")
        for alarm in alarms:
            table.add_row(alarm.name, alarm.status, _time(alarm.due_at), str(alarm.retry_count),
                          alarm.cron or (f"{alarm.every:g} s" if alarm.every else ""),
                          alarm.last_error or "")
        out.print(table)
    if tail == 0:
        return
    if not entries:
        out.print("journal: empty")
        return
    journal = Table("rev", "at (UTC)", "kind", "payload", title=f"journal (last {len(entries)})")
    for entry in entries:
        journal.add_row(str(entry.rev), _time(entry.at), entry.kind, _json(entry.payload))
    out.print(journal)


@reported
def rm(
    type_name: TypeArgument,
    key: KeyArgument,
    yes: YesOption = False,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Purge one object: its checkpoint, its journal and its alarms."""
    from ..runtime.keys import validate_key

    key = validate_key(key)
    asyncio.run(_rm(_target(app, database_url, schema), type_name, key, yes))


async def _rm(target: Target, type_name: str, key: str, yes: bool) -> None:
    async with open_target(target) as storage:
        if target.types is not None:
            await _check_type(storage, target, type_name)
        cp = await storage.load(type_name, key)
        if cp is None:
            raise CliError(f"no object {type_name}:{key}")
        if not yes:
            typer.confirm(
                f"Delete {type_name}:{key} (rev {cp.rev}), its {cp.journal_rev} journal "
                "entries and its alarms for good?",
                abort=True,
            )
        await storage.delete(type_name, key)
    typer.echo(f"deleted {type_name}:{key}")


@reported
def stats(
    app: AppOption = None, database_url: DatabaseUrlOption = None, schema: SchemaOption = None
) -> None:
    """Count the stored objects per type and status."""
    asyncio.run(_stats(_target(app, database_url, schema)))


async def _stats(target: Target, hint: bool = False) -> None:
    """Print the objects per type and status (``hint``: and how to list one type's objects)."""
    from rich.table import Table

    async with open_target(target, version=2) as storage:  # (status: held by a node?)
        rows = await storage.stats()
    counts: dict[str, dict[str, int]] = {name: {} for name in sorted(target.types or {})}
    for row in rows:
        counts.setdefault(row.type, {})[row.status] = row.count
    out = console()
    if hint and not counts:
        out.print("no stored objects")
        return
    table = Table("type", *STATUSES, "total", title="objects")
    for name in sorted(counts):
        by_status = counts[name]
        table.add_row(
            name, *(str(by_status.get(s, 0)) for s in STATUSES), str(sum(by_status.values()))
        )
    out.print(table)
    if hint:
        out.print("objects ls TYPE lists the objects of one type")


def _target(app: str | None, database_url: str | None, schema: str | None) -> Target:
    """Resolve the database and name it (before connecting: a hang shows where)."""
    target = resolve(app, database_url, schema)
    typer.echo(target.describe())
    return target


async def _check_type(storage: SQLStorage, target: Target, type_name: str) -> None:
    """Refuse a type the app does not register (with --app) or that has no stored object."""
    if target.types is not None:
        if type_name not in target.types:
            known = ", ".join(sorted(target.types)) or "none"
            raise CliError(f"unknown object type {type_name!r} (registered: {known})")
        return
    stored = sorted({row.type for row in await storage.stats()})
    if type_name not in stored:
        known = ", ".join(stored) or "none"
        raise CliError(
            f"unknown object type {type_name!r}: none stored (stored types: {known}; "
            "--app names the registered ones)"
        )


async def _alarms(
    storage: SQLStorage, idents: list[tuple[str, str]]
) -> dict[tuple[str, str], list[Alarm]]:
    """The objects' alarms, or none on a database without the version-3 tables."""
    from .._exceptions import StorageUnavailable

    try:
        return await storage.load_alarms_many(idents)
    except StorageUnavailable:
        return {}


def _expiries(alarms: dict[tuple[str, str], list[Alarm]]) -> dict[tuple[str, str], Alarm]:
    """Each object's expiry (the ``objects:expire`` alarm of a class with ``expire_after``).

    A failed one is an expiry its class dropped (it has no ``expire_after`` any more).
    """
    from ..runtime.alarms.schedule import EXPIRE

    return {
        ident: alarm for ident, found in alarms.items() for alarm in found
        if alarm.name == EXPIRE and alarm.status == "pending"
    }


def _expires(expiry: Alarm | None, status: str) -> str:
    """When the object expires: its expiry's due time, unless it is used before.

    An active object's stored time is the one it had when its owner last wrote it: every use
    since moves it, so that is a lower bound.
    """
    if expiry is None:
        return "-"
    due = _time(expiry.due_at)
    return f"{due} or later (active)" if status == "active" else due


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _json(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 80 else text[:79] + "…"
