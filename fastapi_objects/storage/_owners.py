"""Nodes and ownership in SQL: registration, heartbeats, claims and releases.

Time is the database's: PostgreSQL's ``clock_timestamp()`` stamps heartbeats and decides who
is dead, so clocks of different machines never have to agree. SQLite serves the processes of
one machine, whose clock it is. Every statement here starts with a write (or is a plain
read), so SQLite takes its write lock first and a claim never decides on a stale read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic_core import to_json
from sqlalchemy.dialects import postgresql, sqlite

from ._rows import utc
from .base import DECLARED_DEAD, Claim, NodeInfo, NodeProcess

Ident = tuple[str, str]


class SQLOwners:
    """The statements over ``objects_nodes`` and ``objects_owners``, for one dialect."""

    def __init__(
        self, nodes: sa.Table, owners: sa.Table, checkpoints: sa.Table, *, postgres: bool
    ) -> None:
        self.nodes = nodes
        self.owners = owners
        self.checkpoints = checkpoints
        self.postgres = postgres
        self._insert = postgresql.insert if postgres else sqlite.insert
        dialect = postgresql.dialect() if postgres else sqlite.dialect()  # type: ignore[no-untyped-call]
        self._preparer = dialect.identifier_preparer

    def now(self) -> sa.ColumnElement[datetime]:
        """The database's clock (SQLite: this machine's, as a parameter)."""
        if self.postgres:
            return sa.func.clock_timestamp().cast(sa.DateTime(timezone=True))
        return sa.literal(datetime.now(UTC), sa.DateTime(timezone=True))

    def cutoff(self, ttl: float) -> sa.ColumnElement[datetime]:
        """Heartbeats older than this are dead nodes'."""
        if self.postgres:
            return self.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.cast(ttl, sa.Float()))
        return sa.literal(datetime.now(UTC) - timedelta(seconds=ttl), sa.DateTime(timezone=True))

    def register(
        self, conn: sa.Connection, node_id: str, address: str | None, region: str | None,
        machine: str | None, process: NodeProcess | None,
    ) -> None:
        """Insert or refresh a node's row."""
        now = self.now()
        values = {
            "address": address, "region": region, "machine": machine,
            "started_at": now, "heartbeat_at": now, **_process_columns(process),
        }
        stmt = self._insert(self.nodes).values(node_id=node_id, **values)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=[self.nodes.c.node_id], set_=values)
        )

    def heartbeat(self, conn: sa.Connection, node_id: str) -> bool:
        """Stamp the heartbeat; ``False`` when the node's row is gone or declared dead."""
        n = self.nodes
        result = conn.execute(
            sa.update(n)
            .where(n.c.node_id == node_id, n.c.heartbeat_at > DECLARED_DEAD)
            .values(heartbeat_at=self.now())
        )
        return result.rowcount == 1

    def declare_dead(self, conn: sa.Connection, node_id: str, process: NodeProcess) -> bool:
        """Set the heartbeat of a node proven dead to ``DECLARED_DEAD``, if it is that process."""
        n = self.nodes
        same = [n.c[name] == value for name, value in _process_columns(process).items()]
        result = conn.execute(
            sa.update(n).where(n.c.node_id == node_id, *same).values(heartbeat_at=DECLARED_DEAD)
        )
        return result.rowcount == 1

    def deregister(self, conn: sa.Connection, node_id: str) -> None:
        """Release what the node owns and remove it."""
        o, n = self.owners, self.nodes
        conn.execute(sa.update(o).where(o.c.node_id == node_id).values(node_id=None))
        conn.execute(sa.delete(n).where(n.c.node_id == node_id))

    def list(
        self, conn: sa.Connection, ttl: float, count_owned: bool = True
    ) -> list[NodeInfo]:
        """Every node, alive or not, with how many objects each owns (or 0: not counted)."""
        n, o = self.nodes, self.owners
        owned: sa.ColumnElement[int] = (
            sa.select(sa.func.count()).where(o.c.node_id == n.c.node_id).scalar_subquery()
            if count_owned else sa.literal(0)
        )
        alive = sa.case((n.c.heartbeat_at >= self.cutoff(ttl), True), else_=False)
        rows = (
            conn.execute(
                sa.select(n, alive.label("alive"), owned.label("owned")).order_by(n.c.node_id)
            )
        ).all()
        return [
            NodeInfo(
                node_id=r.node_id, address=r.address, region=r.region, machine=r.machine,
                started_at=utc(r.started_at), heartbeat_at=utc(r.heartbeat_at),
                alive=bool(r.alive), owned=int(r.owned), process=_process_of(r),
            )
            for r in rows
        ]

    def prune(self, conn: sa.Connection, dead_for: float) -> int:
        """Delete the rows of nodes dead for longer than ``dead_for`` seconds.

        And the owner rows of objects never committed that no registered node holds (their
        node crashed before releasing them): nothing else ever deletes them.
        """
        n, o, cp = self.nodes, self.owners, self.checkpoints
        result = conn.execute(sa.delete(n).where(n.c.heartbeat_at < self.cutoff(dead_for)))
        conn.execute(sa.delete(o).where(
            sa.or_(o.c.node_id.is_(None), ~sa.exists().where(n.c.node_id == o.c.node_id)),
            ~sa.exists().where(cp.c.type == o.c.type, cp.c.key == o.c.key),
        ))
        return int(result.rowcount)

    def claim(
        self, conn: sa.Connection, type: str, key: str, node_id: str, ttl: float
    ) -> Claim:
        """Own the object if it is free (see ``Storage.claim``); one upsert, then a read."""
        o, n = self.owners, self.nodes
        now = self.now()
        stmt = self._insert(o).values(
            type=type, key=key, node_id=node_id, epoch=1, claimed_at=now
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[o.c.type, o.c.key],
            # In SET, a column is its old value: who owned it until now.
            set_={"node_id": node_id, "epoch": o.c.epoch + 1, "claimed_at": now,
                  "previous_node_id": sa.case((o.c.node_id == node_id, None),
                                              else_=o.c.node_id)},
            where=sa.or_(o.c.node_id.is_(None), o.c.node_id == node_id, self._owner_dead(ttl)),
        ).returning(o.c.epoch, o.c.previous_node_id)
        granted = (conn.execute(upsert)).first()
        if granted is not None:
            return Claim(True, int(granted.epoch), node_id, taken_from=granted.previous_node_id)
        row = (
            conn.execute(
                sa.select(o.c.epoch, o.c.node_id, n.c.address)
                .select_from(o.outerjoin(n, n.c.node_id == o.c.node_id))
                .where(o.c.type == type, o.c.key == key)
            )
        ).first()
        if row is None:  # deleted meanwhile: the caller asks again
            return Claim(False, 0)
        return Claim(False, int(row.epoch), row.node_id, row.address)

    def claim_many(
        self, conn: sa.Connection, idents: Sequence[Ident], node_id: str, ttl: float
    ) -> dict[Ident, Claim]:
        """Claim many objects on SQLite: one upsert for the batch, one read of the refused ones.

        (PostgreSQL claims batches on the raw driver, in ``_thaw_pg.py``.)
        """
        assert not self.postgres, "PostgreSQL batch claims run in _thaw_pg.PostgresThaw"
        idents = sorted(set(idents))
        o, n = self.owners, self.nodes
        claims = {
            (r.type, r.key): Claim(True, int(r.epoch), node_id, taken_from=r.previous_node_id)
            for r in (conn.execute(self._claim_batch(idents, node_id, ttl))).all()
        }
        refused = [i for i in idents if i not in claims]
        if refused:
            rows = (
                conn.execute(
                    sa.select(o.c.type, o.c.key, o.c.epoch, o.c.node_id, n.c.address)
                    .select_from(o.outerjoin(n, n.c.node_id == o.c.node_id))
                    .where(sa.tuple_(o.c.type, o.c.key).in_(refused))
                )
            ).all()
            for r in rows:
                claims[(r.type, r.key)] = Claim(False, int(r.epoch), r.node_id, r.address)
            for ident in refused:
                claims.setdefault(ident, Claim(False, 0))  # deleted meanwhile: ask again
        return claims

    def _claim_batch(self, idents: Sequence[Ident], node_id: str, ttl: float) -> sa.TextClause:
        """The upsert of ``claim`` for a whole batch on SQLite, returning the granted rows.

        The rows come from ``json_each`` of one JSON array (one writer: no lock order).
        PostgreSQL claims batches on the raw driver instead (``_thaw_pg.py``).
        """
        prep = self._preparer
        owners, nodes = prep.format_table(self.owners), prep.format_table(self.nodes)
        moment = datetime.now(UTC)
        stamp = sa.DateTime(timezone=True)
        rows = ("SELECT json_extract(value, '$[0]') AS type, "
                "json_extract(value, '$[1]') AS key FROM json_each(:idents)")
        return sa.text(
            f"INSERT INTO {owners} (type, key, node_id, epoch, claimed_at) "
            # WHERE true: SQLite parses an upsert from a SELECT only with a WHERE.
            f"SELECT v.type, v.key, :node, 1, :now FROM ({rows}) AS v WHERE true "
            f"ON CONFLICT (type, key) DO UPDATE SET node_id = :node, "
            f"epoch = {owners}.epoch + 1, claimed_at = :now, "
            f"previous_node_id = NULLIF({owners}.node_id, :node) "
            f"WHERE {owners}.node_id IS NULL OR {owners}.node_id = :node OR NOT EXISTS "
            f"(SELECT 1 FROM {nodes} n WHERE n.node_id = {owners}.node_id AND "
            "n.heartbeat_at >= :cutoff) "
            "RETURNING type, key, epoch, previous_node_id"
        ).bindparams(
            sa.bindparam("node", node_id, type_=sa.Text()),
            sa.bindparam("idents", to_json(idents).decode(), type_=sa.Text()),
            sa.bindparam("now", moment, type_=stamp),
            sa.bindparam("cutoff", moment - timedelta(seconds=ttl), type_=stamp),
        )

    def _owner_dead(self, ttl: float) -> sa.TextClause:
        # Text, not sa.exists(): SQLAlchemy renders a subquery inside ON CONFLICT's WHERE
        # without the tables' schema (and uncorrelated), which breaks --schema deployments.
        prep = self._preparer
        nodes, owners = prep.format_table(self.nodes), prep.format_table(self.owners)
        params: list[sa.BindParameter[Any]]
        if self.postgres:
            cutoff = "clock_timestamp() - make_interval(secs => :ttl)"
            params = [sa.bindparam("ttl", ttl, type_=sa.Float())]
        else:
            cutoff = ":cutoff"
            moment = datetime.now(UTC) - timedelta(seconds=ttl)
            params = [sa.bindparam("cutoff", moment, type_=sa.DateTime(timezone=True))]
        return sa.text(
            f"NOT EXISTS (SELECT 1 FROM {nodes} n WHERE n.node_id = {owners}.node_id "
            f"AND n.heartbeat_at >= {cutoff})"
        ).bindparams(*params)

    def owners_of(self, conn: sa.Connection, idents: Sequence[Ident]) -> dict[Ident, str]:
        """The owning node of each object (released or unknown ones left out)."""
        if not idents:
            return {}
        o = self.owners
        rows = (
            conn.execute(
                sa.select(o.c.type, o.c.key, o.c.node_id).where(
                    sa.tuple_(o.c.type, o.c.key).in_([tuple(i) for i in idents]),
                    o.c.node_id.is_not(None),
                )
            )
        ).all()
        return {(r.type, r.key): r.node_id for r in rows}


def _process_columns(process: NodeProcess | None) -> dict[str, Any]:
    return {
        "boot_id": process and process.boot_id,
        "pid_namespace": process and process.pid_namespace,
        "pid": process and process.pid,
        "pid_started": process and process.started,
    }


def _process_of(row: Any) -> NodeProcess | None:
    if None in (row.boot_id, row.pid_namespace, row.pid, row.pid_started):
        return None
    return NodeProcess(row.boot_id, int(row.pid_namespace), int(row.pid), int(row.pid_started))
