"""``objects queue ls NAME [--dead]`` and ``objects queue retry NAME JOB``: durable queues.

``ls`` reads the queue's snapshot and journal without waking it; ``retry`` gives a dead job its
attempts back through the queue's owner (this command joins the cluster as a short-lived node
to send the call there).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from ._console import console
from ._errors import CliError, reported
from ._target import DatabaseUrlOption, SchemaOption, Target, open_target, resolve

queue = typer.Typer(
    help="Durable queues: list jobs, revive dead ones.", no_args_is_help=True,
    rich_markup_mode=None,
)
NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Queue name, e.g. emails.")]


@queue.command("ls")
@reported
def ls_jobs(
    name: NameArgument,
    dead: Annotated[bool, typer.Option("--dead", help="The dead-lettered jobs.")] = False,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """List a queue's pending jobs (or its dead-lettered ones)."""
    target = resolve(None, database_url, schema)
    typer.echo(target.describe())
    asyncio.run(_ls(target, name, dead))


async def _ls(target: Target, name: str, dead: bool) -> None:
    from rich.table import Table

    from ..runtime.queues import QUEUE_TYPE, ObjectsQueue, QueueEvent, QueueState

    async with open_target(target) as storage:
        cp = await storage.load(QUEUE_TYPE, name)
        if cp is None:
            raise CliError(f"no queue {name!r}")
        state = QueueState.model_validate(cp.state)
        for entry in await storage.read_journal(QUEUE_TYPE, name, cp.snapshot_rev):
            if entry.kind == "event":
                state = ObjectsQueue.apply(state, QueueEvent.model_validate(entry.payload))
    jobs = [j for j in state.jobs.values() if (j.status == "dead") == dead]
    out = console()
    table = Table("job", "status", "attempts", "visible (UTC)", "last error",
                  title=f"{name}: {len(jobs)} {'dead' if dead else 'pending'}, "
                        f"{state.completed} completed")
    for job in sorted(jobs, key=lambda j: j.visible_at):
        table.add_row(job.id, job.status, f"{job.attempts}/{job.max_attempts}",
                      job.visible_at.strftime("%Y-%m-%d %H:%M:%S"), job.last_error or "")
    out.print(table)


@queue.command("retry")
@reported
def retry(
    name: NameArgument,
    job: Annotated[str, typer.Argument(metavar="JOB", help="The dead job's id.")],
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Give a dead-lettered job its attempts back (it runs again on the next claim)."""
    target = resolve(None, database_url, schema)
    typer.echo(target.describe())
    if not asyncio.run(_retry(target, name, job)):
        raise CliError(f"no dead job {job!r} in queue {name!r}")
    typer.echo(f"job {job} of {name} will run again")


async def _retry(target: Target, name: str, job: str) -> bool:
    from ..runtime import Runtime
    from ..settings import ObjectsSettings

    settings = ObjectsSettings.from_options(
        database_url=target.url, schema=target.schema, internal_port=0, create_tables=False
    )
    async with Runtime(settings=settings) as runtime:
        return bool(await runtime.queue(name).retry(job))
