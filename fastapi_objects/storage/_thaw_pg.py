"""Thawing on PostgreSQL: a batch's claim in one statement, its checkpoints and alarms in two.

Both run on the writer's own asyncpg connections (``PostgresWrites.run``), not through
SQLAlchemy's pool and compiler: a one-object claim cost ~690 us of Python and three round
trips (BEGIN, upsert, COMMIT) that way, and a one-object load ~630 us, against ~50 us for the
statement itself on the driver. A thaw storm claims and loads in batches; a single thaw (the
common case) is a claim and a load, one round trip each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from pydantic_core import from_json
from sqlalchemy.dialects import postgresql

from ._rows import alarm_of, checkpoint_of
from ._writes import _positional, _qualified
from .base import Alarm, Checkpoint, Claim, Thawed

Ident = tuple[str, str]
Run = Callable[[str, Sequence[str], dict[str, Any]], Awaitable[list[Any]]]


class PostgresThaw:
    """The claim and load statements of a thaw batch, fixed text and positional parameters."""

    def __init__(
        self, checkpoints: sa.Table, owners: sa.Table, nodes: sa.Table, alarms: sa.Table,
        run: Run,
    ) -> None:
        self._run = run
        cp, o, n = _qualified(checkpoints), _qualified(owners), _qualified(nodes)
        a = _qualified(alarms)
        texts = postgresql.ARRAY(sa.Text())
        # Granted rows come from the upsert; refused ones from the owners as the statement
        # found them (their owner, its address). Objects in neither were deleted meanwhile.
        claiming = (
            "WITH v AS MATERIALIZED (SELECT * FROM unnest(:types, :keys) AS v(type, key)), "
            f"granted AS (INSERT INTO {o} (type, key, node_id, epoch, claimed_at) "
            "SELECT v.type, v.key, :node, 1, clock_timestamp() FROM v "
            'ORDER BY v.type COLLATE "C", v.key COLLATE "C" '
            "ON CONFLICT (type, key) DO UPDATE SET node_id = :node, "
            f"epoch = {o}.epoch + 1, claimed_at = clock_timestamp(), "
            f"previous_node_id = NULLIF({o}.node_id, :node) "
            f"WHERE {o}.node_id IS NULL OR {o}.node_id = :node OR NOT EXISTS "
            f"(SELECT 1 FROM {n} n WHERE n.node_id = {o}.node_id AND "
            "n.heartbeat_at >= clock_timestamp() - make_interval(secs => :ttl)) "
            "RETURNING type, key, epoch, previous_node_id)"
        )
        refused = (
            f"FROM v JOIN {o} o ON o.type = v.type AND o.key = v.key "
            f"LEFT JOIN {n} n ON n.node_id = o.node_id "
            "WHERE NOT EXISTS (SELECT 1 FROM granted g WHERE g.type = v.type AND g.key = v.key)"
        )
        params = (
            sa.bindparam("types", type_=texts), sa.bindparam("keys", type_=texts),
            sa.bindparam("node", type_=sa.Text()), sa.bindparam("ttl", type_=sa.Float()),
        )
        claim = sa.text(
            f"{claiming} SELECT type, key, epoch, true AS granted, previous_node_id AS node_id, "
            "NULL::text AS address FROM granted UNION ALL "
            f"SELECT o.type, o.key, o.epoch, false, o.node_id, n.address {refused}"
        ).bindparams(*params)
        # A thaw batch: the claim and the granted objects' checkpoints, in one round trip.
        # (Marking them active here made a single thaw's p99 ~2 ms longer: the status is an
        # indexed column, so the update of a large row was not a HOT one. The runtime queues
        # that hint to the group committer instead.)
        columns = ("rev", "journal_rev", "snapshot_rev", "state", "state_version", "status",
                   "metadata", "created_at", "updated_at")
        thaw = sa.text(
            f"{claiming} "
            "SELECT g.type, g.key, g.epoch, true AS granted, g.previous_node_id AS node_id, "
            f"NULL::text AS address, {', '.join('c.' + c for c in columns)} FROM granted g "
            f"LEFT JOIN {cp} c ON c.type = g.type AND c.key = g.key UNION ALL "
            f"SELECT o.type, o.key, o.epoch, false, o.node_id, n.address, "
            f"{', '.join('NULL' for _ in columns)} {refused}"
        ).bindparams(*params)
        load = sa.text(
            "SELECT c.type, c.key, c.rev, c.journal_rev, c.snapshot_rev, c.state, "
            "c.state_version, c.status, c.metadata, c.created_at, c.updated_at "
            f"FROM unnest(:types, :keys) AS v(type, key) JOIN {cp} c "
            "ON c.type = v.type AND c.key = v.key"
        ).bindparams(sa.bindparam("types", type_=texts), sa.bindparam("keys", type_=texts))
        load_alarms = sa.text(
            "SELECT a.type, a.key, a.name, a.due_at, a.scheduled_at, a.payload, a.every, "
            "a.cron, a.retry_count, a.status, a.last_error "
            f"FROM unnest(:types, :keys) AS v(type, key) JOIN {a} a "
            "ON a.type = v.type AND a.key = v.key ORDER BY a.type, a.key, a.name"
        ).bindparams(sa.bindparam("types", type_=texts), sa.bindparam("keys", type_=texts))
        self._claim_sql, self._claim_order = _positional(claim)
        self._thaw_sql, self._thaw_order = _positional(thaw)
        self._load_sql, self._load_order = _positional(load)
        self._alarms_sql, self._alarms_order = _positional(load_alarms)

    async def claim_many(
        self, idents: Sequence[Ident], node_id: str, ttl: float
    ) -> dict[Ident, Claim]:
        """Claim every object of the batch (see ``Storage.claim``): one statement."""
        idents = sorted(set(idents))  # (the statement also sends them in one lock order)
        rows = await self._run(self._claim_sql, self._claim_order, {
            "types": [i[0] for i in idents], "keys": [i[1] for i in idents],
            "node": node_id, "ttl": float(ttl),
        })
        claims = {(r["type"], r["key"]): _claim_of(r, node_id) for r in rows}
        for ident in idents:
            claims.setdefault(ident, Claim(False, 0))  # deleted meanwhile: ask again
        return claims

    async def thaw_many(
        self, idents: Sequence[Ident], node_id: str, ttl: float
    ) -> dict[Ident, Thawed]:
        """Claim the batch and read the granted objects' checkpoints: one statement."""
        idents = sorted(set(idents))
        rows = await self._run(self._thaw_sql, self._thaw_order, {
            "types": [i[0] for i in idents], "keys": [i[1] for i in idents],
            "node": node_id, "ttl": float(ttl),
        })
        thawed: dict[Ident, Thawed] = {}
        for r in rows:
            ident = (r["type"], r["key"])
            claim = _claim_of(r, node_id)
            found: Checkpoint | ValueError | None = None
            if claim.granted and r["rev"] is not None:
                try:
                    found = checkpoint_of(r, _json)
                except ValueError as exc:
                    found = exc
            thawed[ident] = (claim, found)
        for ident in idents:
            thawed.setdefault(ident, (Claim(False, 0), None))  # deleted meanwhile: ask again
        return thawed

    async def load_many(self, idents: Sequence[Ident]) -> dict[Ident, Checkpoint]:
        """The batch's checkpoints (``ValueError`` if a row's JSON cannot be read)."""
        rows = await self._run(self._load_sql, self._load_order, {
            "types": [i[0] for i in idents], "keys": [i[1] for i in idents],
        })
        return {(r["type"], r["key"]): checkpoint_of(r, _json) for r in rows}

    async def load_alarms_many(self, idents: Sequence[Ident]) -> dict[Ident, list[Alarm]]:
        """The batch's alarms, each object's by name."""
        rows = await self._run(self._alarms_sql, self._alarms_order, {
            "types": [i[0] for i in idents], "keys": [i[1] for i in idents],
        })
        found: dict[Ident, list[Alarm]] = {}
        for r in rows:
            found.setdefault((r["type"], r["key"]), []).append(alarm_of(r, _json))
        return found


def _claim_of(r: Any, node_id: str) -> Claim:
    """The claim a row of the claim statement reports."""
    if r["granted"]:
        return Claim(True, int(r["epoch"]), node_id, taken_from=r["node_id"])
    if r["node_id"] == node_id:  # taken from us just now (the row is older): ask again
        return Claim(False, int(r["epoch"]))
    return Claim(False, int(r["epoch"]), r["node_id"], r["address"])


def _json(value: Any) -> Any:
    return from_json(value) if isinstance(value, str | bytes) else value
