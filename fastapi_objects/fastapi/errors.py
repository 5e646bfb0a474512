"""How ``ObjectsError``s become HTTP responses: a status and ``{"error": {"type", "message"}}``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._exceptions import (
    CallTimeout,
    ConflictError,
    ConnectionRejected,
    InvalidCall,
    InvalidKey,
    InvalidQuery,
    ObjectNotFound,
    ObjectsError,
    Overloaded,
    StorageUnavailable,
)

# Most specific first: the first matching class decides the status.
_STATUS: list[tuple[type[ObjectsError], int]] = [
    (InvalidKey, 400),
    (InvalidQuery, 400),
    (ObjectNotFound, 404),
    (InvalidCall, 422),
    (ConflictError, 409),
    (CallTimeout, 504),
    (Overloaded, 503),
    (StorageUnavailable, 503),
    (ConnectionRejected, 403),
]


def status_for(exc: ObjectsError) -> int:
    """The HTTP status for an error (500 only for server-side faults such as corrupt state)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: ObjectsError) -> dict[str, Any]:
    """The JSON body (and websocket error payload) describing ``exc``."""
    return {"type": exc.type, "message": exc.message}


async def objects_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for ``ObjectsError``."""
    assert isinstance(exc, ObjectsError)
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    elif isinstance(exc, StorageUnavailable):
        headers["Retry-After"] = "1"
    return JSONResponse({"error": error_body(exc)}, status_code=status_for(exc), headers=headers)
