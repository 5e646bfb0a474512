"""`objects nodes`, and the owner that `objects ls` / `objects show` name, with live nodes.

Two real runtimes (each a node with its internal listener) serve objects from a SQLite file or
a PostgreSQL schema while the ``objects`` command reads the database (in a thread beside them,
and once as a process of its own, as an operator runs it). A third node row whose heartbeat
stopped is the dead node.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from typer.testing import CliRunner

from fastapi_objects import DurableObject, Runtime
from fastapi_objects.cli import app as cli
from fastapi_objects.storage import NodeProcess, open_storage, storage_metadata
from tests.test_cli_manage import cells

# The nodes' node_ttl: heartbeats every 1.7 s, a lease of 4 s. (1.5 s, a lease of 1.2 s, ran
# out under a loaded machine's stalls: the node dropped its objects in the middle of the test.)
TTL = 5.0
SMILE = "a:smile:2"  # a key, printed as it is (not as an emoji)


class TallyState(BaseModel):
    value: int = 0


class Tally(DurableObject[TallyState]):
    async def add(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value


class Database:
    """Where the nodes meet: a URL, a schema, and the CLI options and environment naming them."""

    def __init__(self, url: str, schema: str | None) -> None:
        self.url = url
        self.schema = schema
        self.options = ["--database-url", url] + (["--schema", schema] if schema else [])

    def runtime(self, node_id: str, **options: object) -> Runtime:
        return Runtime(
            objects=[Tally], database_url=self.url, schema=self.schema, node_id=node_id,
            node_ttl=TTL, **options,  # type: ignore[arg-type]
        )

    async def objects(self, *args: str) -> str:
        """Run ``objects ARGS`` and the database options, beside the running nodes; stdout."""
        result = await asyncio.to_thread(CliRunner().invoke, cli, [*args, *self.options])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout

    async def objects_process(self, *args: str, env: dict[str, str]) -> str:
        """The same as a process of its own, as an operator runs it, with ``env`` added."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("OBJECTS_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fastapi_objects.cli", *args, *self.options,
            env={**base, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()


@pytest.fixture(params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Database]:
    """A migrated database (no .env around, no OBJECTS_* of ours)."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("OBJECTS_")]:
        monkeypatch.delenv(name)
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'objects.db'}", None)
    else:
        db = Database(request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema"))
    result = CliRunner().invoke(cli, ["migrate", *db.options])
    assert result.exit_code == 0, result.output
    yield db


async def test_nodes_alive_dead_and_owned_and_the_owner_of_each_object(
    database: Database,
) -> None:
    async with database.runtime("gone") as gone:  # served, then stopped: releases "old"
        assert await gone.get(Tally, "old").add() == 1
    storage = open_storage(database.url, schema=database.schema)
    try:
        # An IPv6 address as on Fly (brackets), printed whole: not taken for rich markup.
        await storage.register_node("ghost", "http://[fdaa:0:1::9]:8081", "ams", None)
        assert (await storage.claim("tally", "haunted", "ghost", TTL)).granted
        async with (
            database.runtime("alpha", region="iad", machine="m-alpha") as alpha,
            database.runtime("beta") as beta,
        ):
            assert [await alpha.get(Tally, k).add() for k in ("a1", SMILE)] == [1, 1]
            assert await beta.get(Tally, "b1").add() == 1
            assert await beta.get(Tally, "a1").add() == 2  # forwarded: alpha still owns it
            # A node proven dead by another node of its machine (after the nodes started:
            # a starting node prunes it, as it prunes every node dead for a day).
            corpse = NodeProcess("a-boot-id", 1, 99999999, 7)
            await storage.register_node("corpse", None, None, None, corpse)
            assert await storage.declare_dead("corpse", corpse)
            await asyncio.sleep(TTL + 0.3)  # the ghost never heartbeats: dead by now

            # The ttl by default is the settings' node_ttl, read as the app reads it.
            out = await database.objects_process("nodes", env={"OBJECTS_NODE_TTL": str(TTL)})
            assert out.splitlines()[0].startswith("database: ")
            first = cells(out, "alpha")
            assert first[1] == alpha._host.routing.node.address and first[1].startswith("http://")
            assert first[2:5] == ["iad", "m-alpha", str(os.getpid())]
            assert float(first[5]) < TTL and first[6:] == ["alive", "2"]
            assert cells(out, "beta")[2:4] == ["-", "-"]
            assert cells(out, "beta")[6:] == ["alive", "1"]
            ghost = cells(out, "ghost")
            assert ghost[1:5] == ["http://[fdaa:0:1::9]:8081", "ams", "-", "-"]
            assert float(ghost[5]) > TTL and ghost[6:] == ["dead", "1"]
            # No heartbeat age to show for the node proven dead.
            assert cells(out, "corpse")[4:] == ["99999999", "-", "dead (proven)", "0"]
            assert "gone" not in out  # a node that stopped deregistered
            assert f"2 alive, 2 dead (dead: no heartbeat for {TTL:g} s, or proven dead" in out

            out = await database.objects("nodes", "--ttl", "3600")
            assert cells(out, "ghost")[6] == "alive"  # --ttl wins

            listing = await database.objects("ls", "tally")
            owners = {key: cells(listing, key)[2] for key in ("a1", SMILE, "b1", "old")}
            assert owners == {"a1": "alpha", SMILE: "alpha", "b1": "beta", "old": "-"}
            assert cells(listing, "a1")[1] == "active"
            shown = await database.objects("show", "tally", "a1")
            assert "owner" in shown and _field(shown, "owner") == "alpha"
            old = await database.objects("show", "tally", "old")
            assert _field(old, "owner") == "-" and _field(old, "status") == "hibernated"
    finally:
        await storage.close()
    # Both stopped: their objects are released and their rows gone; the ghost stays.
    out = await database.objects("nodes", "--ttl", "3600")
    assert "alpha" not in out and "beta" not in out and cells(out, "ghost")[7] == "1"
    listing = await database.objects("ls", "tally")
    assert {cells(listing, key)[2] for key in ("a1", SMILE, "b1", "old")} == {"-"}


def _field(output: str, name: str) -> str:
    """The value of a ``name  value`` line of ``objects show``."""
    for line in output.splitlines():
        if line.startswith(name + "  "):
            return line.split()[-1]
    raise AssertionError(f"no {name!r} line in:\n{output}")


def test_no_nodes(database: Database) -> None:
    result = CliRunner().invoke(cli, ["nodes", *database.options])
    assert result.exit_code == 0, result.output
    assert "no nodes registered: no app is running on this database" in result.stdout


def test_a_database_without_version_2(tmp_path: Path) -> None:
    old = tmp_path / "v1.db"  # migrated by an older release: version 1 only
    engine = sa.create_engine(f"sqlite:///{old}")
    storage_metadata(version=1).create_all(engine)
    engine.dispose()
    # Every listing needs the owners (version 2): an object a node holds is listed active.
    for command in (["nodes"], ["ls", "tally"], ["show", "tally", "a"], ["stats"]):
        result = CliRunner().invoke(cli, [*command, "--database-url", f"sqlite:///{old}"])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error: storage version 2 is not migrated in sqlite")
        assert "run `objects migrate`" in result.stderr
