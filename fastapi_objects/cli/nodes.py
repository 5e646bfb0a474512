"""``objects nodes``: the nodes of the cluster as the database knows them.

Every running ``Objects`` runtime (each uvicorn worker, each Fly machine) is a node with a row
in ``objects_nodes``. This reads those rows only: no app is imported (unless ``--app`` is
given) and no object is woken. A node is dead once its heartbeat is older than ``--ttl``;
what it still owns is taken over by the next node that touches it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from ._console import console
from ._errors import reported
from ._target import AppOption, DatabaseUrlOption, SchemaOption, Target, open_target, resolve

if TYPE_CHECKING:
    from ..storage import NodeInfo


@reported
def nodes(
    ttl: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="Seconds after its last heartbeat that a node counts as dead "
            "(default: the app's node_ttl, OBJECTS_NODE_TTL, else 10).",
        ),
    ] = None,
    app: AppOption = None,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """List the nodes: address, region, machine, heartbeat age, alive or dead, objects owned."""
    target = resolve(app, database_url, schema)
    typer.echo(target.describe())
    asyncio.run(_nodes(target, target.node_ttl if ttl is None else ttl))


async def _nodes(target: Target, ttl: float) -> None:
    from rich.table import Table

    async with open_target(target, version=4) as storage:
        found = await storage.nodes(ttl)
        now = await storage.clock()  # heartbeats' clock: ages are right whatever ours says
    out = console()
    if not found:
        out.print("no nodes registered: no app is running on this database")
        return
    table = Table(
        "node", "address", "region", "machine", "pid", "heartbeat (s ago)", "state", "owned",
        title="nodes",
    )
    for node in found:
        table.add_row(
            node.node_id, node.address or "-", node.region or "-", node.machine or "-",
            str(node.process.pid) if node.process else "-",
            "-" if node.declared_dead else f"{_age(node, now):.1f}",
            "alive" if node.alive else "dead (proven)" if node.declared_dead else "dead",
            str(node.owned),
        )
    out.print(table)
    alive = sum(node.alive for node in found)
    out.print(
        f"{alive} alive, {len(found) - alive} dead (dead: no heartbeat for {ttl:g} s, or "
        "proven dead by a node of its machine)"
    )


def _age(node: NodeInfo, now: datetime) -> float:
    """Seconds since the node's last heartbeat (never below 0: the clocks are read apart)."""
    return max(0.0, (now - node.heartbeat_at).total_seconds())
