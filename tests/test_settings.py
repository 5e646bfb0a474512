"""Options come from arguments, then the environment, then the project's .env (ObjectsSettings).

The end-to-end test is the sequence a new user runs from the README: ``objects init --database
postgres``, ``objects migrate``, ``uvicorn app.main:app`` with ``Objects(objects=[Counter])``:
the rows must land in that PostgreSQL database and no ``objects.db`` may appear.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from fastapi_objects import Runtime
from fastapi_objects.settings import ObjectsSettings, Options
from fastapi_objects.storage.urls import redact

BIN = Path(sys.executable).parent

README_OBJECTS = '''\
from pydantic import BaseModel
from fastapi_objects import DurableObject, client_callable, readonly

class CounterState(BaseModel):
    value: int = 0

class Counter(DurableObject[CounterState]):
    idle_timeout = 30.0
    public = True

    @client_callable
    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        self.broadcast("changed", {"value": self.state.value})
        return self.state.value

    @readonly
    async def get(self) -> int:
        return self.state.value

    async def reset(self) -> None:
        self.state.value = 0
'''

README_MAIN = '''\
from typing import Annotated
from fastapi import Depends, FastAPI
from fastapi_objects import Handle, Objects, get_object
from app.objects import Counter

objects = Objects(objects=[Counter])
app = FastAPI(lifespan=objects.lifespan)
app.include_router(objects.router)

@app.post("/counters/{key}/increment")
async def increment(counter: Annotated[Handle[Counter], Depends(get_object(Counter))], by: int = 1):
    return {"value": await counter.increment(by)}
'''


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty project folder as the current directory, with none of our variables."""
    ours = ("FLY_MACHINE_ID", "FLY_REGION", "DATABASE_URL")
    for name in list(os.environ):
        if name.startswith("OBJECTS_") or name in ours:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_arguments_then_environment_then_dotenv_then_default(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ObjectsSettings().database_url == "sqlite+aiosqlite:///./objects.db"
    (clean_env / ".env").write_text(
        "OTHER_APP_SETTING=ignored\nOBJECTS_DATABASE_URL=sqlite:///from-dotenv.db\n"
        "OBJECTS_SCHEMA=dotenv_schema\nOBJECTS_NODE_TTL=4\n"
    )
    settings = ObjectsSettings()
    assert settings.database_url == "sqlite+aiosqlite:///from-dotenv.db"  # normalized
    assert settings.db_schema == "dotenv_schema"
    assert settings.node_ttl == 4.0
    monkeypatch.setenv("OBJECTS_DATABASE_URL", "postgres://u:secret@h/env")
    assert ObjectsSettings().database_url == "postgresql+asyncpg://u:secret@h/env"
    runtime = Runtime(database_url="memory://", schema="arg_schema")
    assert runtime.database_url == "memory://"
    assert runtime.settings.db_schema == "arg_schema"
    assert runtime.settings.node_ttl == 4.0  # the .env still fills what no one else set
    monkeypatch.setenv("FLY_MACHINE_ID", "e286de4f711e86")
    first, second = Runtime(database_url="memory://"), Runtime(database_url="memory://")
    assert first.settings.machine == "e286de4f711e86"
    assert first.node_id != second.node_id  # two workers on one machine are two nodes


def test_only_prefixed_and_fly_variables_count(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SCHEMA", "DB_SCHEMA", "NODE_ID", "REGION", "MACHINE"):
        monkeypatch.setenv(name, "oops")  # other tools' variables are not ours
    settings = ObjectsSettings()
    assert settings.db_schema is None and settings.node_id is None
    assert settings.region is None and settings.machine is None
    monkeypatch.setenv("FLY_REGION", "ams")
    monkeypatch.setenv("FLY_MACHINE_ID", "m1")
    settings = ObjectsSettings()
    assert (settings.region, settings.machine, settings.node_id) == ("ams", "m1", None)
    assert ObjectsSettings(node_id="n", region="iad").node_id == "n"


def test_database_url_is_read_when_objects_database_url_is_unset(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `fly postgres attach`, Heroku and most hosts set; the source is named at start.
    assert ObjectsSettings().database_url_source.startswith("the default")
    (clean_env / ".env").write_text("DATABASE_URL=sqlite:///dotenv-host.db\n")
    settings = ObjectsSettings()
    assert settings.database_url == "sqlite+aiosqlite:///dotenv-host.db"
    assert settings.database_url_source == "DATABASE_URL in .env"
    monkeypatch.setenv("DATABASE_URL", "postgres://u:pw@db.flycast:5432/app?sslmode=disable")
    settings = ObjectsSettings()
    assert settings.database_url == "postgresql+asyncpg://u:pw@db.flycast:5432/app?sslmode=disable"
    assert settings.database_url_source == "DATABASE_URL in the environment"
    # OBJECTS_DATABASE_URL wins wherever it is, even in .env over DATABASE_URL in the environment.
    (clean_env / ".env").write_text("OBJECTS_DATABASE_URL=sqlite:///ours.db\n")
    settings = ObjectsSettings()
    assert (settings.database_url, settings.database_url_source) == (
        "sqlite+aiosqlite:///ours.db", "OBJECTS_DATABASE_URL in .env"
    )
    monkeypatch.setenv("OBJECTS_DATABASE_URL", "sqlite:///env.db")
    assert ObjectsSettings().database_url_source == "OBJECTS_DATABASE_URL in the environment"
    assert ObjectsSettings(database_url="memory://").database_url_source == (
        "the database_url argument"
    )
    # Another tool's database is refused by name, not used and not silently ignored.
    monkeypatch.delenv("OBJECTS_DATABASE_URL")
    (clean_env / ".env").unlink()
    monkeypatch.setenv("DATABASE_URL", "mysql://app:hunter2@db/app")
    with pytest.raises(ValueError) as refused:
        ObjectsSettings()
    message = str(refused.value)
    assert "DATABASE_URL in the environment, read because OBJECTS_DATABASE_URL is not set" in (
        message
    )
    assert "'mysql'" in message and "hunter2" not in message


def test_bad_values_are_clear_errors(clean_env: Path) -> None:
    with pytest.raises(ValueError, match="node_ttl"):
        ObjectsSettings(node_ttl=-1)
    with pytest.raises(ValueError, match="malformed database URL"):
        ObjectsSettings(database_url="objects.db")
    with pytest.raises(TypeError, match="not both"):
        Runtime(settings=ObjectsSettings(), database_url="memory://")


def test_options_name_every_setting() -> None:
    # Options is the typed **kwargs of Runtime/Objects: it must offer every field.
    fields = set(ObjectsSettings.model_fields) - {"database_url", "db_schema"} | {"schema"}
    assert set(Options.__annotations__) == fields


def test_redact_hides_passwords() -> None:
    assert redact("postgresql+asyncpg://u:secret@h:5432/db") == "postgresql+asyncpg://u:***@h:5432/db"
    assert redact("redis://:secret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("memory://node") == "memory://node"


async def test_runtime_names_its_storage_when_it_starts(
    clean_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="fastapi_objects")
    async with Runtime(database_url="sqlite+aiosqlite:///./x.db") as runtime:
        pass
    line = next(r.getMessage() for r in caplog.records if "storage" in r.getMessage())
    assert "sqlite+aiosqlite:///./x.db" in line and runtime.node_id in line
    assert f"(pid {os.getpid()}," in line and "(the database_url argument)" in line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def fresh_database(pg_url: str) -> AsyncIterator[str]:
    """A new PostgreSQL database (the README's sequence uses no schema), dropped afterwards."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = pg_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


@pytest.mark.postgres
async def test_the_readme_sequence_uses_the_database_init_set_up(
    tmp_path: Path, fresh_database: str
) -> None:
    import asyncpg

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "shop"\nversion = "0.1.0"\n')
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "objects.py").write_text(README_OBJECTS)
    (tmp_path / "app" / "main.py").write_text(README_MAIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJECTS_")}
    env["DATABASE_URL"] = fresh_database  # as a platform (Fly, Heroku) sets it

    def objects_cli(*args: str) -> str:
        done = subprocess.run(
            [str(BIN / "objects"), *args], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    objects_cli("init", "--database", "postgres")
    objects_cli("migrate")
    del env["DATABASE_URL"]  # the app must find it in .env, as the README promises
    port = _free_port()
    server = await asyncio.create_subprocess_exec(
        str(BIN / "uvicorn"), "app.main:app", "--port", str(port),
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            async with asyncio.timeout(30):
                while True:
                    try:
                        await client.get("/openapi.json")
                        break
                    except httpx2.TransportError:
                        await asyncio.sleep(0.1)
            for by in (1, 2, 3):
                response = await client.post("/counters/readme/increment", params={"by": by})
                assert response.status_code == 200, response.text
            assert response.json() == {"value": 6}
    finally:
        server.terminate()
        _, err = await asyncio.wait_for(server.communicate(), 30)
    log = err.decode(errors="replace")
    assert not (tmp_path / "objects.db").exists(), log
    name = fresh_database.rsplit("/", 1)[1]
    storage_lines = [line for line in log.splitlines() if "storage postgresql" in line]
    assert storage_lines and name in storage_lines[0], log
    conn = await asyncpg.connect(fresh_database)
    try:
        row = await conn.fetchrow(
            "SELECT state FROM objects_checkpoints WHERE type = 'counter' AND key = 'readme'"
        )
    finally:
        await conn.close()
    assert row is not None and '"value": 6' in row["state"], row
