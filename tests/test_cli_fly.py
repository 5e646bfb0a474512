"""`objects init --fly`: the files it writes deploy the project as it stands.

There is no docker engine here, so each part is checked the way it will run: fly.toml parses
and checks the route the example app serves; the Dockerfile uses the repository's Python,
runs as a non-root user, and its install step, executed here with a ``pip`` that records what
it is asked to install, installs the project's own dependencies; its ENTRYPOINT, run here,
behaves like the example app's when no database is attached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_objects.cli import app as cli
from tests.test_fly import DOCKERFILE, FLY_TOML, _dockerfile, _exec_form

ROOT = Path(__file__).resolve().parent.parent

MAIN = 'from fastapi import FastAPI\n\napp = FastAPI()\n'
HEALTHZ = MAIN + '\n\n@app.get("/healthz")\nasync def healthz() -> dict[str, bool]:\n' \
    '    return {"ok": True}\n'


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A FastAPI project declared in pyproject.toml, as the current folder."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "Shop API"\nversion = "0.1.0"\n'
        'dependencies = ["fastapi>=0.115", "httpx"]\n'
    )
    (root / "app").mkdir()
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "main.py").write_text(MAIN)
    monkeypatch.chdir(root)
    for name in [n for n in os.environ if n.startswith("OBJECTS_")] + ["DATABASE_URL"]:
        monkeypatch.delenv(name, raising=False)
    return root


def init(*args: str) -> str:
    result = CliRunner().invoke(cli, ["init", "--fly", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_fly_toml_parses_and_checks_healthz(project: Path) -> None:
    (project / "app" / "main.py").write_text(HEALTHZ)
    out = init("--database-url", "postgres://shop@db.internal:5432/shop", "--schema", "objects")
    fly = tomllib.loads((project / "fly.toml").read_text())
    assert fly["app"] == "shop-api"
    assert fly["deploy"]["release_command"] == "objects migrate"
    assert fly["http_service"]["internal_port"] == 8080
    assert fly["env"]["OBJECTS_SCHEMA"] == "objects"
    (check,) = fly["http_service"]["checks"]
    assert (check["method"], check["path"]) == ("GET", "/healthz")
    # Two machines or more, one cluster: the settings of the repository's own fly.toml.
    example = tomllib.loads(FLY_TOML.read_text())
    assert check == example["http_service"]["checks"][0]
    assert fly["http_service"]["concurrency"] == example["http_service"]["concurrency"]
    for name in ("OBJECTS_INTERNAL_HOST", "OBJECTS_INTERNAL_PORT"):
        assert fly["env"][name] == example["env"][name]
    assert fly["kill_timeout"] == example["kill_timeout"]
    assert fly["http_service"]["min_machines_running"] == 2
    assert fly["deploy"]["strategy"] == "rolling"
    assert "fly secrets set OBJECTS_CLUSTER_SECRET=$(openssl rand -hex 32)" in (
        project / "fly.toml"
    ).read_text()
    assert ".env" in (project / ".dockerignore").read_text().splitlines()
    assert "/healthz" not in out  # the app serves it: no note
    steps = out[out.index("next:"):]
    for step in ("fly launch --no-deploy --copy-config", "fly postgres create --name shop-api-db",
                 "fly postgres attach shop-api-db",
                 "fly secrets set OBJECTS_CLUSTER_SECRET=$(openssl rand -hex 32)", "fly deploy"):
        assert step in steps, steps


def test_init_says_when_the_app_does_not_serve_the_health_check(project: Path) -> None:
    assert "fly.toml checks GET /healthz, which no module of your project names" in init()


def test_the_dockerfile_uses_the_repositorys_python_and_runs_as_non_root(project: Path) -> None:
    init()
    dockerfile = project / "Dockerfile"
    instructions = _dockerfile(dockerfile)
    assert instructions[0] == _dockerfile(DOCKERFILE)[0] == ("FROM", "python:3.11-slim")
    keywords = [keyword for keyword, _ in instructions]
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert "RUN" not in keywords[last_user:]  # nothing runs as root after it
    assert {"ENTRYPOINT", "CMD"} <= set(keywords[last_user:])
    cmd = _exec_form("CMD", dockerfile)
    assert cmd[:2] == ["uvicorn", "app.main:app"] and "--workers" not in cmd
    assert cmd[cmd.index("--port") + 1] == "8080"
    assert cmd[cmd.index("--timeout-graceful-shutdown") + 1] == "20"


def _install(project: Path, tmp_path: Path) -> list[str]:
    """Run the Dockerfile up to its ``pip install`` here; return what pip was asked for.

    WORKDIR and COPY are carried out into a folder standing for the image, and each RUN with
    ``sh`` there, ``pip`` being a stub that records its requirements (``-r`` files read).
    """
    image, stubs, record = tmp_path / "image", tmp_path / "bin", tmp_path / "asked.json"
    stubs.mkdir(parents=True)
    (stubs / "pip").write_text(
        f"#!{sys.executable}\nimport json, sys\nargs = sys.argv[1:]\nasked = []\n"
        "while args:\n    arg = args.pop(0)\n    if arg == '-r':\n"
        "        asked += [l.strip() for l in open(args.pop(0)) if l.strip()]\n"
        "    else:\n        asked.append(arg)\n"
        f"json.dump(asked, open({str(record)!r}, 'w'))\n"
    )
    (stubs / "pip").chmod(0o755)
    (stubs / "python").symlink_to(sys.executable)
    workdir = image
    for keyword, rest in _dockerfile(project / "Dockerfile"):
        if keyword == "WORKDIR":
            workdir = image / rest.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                if source == ".":
                    shutil.copytree(project, workdir, dirs_exist_ok=True)
                else:
                    shutil.copy(project / source, workdir)
        elif keyword == "RUN":
            env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}")
            done = subprocess.run(["sh", "-c", rest], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            if "pip install" in rest:
                assert not list(workdir.glob("dependencies.txt"))  # cleaned up
                return list(json.loads(record.read_text()))
    raise AssertionError("no pip install in the Dockerfile")


def test_the_install_step_installs_the_projects_dependencies(
    project: Path, tmp_path: Path
) -> None:
    # Seen: only fastapi-objects[postgres] was installed. And `pip install .` fails on a
    # typical app (setuptools: "Multiple top-level packages discovered in a flat-layout").
    init()
    asked = _install(project, tmp_path / "pyproject")
    assert asked == ["install", "fastapi>=0.115", "httpx", "fastapi-objects[postgres]"]
    (project / "requirements.txt").write_text("fastapi==0.115.0\nredis\n")
    assert "updated: Dockerfile" in init("--force")
    asked = _install(project, tmp_path / "requirements")
    assert asked == ["install", "fastapi==0.115.0", "redis", "fastapi-objects[postgres]"]


def test_a_project_without_listed_dependencies_is_told_so(project: Path, tmp_path: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.ruff]\nline-length = 100\n')
    out = init()
    assert "no requirements.txt or [project] dependencies found" in out
    assert _install(project, tmp_path) == ["install", "fastapi-objects[postgres]"]


def _entrypoint(argv: list[str], command: list[str], **env: str) -> tuple[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("OBJECTS_") and k != "DATABASE_URL"}
    done = subprocess.run([*argv, *command], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_the_entrypoint_behaves_like_the_examples(project: Path, tmp_path: Path) -> None:
    init()
    ours = _exec_form("ENTRYPOINT", project / "Dockerfile")
    example = _exec_form("ENTRYPOINT", DOCKERFILE)
    settings = [sys.executable, "-c", "from fastapi_objects import ObjectsSettings as S; "
                "s = S(); print(s.database_url, '|', s.database_url_source)"]
    # No database attached: the default SQLite, and a warning saying how to attach one.
    unattached = _entrypoint(ours, settings, HOME=str(tmp_path))
    assert unattached == _entrypoint(example, settings, HOME=str(tmp_path))
    out, err = unattached
    assert out.startswith("sqlite+aiosqlite:///./objects.db |")
    assert "no DATABASE_URL or OBJECTS_DATABASE_URL" in err and "fly postgres attach" in err
    # Attached: DATABASE_URL is the database, with nothing said.
    url = "postgres://app:pw@shop-db.flycast:5432/app?sslmode=disable"
    attached = _entrypoint(ours, settings, DATABASE_URL=url)
    assert attached == _entrypoint(example, settings, DATABASE_URL=url)
    assert attached == (
        "postgresql+asyncpg://app:pw@shop-db.flycast:5432/app?sslmode=disable | "
        "DATABASE_URL in the environment\n", ""
    )
