"""Each browser's session: a random id in a cookie, the key of its ``Cart`` and its names."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from starlette.requests import HTTPConnection

from fastapi_objects import Objects

SESSION_COOKIE = "objects_demo_session"


def _valid_session(value: str | None) -> str | None:
    if value is not None and re.fullmatch(r"[A-Za-z0-9_-]{16,64}", value):
        return value
    return None


def session_of(conn: HTTPConnection) -> str | None:
    """The session this browser already has (its cookie), or ``None``."""
    return _valid_session(conn.cookies.get(SESSION_COOKIE))


def session_id(conn: HTTPConnection) -> str:
    """The browser's session id: its cookie, or the one minted for this first request."""
    return session_of(conn) or str(conn.state.session_id)


async def session_cookie(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Give each browser a random session id (the key of its ``Cart``)."""
    if session_of(request):
        return await call_next(request)
    request.state.session_id = secrets.token_urlsafe(18)
    response = await call_next(request)
    response.set_cookie(
        SESSION_COOKIE, request.state.session_id, max_age=30 * 24 * 3600,
        httponly=True, samesite="lax", secure=request.url.scheme == "https",
    )
    return response


def runtime(conn: HTTPConnection) -> Objects:
    """The app's ``Objects``."""
    return conn.app.state.objects  # type: ignore[no-any-return]  # set by objects.lifespan


Runtime = Annotated[Objects, Depends(runtime)]
