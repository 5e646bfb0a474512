"""`objects history` and `objects restore` on real SQLite and PostgreSQL.

The app runs in a real uvicorn server (its own thread and loop) and owns the object; the
``restore`` command joins as a short-lived node and its turn runs on that owner.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastapi_objects.cli import app as cli
from tests._server import ServerFromSyncCode
from tests.test_cli_manage import app_module, cells, fails, migrated, run

LEAGUE = '''\
import os
from datetime import timedelta

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_objects import DurableObject, Objects


class Profile(BaseModel):
    score: int = 0


class Player(DurableObject[Profile]):
    history = timedelta(days=7)

    async def score_up(self) -> int:
        self.state.score += 1
        return self.state.score

    async def profile(self) -> dict:
        return self.state.model_dump()


class Plain(DurableObject[Profile]):
    async def score_up(self) -> int:
        self.state.score += 1
        return self.state.score


objects = Objects(objects=[Player, Plain], schema=os.environ.get("OBJECTS_SCHEMA"))
app = FastAPI(lifespan=objects.lifespan)
'''


@pytest.fixture(params=["sqlite", "postgres"])
def league(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, list[str]]]:
    """The app module ``league`` and the CLI options naming its database (tables migrated)."""
    app_module("league", LEAGUE, tmp_path, monkeypatch)
    _, _, options = migrated(request, tmp_path, monkeypatch)
    yield importlib.import_module("league"), options
    sys.modules.pop("league", None)


def test_history_lists_kept_states_and_restore_runs_on_the_owner(
    league: tuple[Any, list[str]],
) -> None:
    module, options = league
    served = ServerFromSyncCode(module.app)
    try:
        objects, player = module.objects, module.Player
        for _ in range(3):
            served.run(objects.get(player, "a").score_up())
        out = run("history", "player", "a", *options)
        assert [cells(out, rev)[0] for rev in ("3", "2", "1")] == ["3", "2", "1"]
        assert "objects restore player a --rev N" in out
        one = run("history", "player", "a", "--rev", "2", *options)
        assert "player:a at rev 2" in one and '"score": 2' in one

        out = run("restore", "player", "a", "--rev", "1", "--yes", "--app", "league:app")
        assert "restored player:a to rev 1: it is now at rev 4" in out
        assert "objects restore player a --rev 3" in out  # how to undo it
        # It ran on the owner: the app's live instance has the restored state.
        assert served.run(objects.get(player, "a").profile()) == {"score": 1}
        (entry,) = served.run(objects.journal(player, "a"))
        assert entry.kind == "objects:restore"
        assert entry.payload["by"].startswith("objects restore (")

        kept = served.run(objects.history(player, "a"))
        second = next(k for k in kept if k.rev == 2)
        at = second.at.replace(tzinfo=None).isoformat()  # no offset: UTC
        out = run("restore", "player", "a", "--at", at, "--yes", "--app", "league:app")
        assert "to rev 2: it is now at rev 5" in out
        assert served.run(objects.get(player, "a").profile()) == {"score": 2}

        # Asked first, unless --yes.
        asked = CliRunner().invoke(
            cli, ["restore", "player", "a", "--rev", "1", "--app", "league:app"], input="n\n"
        )
        assert asked.exit_code == 1 and "Restore player:a to its state at rev 1?" in asked.output
        assert served.run(objects.get(player, "a").profile()) == {"score": 2}

        served.run(objects.get(module.Plain, "p").score_up())
        assert "no kept states of plain:p" in run("history", "plain", "p", *options)
        assert "keeps no history" in fails(
            "restore", "plain", "p", "--rev", "1", "--yes", "--app", "league:app"
        )
    finally:
        served.stop()


def test_history_and_restore_refuse_what_they_cannot_do(league: tuple[Any, list[str]]) -> None:
    _, options = league
    assert "--rev N or --at TIME" in fails("restore", "player", "a", "--app", "league:app")
    assert "--rev N or --at TIME" in fails(
        "restore", "player", "a", "--rev", "1", "--at", "2026-01-01", "--app", "league:app"
    )
    assert "ISO 8601" in fails("restore", "player", "a", "--at", "yesterday", "--app", "x:y")
    assert "pass --app" in fails("restore", "player", "a", "--rev", "1", *options)
    assert "unknown object type 'nope'" in fails(
        "restore", "nope", "a", "--rev", "1", "--yes", "--app", "league:app"
    )
    assert "characters outside" in fails("history", "player", "a/b", *options)
    assert "unknown object type 'player'" in fails("history", "player", "a", *options)
