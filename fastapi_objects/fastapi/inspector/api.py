"""The inspector's JSON API: reads without waking anything, and operator actions as turns.

Every route sits behind the inspector's dependencies (the router carries them). Writes take
a JSON body only (``application/json``, or ``application/json-patch+json`` for an edit): a
page of another site cannot send one without the browser asking this server first, so a
logged-in admin's cookies cannot be used to edit behind their back. Bodies are read up to
``max_frame_bytes`` and refused past it, without reading the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..._exceptions import InvalidEdit
from ...runtime.keys import validate_key
from ...runtime.methods import describe_errors
from ...runtime.queues import ObjectsQueue
from ..protocol import decode_frame
from . import live, views
from .models import (
    Edited,
    HistoryPage,
    JournalPage,
    NodeList,
    ObjectDetail,
    ObjectList,
    QueueInfo,
    QueueList,
    Restored,
    RestoreRequest,
    Retried,
    TypeList,
)

if TYPE_CHECKING:
    from ..objects import Objects

PATCH_TYPES = ("application/json-patch+json", "application/json")

Limit = Annotated[int, Query(ge=1, le=views.MAX_PAGE)]


class Refused(Exception):
    """A request the inspector turns down before anything runs (its HTTP status and type)."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.response = JSONResponse(
            {"error": {"type": type, "message": message}}, status_code=status
        )


def api_routes(objects: Objects, who: Callable[..., str | None]) -> APIRouter:
    """The API's routes (``/api/...``), for the inspector's router to include."""
    router = APIRouter(prefix="/api", tags=["objects inspector"])
    runtime = objects.runtime
    # Who made an edit or a restore: a default, not an Annotated alias (a local name in a
    # string annotation is not resolvable by FastAPI).
    by_whom = Depends(who)

    @router.get("/types", response_model=TypeList)
    async def inspector_types() -> TypeList:
        """Every registered type, with its stored objects counted by status."""
        return await views.types(runtime)

    @router.get("/objects/{type_name}", response_model=ObjectList)
    async def inspector_objects(
        type_name: str, status: str | None = None, prefix: str | None = None,
        updated_after: datetime | None = None, updated_before: datetime | None = None,
        cursor: str | None = None, limit: Limit = 100,
    ) -> ObjectList:
        """A type's stored objects, by key, filtered; nothing is woken."""
        return await views.listing(
            runtime, type_name, status=status, prefix=prefix, updated_after=updated_after,
            updated_before=updated_before, cursor=cursor, limit=limit,
        )

    @router.get("/objects/{type_name}/{key}", response_model=ObjectDetail)
    async def inspector_object(type_name: str, key: str, response: Response) -> ObjectDetail:
        """One object: state, rev, owner, alarms and attached clients (its ETag is its rev)."""
        found = await views.detail(runtime, type_name, key)
        response.headers["ETag"] = f'"{found.rev}"'
        return found

    @router.get("/objects/{type_name}/{key}/journal", response_model=JournalPage)
    async def inspector_journal(
        type_name: str, key: str, after: Annotated[int, Query(ge=0)] = 0, limit: Limit = 50,
    ) -> JournalPage:
        """The object's journal entries after ``after``, in order."""
        return await views.journal(runtime, type_name, key, after, limit)

    @router.get("/objects/{type_name}/{key}/history", response_model=HistoryPage)
    async def inspector_history(
        type_name: str, key: str, before: Annotated[int | None, Query(ge=1)] = None,
        limit: Limit = 50,
    ) -> HistoryPage:
        """The object's kept states (its class's ``history`` option), newest first."""
        return await views.history(runtime, type_name, key, before, limit)

    @router.patch(
        "/objects/{type_name}/{key}/state", response_model=Edited,
        responses={412: {"description": "The object moved past the rev in If-Match"},
                   422: {"description": "The patch does not apply, or breaks the model"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            name: {"schema": {"type": "array", "items": {"type": "object"}}}
            for name in PATCH_TYPES
        }}},
    )
    async def inspector_edit(
        type_name: str, key: str, request: Request, by: str | None = by_whom,
        if_match: Annotated[str | None, Header(description='The rev edited, e.g. "12"')] = None,
    ) -> Any:
        """Apply an RFC 6902 JSON Patch to the state, as a turn on the owner, under If-Match."""
        try:
            rev = _if_match(if_match)
            patch = await json_body(request, PATCH_TYPES, objects.max_frame_bytes)
        except Refused as refused:
            return refused.response
        cls = runtime.object_type(type_name)
        done = await runtime.edit(cls, key, patch, rev=rev, by=by)
        return JSONResponse(Edited(**done).model_dump(mode="json"),
                            headers={"ETag": f'"{done["rev"]}"'})

    @router.post(
        "/objects/{type_name}/{key}/restore", response_model=Restored,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": RestoreRequest.model_json_schema()}}}},
    )
    async def inspector_restore(
        type_name: str, key: str, request: Request, by: str | None = by_whom
    ) -> Any:
        """Restore the state at a rev or a time, as a journaled turn on the owner."""
        try:
            body = await json_body(request, ("application/json",), objects.max_frame_bytes)
        except Refused as refused:
            return refused.response
        try:
            asked = RestoreRequest.model_validate(body)
        except pydantic.ValidationError as exc:
            problems = describe_errors(exc, "body", 3)
            raise InvalidEdit(
                f'a restore takes {{"rev": N}} or {{"at": TIME}}: {problems}'
            ) from None
        cls = runtime.object_type(type_name)
        return Restored(**await runtime.restore(cls, key, rev=asked.rev, at=asked.at, by=by))

    @router.get(
        "/objects/{type_name}/{key}/live", response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}},
                         "description": "Server-Sent Events: each broadcast as a frame"}},
    )
    async def inspector_live(type_name: str, key: str) -> StreamingResponse:
        """The object's broadcasts as they happen (Server-Sent Events); it is not woken."""
        cls = runtime.object_type(type_name)
        return StreamingResponse(
            live.stream(objects, cls, validate_key(key)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/nodes", response_model=NodeList)
    async def inspector_nodes() -> NodeList:
        """The nodes of the cluster: alive or dead, lease left, objects owned."""
        return await views.nodes(runtime)

    @router.get("/queues", response_model=QueueList)
    async def inspector_queues(cursor: str | None = None, limit: Limit = 100) -> QueueList:
        """The durable queues, with their job counts."""
        return await views.queues(runtime, cursor, limit)

    @router.get("/queues/{name}", response_model=QueueInfo)
    async def inspector_queue(name: str) -> QueueInfo:
        """A durable queue's pending, leased and dead jobs."""
        return await views.queue(runtime, name)

    @router.post("/queues/{name}/jobs/{job}/retry", response_model=Retried)
    async def inspector_retry(name: str, job: str, request: Request) -> Any:
        """Give a dead job its attempts back (a call to the queue's owner).

        Send ``Content-Type: application/json`` (the body may be empty).
        """
        try:
            await json_body(request, ("application/json",), 1024, empty=True)
        except Refused as refused:
            return refused.response
        return Retried(retried=await runtime.get(ObjectsQueue, name).retry(job))

    return router


def _if_match(value: str | None) -> int:
    """The rev named by ``If-Match`` (``"12"``, ``12`` or ``W/"12"``)."""
    if value is None:
        raise Refused(428, "precondition_required",
                      'an edit needs If-Match: "<rev>", the rev of the state you edited')
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or not 1 <= int(text) < 2**63:
        raise Refused(400, "invalid_precondition",
                      f'If-Match must name one rev, e.g. "12"; got {value[:40]!r}')
    return int(text)


async def json_body(
    request: Request, types: tuple[str, ...], limit: int, *, empty: bool = False
) -> Any:
    """The request's JSON body: one of ``types``, at most ``limit`` bytes, strict JSON."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in types:
        raise Refused(415, "unsupported_media_type",
                      f"send the body as {' or '.join(types)} (got {kind or 'no content type'})")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, "payload_too_large", f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, "payload_too_large", f"the body is over {limit} bytes")
    if not body and empty:
        return None
    try:
        return decode_frame(body.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError too
        raise InvalidEdit(f"the body is not strict JSON: {exc}") from None
