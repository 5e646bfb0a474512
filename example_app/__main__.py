"""``python -m example_app``: serve the example app with uvicorn.

``HOST`` and ``PORT`` choose the address (default 127.0.0.1:8000); ``OBJECTS_DATABASE_URL``
the database (default ``sqlite+aiosqlite:///./objects.db``, whose tables the app creates on
start). On PostgreSQL the tables come from the app's Alembic migration, run here first, as
Fly.io's release command does.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import uvicorn
from alembic import command
from alembic.config import Config

from fastapi_objects.storage import DEFAULT_DATABASE_URL, normalize_url

HERE = Path(__file__).parent


def _shown(url: str) -> str:
    scheme, _, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return f"{scheme}://{rest}"


def _check_free(host: str, port: int) -> None:
    """Exit with a clear line when the address is taken (before printing it as served)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            sys.exit(f"example app: cannot listen on {host}:{port} ({exc.strerror}): "
                     "choose another port with PORT=8001")


def main() -> None:
    host = os.environ.get("HOST") or "127.0.0.1"
    port = int(os.environ.get("PORT") or "8000")
    _check_free(host, port)
    url = normalize_url(os.environ.get("OBJECTS_DATABASE_URL") or DEFAULT_DATABASE_URL)
    if url.startswith("postgresql"):
        print("migrating: alembic upgrade head (example_app/alembic.ini)", flush=True)
        command.upgrade(Config(str(HERE / "alembic.ini")), "head")
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"example app: http://{shown_host}:{port}/  (database: {_shown(url)})", flush=True)
    print("stop it with Ctrl+C", flush=True)
    import gc

    import example_app.main  # noqa: F401  # imported now, so that what it made is frozen

    # The app's start-up objects (modules, classes, routes) leave the cyclic GC's scans: a
    # durable route keeps requests alive across their commits, and each full collection
    # would walk them all (README, "Running in production").
    gc.freeze()
    uvicorn.run("example_app.main:app", host=host, port=port, log_level="info")


if __name__ == "__main__":
    main()
