"""The wheel is complete: built from this tree, installed in a fresh venv, ``objects init`` works.

The other CLI tests run through the editable install, which reads ``templates/`` from the
source tree: they would pass with the templates missing from the wheel. This one builds the
wheel with pip (hatchling, as ``pip install fastapi-objects`` would), installs it without its
dependencies in a new virtual environment that borrows them from the test's own (a ``.pth``
line naming its site-packages, whose editable install of this tree is not read), and runs the
installed ``objects`` from a project folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"

pytestmark = pytest.mark.wheel


def _run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, ROOT, cwd=out)
    (built,) = out.glob("fastapi_objects-*.whl")
    return built


def test_the_wheel_carries_the_templates(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for path in TEMPLATES.rglob("*"):
        if path.is_file():
            assert f"fastapi_objects/templates/{path.relative_to(TEMPLATES).as_posix()}" in names
    assert not any(name.startswith("templates/") for name in names)


def test_the_wheel_carries_the_inspectors_page(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    package = ROOT / "fastapi_objects"
    assets = [p for p in (package / "fastapi" / "inspector").rglob("*")
              if p.is_file() and p.suffix in (".html", ".js", ".css")]
    assert len(assets) >= 10
    for path in [*assets, package / "fastapi" / "static" / "objects.js"]:
        assert f"fastapi_objects/{path.relative_to(package).as_posix()}" in names, path


def _installed(wheel: Path, tmp_path: Path) -> tuple[Path, str]:
    """A fresh venv with the wheel installed (its dependencies borrowed): its python, site."""
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet",
         wheel, cwd=tmp_path)
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                cwd=tmp_path).strip()
    # The dependencies, from the test's environment; its .pth files (the editable install
    # that points at this tree) are not processed from a plain path line.
    (Path(site) / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site


def test_objects_init_and_migrate_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    python, site = _installed(wheel, tmp_path)
    venv = python.parent.parent
    project = tmp_path / "shop"
    (project / "app").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "shop"\nversion = "0"\ndependencies = ["fastapi"]\n'
    )
    (project / "app" / "__init__.py").write_text("")
    (project / "app" / "main.py").write_text("from fastapi import FastAPI\n\napp = FastAPI()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJECTS_")}
    env.pop("DATABASE_URL", None)
    env.pop("PYTHONPATH", None)

    where = _run(python, "-c", "import fastapi_objects; print(fastapi_objects.__file__)",
                 cwd=project, env=env)
    assert where.startswith(site), where  # the wheel's copy, not this tree

    out = _run(venv / "bin" / "objects", "init", "--fly", cwd=project, env=env)
    assert "created: migrations/env.py" in out and "created: fly.toml" in out
    rendered = (project / "migrations" / "env.py").read_text()
    assert rendered == (TEMPLATES / "alembic_async" / "env.py").read_text()
    assert 'app = "shop"' in (project / "fly.toml").read_text()

    out = _run(venv / "bin" / "objects", "migrate", cwd=project, env=env)
    assert "database: sqlite+aiosqlite:///./objects.db" in out
    assert "upgraded to head" in out and (project / "objects.db").is_file()


USER_CODE = """
from pydantic import BaseModel
from fastapi_objects import DurableObject, Handle, Runtime


class CounterState(BaseModel):
    value: int = 0


class Counter(DurableObject[CounterState]):
    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value


async def use(rt: Runtime) -> None:
    counter: Handle[Counter] = rt.get(Counter, "k")
    await counter.increment("many")
    name: str = await counter.increment()
"""


def test_an_installed_wheel_gives_mypy_its_types(wheel: Path, tmp_path: Path) -> None:
    """The README promises that mypy checks a handle's calls: an installed package (not this
    tree) must say it is typed (``py.typed``), or mypy skips it and passes anything."""
    with zipfile.ZipFile(wheel) as archive:
        assert "fastapi_objects/py.typed" in archive.namelist()
    python, _ = _installed(wheel, tmp_path)
    project = tmp_path / "user"
    project.mkdir()
    (project / "use.py").write_text(USER_CODE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--python-executable", str(python),
         "use.py"], cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    out = done.stdout + done.stderr
    assert "missing library stubs or py.typed" not in out, out
    assert 'Argument 1 to "increment" of "Counter" has incompatible type "str"' in out, out
    assert 'Incompatible types in assignment (expression has type "int"' in out, out
