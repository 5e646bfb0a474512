"""``Objects``: the runtime plus what a FastAPI/Starlette app needs (lifespan, router)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self, Unpack

from fastapi import APIRouter, params
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.websockets import WebSocket

from .._exceptions import ObjectsError
from ..runtime import DurableObject, Runtime
from ..settings import ObjectsSettings, Options
from ..storage import Storage
from .dependencies import check_routes
from .errors import objects_error_handler
from .metrics import metrics_router
from .relay import internal_websocket_app
from .websocket import serve_websocket
from .writer import Flusher

Verdict = bool | dict[str, Any]
Authorize = Callable[[WebSocket, str, str], Verdict | Awaitable[Verdict]]
"""``authorize(websocket, type_name, key)``: truthy allows; a dict becomes ``conn.auth``."""

log = logging.getLogger("fastapi_objects")

_CLIENT_JS = Path(__file__).parent / "static" / "objects.js"


class Objects:
    """Durable objects in a FastAPI or Starlette app: a ``Runtime`` plus its web parts.

    Example::

        objects = Objects(objects=[Counter])
        app = FastAPI(lifespan=objects.lifespan)
        app.include_router(objects.router)     # websockets at /objects/{type}/{key}/ws

    Options are the fields of ``ObjectsSettings`` (arguments here, then ``OBJECTS_<NAME>``
    environment variables, then the project's ``.env``); besides the storage and cluster ones
    the web ones are ``prefix`` of the router (default ``/objects``), ``allowed_origins``
    (origins allowed besides the app's own; ``["*"]`` allows any), ``max_frame_bytes`` per
    client frame (default 1 MiB), ``max_calls_in_flight`` per connection (default 32) and
    ``max_outbox`` frames (default 1024) or ``max_outbox_bytes`` of JSON text (default 8 MiB)
    queued to one client, or a frame not taken within ``send_timeout`` seconds (default 30),
    before it is closed as too slow (4408). ``authorize(websocket, type_name, key)`` runs
    before every attach (sync or async; falsy rejects with close code 4401, a dict becomes
    ``conn.auth``). ``tracer_provider``: an OpenTelemetry ``TracerProvider`` for this node's
    spans instead of the global one (``tracing`` turns them on or off).

    The router reaches only types with ``public = True``, and client frames only their
    ``@client_callable`` methods; when public types exist and no ``authorize`` is set, the
    start logs a warning naming them.

    It holds its ``runtime`` (as a Starlette app holds its router) and offers the runtime's
    public methods: ``get``, ``call``, ``journal``, ``query``, ``type_stats``, ``stats``,
    ``publish``, ``subscribe``, ``create_tables``, and ``async with objects:``;
    ``metrics_router()`` serves its Prometheus metrics.

    ``publish``, ``subscribe``, ``create_tables``, ``delete``, ``edit``, ``restore``,
    ``history``, ``connections``, and ``async with objects:``.
    """

    def __init__(
        self,
        objects: Sequence[type[DurableObject[Any]]] = (),
        database_url: str | None = None,
        *,
        authorize: Authorize | None = None,
        settings: ObjectsSettings | None = None,
        tracer_provider: Any = None,
        **options: Unpack[Options],
    ) -> None:
        self.runtime = Runtime(
            objects, database_url, settings=settings, tracer_provider=tracer_provider, **options
        )
        web = self.settings = self.runtime.settings
        self.prefix = web.prefix
        self.authorize = authorize
        self.allowed_origins = web.allowed_origins
        self.max_frame_bytes = web.max_frame_bytes
        self.max_calls_in_flight = web.max_calls_in_flight
        self.max_outbox = web.max_outbox
        self.max_outbox_bytes = web.max_outbox_bytes
        self.send_timeout = web.send_timeout
        self._router: APIRouter | None = None
        self._flusher: Flusher | None = None
        # Clients that attach on another node are relayed here (the owner) through this.
        self.runtime.gateway.accept_relays(internal_websocket_app(self))
        # The runtime's public methods, as this app's own (one object, one set of names).
        runtime = self.runtime
        self.get = runtime.get
        self.call = runtime.call
        self.journal = runtime.journal
        self.query = runtime.query
        self.type_stats = runtime.type_stats
        self.stats = runtime.stats
        self.publish = runtime.publish
        self.subscribe = runtime.subscribe
        self.create_tables = runtime.create_tables
        self.queue = runtime.queue
        self.delete = runtime.delete
        self.edit = runtime.edit
        self.restore = runtime.restore
        self.history = runtime.history
        self.connections = runtime.connections
        self.worker = runtime.worker
        self.close = runtime.close

    def flusher(self) -> Flusher:
        """What sends this app's websocket frames on the running event loop (``writer.py``)."""
        loop = asyncio.get_running_loop()
        if self._flusher is None or self._flusher.loop is not loop:
            self._flusher = Flusher(loop)
        return self._flusher

    @property
    def node_id(self) -> str:
        """This node's id."""
        return self.runtime.node_id

    @property
    def storage(self) -> Storage:
        """The storage backend (for listings and tools; calls go through ``get``)."""
        return self.runtime.storage

    async def start(self) -> None:
        """Start the runtime (as ``async with objects:`` and the lifespan do)."""
        await self.runtime.start()
        self._warn_if_open()

    def _warn_if_open(self) -> None:
        if self.authorize is not None or self._router is None:
            return  # guarded, or no router included: nothing is reachable by name
        public = sorted(n for n, cls in self.runtime.types.items() if cls.public)
        if public:
            log.warning(
                "fastapi_objects: no authorize= is set: any client may attach to the public "
                "types %s (by any key) and call their @client_callable methods",
                ", ".join(public),
            )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.runtime.close()

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
        """Expose the runtime as ``app.state.objects`` and map ``ObjectsError`` to HTTP errors.

        Also checks every route that uses ``get_object``: one whose path lacks the key is the
        app's mistake, said at start-up (``RuntimeError``) rather than as a 422 to clients.
        """
        check_routes(app.routes)
        app.state.objects = self
        if ObjectsError not in app.exception_handlers:
            app.add_exception_handler(ObjectsError, objects_error_handler)
            app.exception_handlers.setdefault(Exception, objects_error_handler)  # 500: an id
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

    def metrics_router(
        self, path: str = "/metrics", *, dependencies: Sequence[Any] | None = None,
        public: bool = False,
    ) -> APIRouter:
        """A router serving this node's Prometheus metrics at ``path`` (the ``prometheus`` extra).

        Example::

            app.include_router(objects.metrics_router(dependencies=[Depends(scraper_only)]))

        It refuses to mount unguarded: pass ``dependencies`` that protect it, or
        ``public=True`` on purpose. Calls are counted from here on, so build it with the app.
        """
        return metrics_router(self.runtime, path, dependencies, public)

    def inspector_router(
        self,
        *,
        dependencies: Sequence[params.Depends] | None = None,
        prefix: str = "/objects/inspector",
        public: bool = False,
    ) -> APIRouter:
        """The inspector: a page and a JSON API to see and steer objects, for operators.

        Every route sits behind ``dependencies`` (your admin check); it refuses to mount
        without them unless ``public=True`` says so on purpose. Example::

            app.include_router(objects.inspector_router(dependencies=[Depends(require_admin)]))

        The first dependency returning a name (a ``str``, or a user object's ``username``,
        ``name``, ``email``, ``id`` or ``sub``) is who made an edit or a restore, journaled.
        """
        from .inspector import inspector_router

        return inspector_router(self, dependencies=dependencies, prefix=prefix, public=public)

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
