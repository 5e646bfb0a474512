"""``Objects``: the runtime plus what a FastAPI/Starlette app needs (lifespan, router)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.websockets import WebSocket

from .._exceptions import ObjectsError
from ..runtime import DurableObject, Runtime
from .errors import objects_error_handler
from .websocket import serve_websocket

Verdict = bool | dict[str, Any]
Authorize = Callable[[WebSocket, str, str], Verdict | Awaitable[Verdict]]
"""``authorize(websocket, type_name, key)``: truthy allows; a dict lands in ``conn.params``."""

_CLIENT_JS = Path(__file__).parent / "static" / "objects.js"


class Objects(Runtime):
    """Durable objects in a FastAPI or Starlette app.

    Example::

        objects = Objects(objects=[Counter])
        app = FastAPI(lifespan=objects.lifespan)
        app.include_router(objects.router)     # websockets at /objects/{type}/{key}/ws

    Besides the ``Runtime`` options (``database_url``, ``pubsub_url``, ``schema``,
    ``create_tables``, ``max_batch``): ``prefix`` of the router (default ``/objects``);
    ``authorize(websocket, type_name, key)`` run before every attach (sync or async; falsy
    rejects with close code 4401, a dict is merged into ``conn.params``); ``allowed_origins``
    (``None`` allows any; else the ``Origin`` header must be listed, or list ``"*"``);
    ``max_frame_bytes`` per client frame (default 1 MiB); ``max_calls_in_flight`` per
    connection (default 32); ``max_outbox`` frames queued to one client before it is dropped as
    too slow (default 1024).
    """

    def __init__(
        self,
        objects: Sequence[type[DurableObject[Any]]] = (),
        database_url: str | None = None,
        *,
        pubsub_url: str | None = None,
        schema: str | None = None,
        create_tables: bool | None = None,
        max_batch: int = 512,
        prefix: str = "/objects",
        authorize: Authorize | None = None,
        allowed_origins: Sequence[str] | None = None,
        max_frame_bytes: int = 1 << 20,
        max_calls_in_flight: int = 32,
        max_outbox: int = 1024,
    ) -> None:
        super().__init__(
            objects, database_url, pubsub_url=pubsub_url, schema=schema,
            create_tables=create_tables, max_batch=max_batch,
        )
        self.prefix = prefix
        self.authorize = authorize
        self.allowed_origins = list(allowed_origins) if allowed_origins is not None else None
        self.max_frame_bytes = max_frame_bytes
        self.max_calls_in_flight = max_calls_in_flight
        self.max_outbox = max_outbox
        self._router: APIRouter | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """FastAPI/Starlette lifespan: start the runtime, stop it (hibernating objects) at exit.

        To combine with a lifespan of your own, enter it inside yours::

            @asynccontextmanager
            async def lifespan(app):
                async with objects.lifespan(app):
                    yield
        """
        self.install(app)
        async with self:
            yield

    def install(self, app: Starlette) -> None:
        """Expose the runtime as ``app.state.objects`` and map ``ObjectsError`` to HTTP errors."""
        app.state.objects = self
        if ObjectsError not in app.exception_handlers:
            app.add_exception_handler(ObjectsError, objects_error_handler)
            # Starlette copies handlers when it builds its middleware stack, which the lifespan
            # itself already ran through: rebuild it (before any request) so ours is in.
            app.middleware_stack = None

    @property
    def router(self) -> APIRouter:
        """The router with the websocket endpoint and the JavaScript client."""
        if self._router is None:
            self._router = self._build_router()
        return self._router

    def _build_router(self) -> APIRouter:
        router = APIRouter(prefix=self.prefix, tags=["objects"])

        @router.get("/client.js", include_in_schema=False)
        async def objects_client_js() -> FileResponse:
            return FileResponse(_CLIENT_JS, media_type="text/javascript")

        @router.websocket("/{type_name}/{key}/ws")
        async def objects_websocket(websocket: WebSocket, type_name: str, key: str) -> None:
            await serve_websocket(self, websocket, type_name, key)

        return router

    async def serve_websocket(
        self, websocket: WebSocket, cls: type[DurableObject[Any]] | str, key: str
    ) -> None:
        """Serve an attached client inside a websocket route of your own.

        Example::

            @app.websocket("/rooms/{room}")
            async def room(websocket: WebSocket, room: str):
                await objects.serve_websocket(websocket, ChatRoom, room)
        """
        await serve_websocket(self, websocket, cls, key)
