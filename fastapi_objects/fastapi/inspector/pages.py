"""The inspector's page: server-rendered views (Jinja2) and the scripts that make them live.

Each view renders what the JSON API answers (``views.py``), so the page works without
scripts; ``static/inspector.js`` adds what needs them (the live view, journal paging, edits,
restores, retries), through the same API, with the package's JS client (``objects.js``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.templating import Jinja2Templates

from ..._exceptions import InvalidQuery, ObjectsError
from ...runtime.object import EventSourced
from ...runtime.queues import QUEUE_TYPE
from ..errors import status_for
from . import views

if TYPE_CHECKING:
    from ..objects import Objects

_HERE = Path(__file__).parent
_ASSETS = {
    "objects.js": (_HERE.parent / "static" / "objects.js", "text/javascript"),
    "inspector.js": (_HERE / "static" / "inspector.js", "text/javascript"),
    "inspector.css": (_HERE / "static" / "inspector.css", "text/css"),
}
_templates = Jinja2Templates(directory=str(_HERE / "templates"))
_templates.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
_templates.env.filters["compact"] = lambda value: json.dumps(value, ensure_ascii=False)
_templates.env.filters["when"] = (
    lambda value: value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-"
)
JOURNAL_PAGE = 20


def page_routes(objects: Objects, prefix: str) -> APIRouter:
    """The page's routes (HTML views and assets), left out of the OpenAPI schema."""
    router = APIRouter(include_in_schema=False)
    runtime = objects.runtime

    async def render(
        request: Request, template: str, make: Callable[[], Awaitable[dict[str, Any]]]
    ) -> HTMLResponse:
        """The view, or an error page with the error's own status."""
        base = {"base": prefix, "node": runtime.node_id, "queue_type": QUEUE_TYPE}
        try:
            context = await make()
        except ObjectsError as exc:
            return _templates.TemplateResponse(
                request, "error.html", {**base, "error": exc}, status_code=status_for(exc)
            )
        return _templates.TemplateResponse(request, template, {**base, **context})

    @router.get("/", response_class=HTMLResponse)
    async def inspector_home(request: Request) -> HTMLResponse:
        async def make() -> dict[str, Any]:
            return {"view": "types", "types": (await views.types(runtime)).types}

        return await render(request, "types.html", make)

    @router.get("/types/{type_name}", response_class=HTMLResponse)
    async def inspector_type_page(
        request: Request, type_name: str, status: str = "", prefix: str = "",
        updated_after: str = "", updated_before: str = "", cursor: str | None = None,
    ) -> HTMLResponse:
        # A filter form sends every field, the empty ones as "": they filter nothing.
        async def make() -> dict[str, Any]:
            page = await views.listing(
                runtime, type_name, status=status or None, prefix=prefix or None,
                updated_after=_time(updated_after, "updated_after"),
                updated_before=_time(updated_before, "updated_before"), cursor=cursor,
                limit=50,
            )
            return {
                "view": "types", "type_name": type_name, "page": page,
                "filters": {"status": status, "prefix": prefix, "updated_after": updated_after,
                            "updated_before": updated_before},
                "query": urlencode(
                    [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
                ),
            }

        return await render(request, "objects.html", make)

    @router.get("/objects/{type_name}/{key}", response_class=HTMLResponse)
    async def inspector_object_page(request: Request, type_name: str, key: str) -> HTMLResponse:
        async def make() -> dict[str, Any]:
            found = await views.detail(runtime, type_name, key)
            cls = runtime.object_type(type_name)
            cp = await runtime.storage.load(type_name, found.key)
            last = cp.journal_rev if cp is not None else 0
            after = max(0, last - JOURNAL_PAGE)
            entries = await views.journal(runtime, type_name, found.key, after, JOURNAL_PAGE)
            kept = await views.history(runtime, type_name, found.key, None, 20)
            return {
                "view": "types", "object": found, "journal": list(reversed(entries.entries)),
                "journal_after": after, "journal_page": JOURNAL_PAGE, "kept": kept.revisions,
                "event_sourced": issubclass(cls, EventSourced),
                "keeps_history": cls.__objects_history__ is not None,
            }

        return await render(request, "object.html", make)

    @router.get("/nodes", response_class=HTMLResponse)
    async def inspector_nodes_page(request: Request) -> HTMLResponse:
        async def make() -> dict[str, Any]:
            return {"view": "nodes", "nodes": await views.nodes(runtime)}

        return await render(request, "nodes.html", make)

    @router.get("/queues", response_class=HTMLResponse)
    async def inspector_queues_page(request: Request, cursor: str | None = None) -> HTMLResponse:
        async def make() -> dict[str, Any]:
            return {"view": "queues", "queues": await views.queues(runtime, cursor, 100)}

        return await render(request, "queues.html", make)

    @router.get("/queues/{name}", response_class=HTMLResponse)
    async def inspector_queue_page(request: Request, name: str) -> HTMLResponse:
        async def make() -> dict[str, Any]:
            return {"view": "queues", "queue": await views.queue(runtime, name)}

        return await render(request, "queue.html", make)

    @router.get("/static/{name}")
    async def inspector_asset(name: str) -> FileResponse:
        asset = _ASSETS.get(name)
        if asset is None:
            from starlette.exceptions import HTTPException

            raise HTTPException(404, f"no asset {name!r}")
        return FileResponse(asset[0], media_type=asset[1], headers={"Cache-Control": "no-cache"})

    return router


def _time(text: str, name: str) -> datetime | None:
    """A filter's time (``<input type=datetime-local>``: no offset, taken as UTC)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidQuery(f"{name} must be a time such as 2026-05-01T12:00") from None
