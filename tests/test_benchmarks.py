"""Every benchmark starts from a fresh clone: each script runs ``--help`` in the project's venv.

A benchmark that imports a module the project does not install (``httpx`` instead of
``httpx2`` once) fails here, not on the day someone needs its figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("bench_*.py"))


def test_there_are_benchmarks() -> None:
    assert {"bench_core.py", "bench_sqlite.py", "bench_ladder.py", "bench_http.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_starts(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"],
        capture_output=True, text=True, timeout=120, cwd=BENCHMARKS,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize("module", ["_http_app", "_ws_fanout", "_common"])
def test_benchmark_helpers_import(module: str, tmp_path: Path) -> None:
    env = dict(os.environ, BENCH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
               BENCH_SCHEMA="", PYTHONPATH=str(BENCHMARKS))
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )
    assert done.returncode == 0, done.stderr
