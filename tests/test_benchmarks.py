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
SCRIPTS = [*sorted(p.name for p in BENCHMARKS.glob("bench_*.py")), "report.py"]


def test_there_are_benchmarks() -> None:
    assert {"bench_core.py", "bench_sqlite.py", "bench_ladder.py", "bench_http.py",
            "report.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_starts(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"],
        capture_output=True, text=True, timeout=120, cwd=BENCHMARKS,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize("module", ["_http_app", "_ws_fanout", "_common", "_bare_fanout_app"])
def test_benchmark_helpers_import(module: str, tmp_path: Path) -> None:
    env = dict(os.environ, BENCH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
               BENCH_SCHEMA="", PYTHONPATH=str(BENCHMARKS))
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )
    assert done.returncode == 0, done.stderr


def test_the_report_draws_its_plots_and_page(tmp_path: Path) -> None:
    """report.py's plots and page from figures made up here (the measuring needs PostgreSQL)."""
    script = f"""
import random, sys
from pathlib import Path
sys.path.insert(0, {str(BENCHMARKS)!r})
import matplotlib
matplotlib.use("Agg")
from _common import Run
from bench_cluster import Failover
import report

out = Path({str(tmp_path)!r})
rnd = random.Random(1)
results = report.Results(meta="made up", callers=[1, 8, 64])
results.runs = {{
    name: {{n: Run(n * 100 * k, 1.0, [rnd.randrange(10**5, 10**7) for _ in range(500)])
            for n in results.callers}}
    for k, name in enumerate(report.SERIES, start=1)
}}
answered = [(node, t / 100, t / 100 + 0.01) for t in range(-100, 0) for node in ("n1", "n2")]
answered += [("n2", t / 100, t / 100 + 0.01) for t in range(20, 200)]
results.failover = Failover(0.0, answered, [("n1", 0.05, "ConnectError")], 1.0,
                            "node n2 takes over ... (proven by this node)")
results.ttl = 10.0
report.plot_throughput(results, out)
report.plot_latency(results, out)
report.plot_failover(results, out)
report.write_page(results, out / "benchmarks.md")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "benchmarks.md").read_text()
    for name in ("throughput", "latency", "failover"):
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(benchmarks/{name}.png)" in page
    assert "first call sent after the kill was answered 0.21 s after it" in page
