"""The Fly.io deploy files, checked as far as they can be without Fly.

fly.toml parses and names a port and a health route the app really serves, and runs two
machines or more as one cluster (internal listener on the private network, signed); the
Dockerfile's ENTRYPOINT + CMD, run here outside a container, start the app and pass that
health check; the release command creates the tables, on SQLite and on PostgreSQL given as Fly
writes it; two "machines" started from the same files share one owner per object, show up in
``objects nodes`` and hand their objects over on a rolling restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from example_app.main import app
from example_app.objects import Counter
from fastapi_objects import Runtime
from fastapi_objects.settings import ObjectsSettings
from tests.test_example_app import ROOT, AppProcess, free_port, http, pg_database

__all__ = ["pg_database"]  # a fixture, imported for pytest

DOCKERFILE = ROOT / "Dockerfile"
FLY_TOML = ROOT / "fly.toml"
VENV_BIN = Path(sys.executable).parent


def _fly() -> dict[str, Any]:
    return tomllib.loads(FLY_TOML.read_text())


def _dockerfile(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def _exec_form(instruction: str, path: Path = DOCKERFILE) -> list[str]:
    values = [rest for keyword, rest in _dockerfile(path) if keyword == instruction]
    assert len(values) == 1, f"one {instruction} expected, found {values}"
    argv = json.loads(values[0])  # exec form: a JSON array, so signals reach uvicorn
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def _port_of(cmd: list[str]) -> int:
    return int(cmd[cmd.index("--port") + 1])


def _local(argv: list[str], port: int | None = None) -> list[str]:
    """A container command run here: console scripts from our venv, the port replaced."""
    argv = list(argv)
    if port is not None:
        argv[argv.index("--port") + 1] = str(port)
    if (VENV_BIN / argv[0]).exists():
        argv[0] = str(VENV_BIN / argv[0])
    return argv


def _container_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """What the machine sees: no OBJECTS_DATABASE_URL of ours, our venv first on PATH."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OBJECTS_")}
    base.pop("DATABASE_URL", None)
    return {**base, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "HOME": str(tmp_path), **env}


def _release(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = shlex.split(_fly()["deploy"]["release_command"])
    argv = _exec_form("ENTRYPOINT") + _local(command)
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


# -- static checks ---------------------------------------------------------------------------


def test_fly_toml_names_the_port_and_health_route_the_app_serves() -> None:
    fly = _fly()
    assert fly["app"] and fly["build"]["dockerfile"] == "Dockerfile"
    service = fly["http_service"]
    cmd = _exec_form("CMD")
    assert service["internal_port"] == _port_of(cmd) == 8080
    assert ("EXPOSE", "8080") in _dockerfile()
    (check,) = service["checks"]
    assert check["method"] == "GET"
    paths = set(app.openapi()["paths"])
    assert {check["path"], "/", "/counters/{key}", "/counters/{key}/increment"} <= paths
    release = shlex.split(fly["deploy"]["release_command"])
    assert release[:1] == ["alembic"] and release[-2:] == ["upgrade", "head"]
    assert (ROOT / release[release.index("-c") + 1]).is_file()
    text = FLY_TOML.read_text()
    assert "DATABASE_URL" in text and "ONE machine" not in text


def test_fly_toml_runs_two_machines_as_one_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fly = _fly()
    assert fly["http_service"]["min_machines_running"] == 2
    assert fly["deploy"]["strategy"] == "rolling"
    env = fly["env"]
    assert env["OBJECTS_INTERNAL_HOST"] == "fly-local-6pn"  # the machine's private address
    internal = int(env["OBJECTS_INTERNAL_PORT"])
    assert internal != fly["http_service"]["internal_port"]  # not the public service
    assert ("EXPOSE", str(internal)) not in _dockerfile()
    assert "fly secrets set OBJECTS_CLUSTER_SECRET=$(openssl rand -hex 32)" in FLY_TOML.read_text()
    # The shutdown uvicorn is given ends before Fly kills the machine.
    cmd = _exec_form("CMD")
    graceful = int(cmd[cmd.index("--timeout-graceful-shutdown") + 1])
    assert graceful + 5 <= int(fly["kill_timeout"].removesuffix("s"))
    # The names are real settings, and the secret is required, as the comment says.
    for name in [k for k in os.environ if k.startswith("OBJECTS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ObjectsSettings()
    assert (settings.internal_host, settings.internal_port) == ("fly-local-6pn", internal)
    with pytest.raises(ValueError, match=r"fly secrets set OBJECTS_CLUSTER_SECRET=\$\(openssl"):
        asyncio.run(_start(Runtime(objects=[Counter], database_url=f"sqlite:///{tmp_path}/x.db")))


async def _start(runtime: Runtime) -> None:
    async with runtime:
        pass


def test_dockerfile_installs_the_postgres_extra_and_runs_one_uvicorn() -> None:
    instructions = _dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert ("WORKDIR", "/app") in instructions
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert 'pip install ".[postgres]"' in runs
    for keyword, rest in instructions:
        if keyword == "COPY":
            *sources, _ = rest.split()
            assert all((ROOT / source).exists() for source in sources), rest
    cmd = _exec_form("CMD")
    assert cmd[:2] == ["uvicorn", "example_app.main:app"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert "--workers" not in cmd  # one process per machine: the internal port is fixed
    entrypoint = _exec_form("ENTRYPOINT")
    assert (ROOT / entrypoint[-1]).is_file()


# -- run here, outside a container -----------------------------------------------------------


def test_the_release_command_creates_the_tables_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "fly.db"
    done = _release(_container_env(tmp_path, DATABASE_URL=f"sqlite:///{db}"))
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"objects_checkpoints", "objects_journal", "objects_pubsub"} <= tables
    assert any((ROOT / "example_app/migrations/versions").glob(f"{version}_*.py"))
    again = _release(_container_env(tmp_path, DATABASE_URL=f"sqlite:///{db}"))
    assert again.returncode == 0, again.stderr  # each deploy runs it again: a no-op


def test_the_dockerfile_command_starts_the_app_and_passes_the_health_check(
    tmp_path: Path,
) -> None:
    db, port = tmp_path / "fly.db", free_port()
    argv = _exec_form("ENTRYPOINT") + _local(_exec_form("CMD"), port)
    env = _container_env(tmp_path, DATABASE_URL=f"sqlite:///{db}")  # as `fly postgres attach`
    server = AppProcess(argv, env, port, tmp_path / "out.log").start()
    try:
        check = _fly()["http_service"]["checks"][0]
        assert http(check["method"], server.url + check["path"]) == (200, {"ok": True})
        assert http("POST", server.url + "/counters/fly/increment?by=3") == (200, {"value": 3})
        assert db.exists()  # the app read DATABASE_URL
    finally:
        assert server.stop() == 0, server.output()


@pytest.mark.postgres
def test_release_then_serve_on_postgres_given_as_fly_writes_it(
    tmp_path: Path, pg_database: str
) -> None:
    # `fly postgres attach` sets exactly this shape: postgres://...?sslmode=disable
    fly_url = pg_database.replace("postgresql://", "postgres://", 1) + "?sslmode=disable"
    env = _container_env(tmp_path, DATABASE_URL=fly_url)
    done = _release(env)
    assert done.returncode == 0, done.stderr
    assert "Running upgrade" in done.stderr
    port = free_port()
    argv = _exec_form("ENTRYPOINT") + _local(_exec_form("CMD"), port)
    server = AppProcess(argv, env, port, tmp_path / "out.log").start()
    try:
        assert http("POST", server.url + "/counters/pg/increment?by=2") == (200, {"value": 2})
    finally:
        assert server.stop() == 0, server.output()
    server = AppProcess(argv, env, port, tmp_path / "again.log").start()  # a redeploy
    try:
        assert http("GET", server.url + "/counters/pg") == (200, {"value": 2})
    finally:
        assert server.stop() == 0, server.output()


@pytest.mark.postgres
def test_two_machines_share_one_owner_list_as_nodes_and_hand_over_on_a_rolling_restart(
    tmp_path: Path, pg_database: str
) -> None:
    fly = _fly()
    fly_url = pg_database.replace("postgresql://", "postgres://", 1) + "?sslmode=disable"
    secrets = {"OBJECTS_CLUSTER_SECRET": os.urandom(32).hex()}  # `fly secrets set` does this
    env = _container_env(tmp_path, DATABASE_URL=fly_url, **secrets)
    assert _release(env).returncode == 0
    machines: dict[str, AppProcess] = {}
    try:
        for name in ("m1", "m2"):
            port = free_port()
            machine_env = {
                **env, **fly["env"], "FLY_MACHINE_ID": name, "FLY_REGION": "iad",
                # fly-local-6pn exists only on Fly: here a name the listener resolves too, and
                # a port of its own (two "machines" share this host).
                "OBJECTS_INTERNAL_HOST": "localhost", "OBJECTS_INTERNAL_PORT": str(free_port()),
            }
            argv = _exec_form("ENTRYPOINT") + _local(_exec_form("CMD"), port)
            machines[name] = AppProcess(argv, machine_env, port, tmp_path / f"{name}.log")
            machines[name].start()
        m1, m2 = machines["m1"].url, machines["m2"].url
        assert http("POST", m1 + "/counters/fly/increment?by=1") == (200, {"value": 1})
        assert http("POST", m2 + "/counters/fly/increment?by=1") == (200, {"value": 2})

        # `fly ssh console -C "objects nodes"`: the machine's DATABASE_URL names the database
        nodes = _objects_nodes(env)
        for name, owned in [("m1", "1"), ("m2", "0")]:
            row = _node_row(nodes, name)
            internal = machines[name].env["OBJECTS_INTERNAL_PORT"]
            assert row[1].endswith(f":{internal}") and row[2:4] == ["iad", name]
            assert row[6:] == ["alive", owned], nodes

        # A rolling deploy stops m1 as Fly does (SIGINT): it hands the counter over at once,
        # not after node_ttl (10 s), and leaves the nodes' table.
        assert machines["m1"].stop() == 0, machines["m1"].output()
        started = time.monotonic()
        assert http("POST", m2 + "/counters/fly/increment?by=1") == (200, {"value": 3})
        assert time.monotonic() - started < 5
        nodes = _objects_nodes(env)
        assert "m1-" not in nodes and _node_row(nodes, "m2")[6:] == ["alive", "1"]
    finally:
        for machine in machines.values():
            assert machine.stop() == 0, machine.output()


def _node_row(nodes: str, machine: str) -> list[str]:
    """The row of the node running on ``machine`` (its id is the machine's, plus a suffix)."""
    for line in nodes.splitlines():
        row = [c.strip() for c in line.strip("│┃ ").split("│")]
        if row[0].startswith(machine + "-"):
            return row
    raise AssertionError(f"no node on {machine!r} in:\n{nodes}")


def _objects_nodes(env: dict[str, str]) -> str:
    argv = _local(["objects", "nodes"])
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout
