"""How errors become HTTP responses and websocket error frames: ``{"type", "message"}``.

An ``ObjectsError`` keeps its own ``type`` and message and gets its HTTP status here. Anything
else came from a bug (the app's or ours): the client sees only ``internal error <id>`` and the
log holds the traceback under that id, so its text never leaks to clients.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._exceptions import (
    CallTimeout,
    ConflictError,
    ConnectionRejected,
    ForwardFailed,
    InvalidCall,
    InvalidKey,
    InvalidQuery,
    ObjectNotFound,
    ObjectsError,
    Overloaded,
    PubSubClosed,
    StaleRevision,
    StorageUnavailable,
    SubscriptionOverflow,
)
from .protocol import INTERNAL_ERROR

log = logging.getLogger("fastapi_objects")

# Most specific first: the first matching class decides the status.
_STATUS: list[tuple[type[ObjectsError], int]] = [
    (InvalidKey, 400),
    (InvalidQuery, 400),
    (ObjectNotFound, 404),
    (InvalidCall, 422),
    (StaleRevision, 412),
    (ConflictError, 409),
    (CallTimeout, 504),
    (Overloaded, 503),
    (StorageUnavailable, 503),
    (PubSubClosed, 503),
    (SubscriptionOverflow, 503),
    (ConnectionRejected, 403),
    (ForwardFailed, 502),
]

# Errors worth retrying: a conflict reloads the object, the others pass with time.
_RETRY = (ConflictError, StorageUnavailable, PubSubClosed, SubscriptionOverflow)
# ForwardFailed did not run: retrying is safe. OutcomeUnknown may have run: no Retry-After.


def status_for(exc: ObjectsError) -> int:
    """The HTTP status for an error (500 only for server-side faults such as corrupt state)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: ObjectsError) -> dict[str, Any]:
    """The JSON body (and websocket error payload) describing ``exc``."""
    return {"type": exc.type, "message": exc.message}


def internal_error(
    exc: BaseException, where: str, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """Log ``exc`` with its traceback under a new id; return the error body a client may see.

    ``where`` says what failed in the log line (``"counter:abc.increment()"``, ``"GET /x"``);
    ``extra``: the record's fields about the object (``_log.about``).
    """
    error_id = uuid.uuid4().hex[:16]
    log.error("internal error %s in %s", error_id, where, exc_info=exc, extra=extra)
    return {"type": INTERNAL_ERROR, "message": f"internal error {error_id}"}


def retry_after(exc: ObjectsError) -> str | None:
    """The ``Retry-After`` seconds for ``exc``, or ``None`` when retrying cannot help."""
    if isinstance(exc, Overloaded):
        return str(max(1, round(exc.retry_after)))
    if isinstance(exc, _RETRY) or type(exc) is ForwardFailed:
        return "1"
    return None


async def objects_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: an ``ObjectsError`` gets its status, anything else a 500.

    ``objects.lifespan`` installs it for ``ObjectsError`` and (unless the app has its own) for
    ``Exception``: the 500's body is ``{"error": {"type": "internal_error", "message":
    "internal error <id>"}}``, the id is logged with the traceback.
    """
    if not isinstance(exc, ObjectsError):
        body = internal_error(exc, f"{request.method} {request.url.path}")
        return JSONResponse({"error": body}, status_code=500)
    seconds = retry_after(exc)
    headers = {"Retry-After": seconds} if seconds is not None else {}
    return JSONResponse({"error": error_body(exc)}, status_code=status_for(exc), headers=headers)
