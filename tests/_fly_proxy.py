"""A stand-in for Fly.io's proxy: spreads requests over machines and follows ``fly-replay``.

It forwards each HTTP request and websocket upgrade to the next backend in turn; when the
backend answers with ``fly-replay: instance=<machine>``, it replays the request on that
machine (adding ``fly-replay-src``), as Fly's proxy does. It counts the replays it made.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx2
import websockets
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect

_HOP = {"host", "content-length", "connection", "transfer-encoding"}


class FlyProxy:
    """An ASGI app proxying to ``machines`` (machine id -> base URL)."""

    def __init__(self, machines: dict[str, str]) -> None:
        self.machines = machines
        self._next = itertools.cycle(list(machines))
        self.replays = 0
        self.http = httpx2.AsyncClient(
            timeout=60, limits=httpx2.Limits(max_keepalive_connections=0)
        )

    def _pick(self) -> str:
        return next(self._next)

    def _replayed_to(self, header: str | None) -> str | None:
        if header is None:
            return None
        assert header.startswith("instance="), header
        self.replays += 1
        return header.removeprefix("instance=")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(Request(scope, receive))(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(WebSocket(scope, receive, send))

    def _http(self, request: Request) -> Any:
        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            body = await request.body()
            headers = {k: v for k, v in request.headers.items() if k not in _HOP}
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            machine = self._pick()
            response = await self.http.request(
                request.method, self.machines[machine] + path, content=body, headers=headers
            )
            target = self._replayed_to(response.headers.get("fly-replay"))
            if target is not None:
                headers["fly-replay-src"] = f"instance={machine}"
                response = await self.http.request(
                    request.method, self.machines[target] + path, content=body, headers=headers
                )
            out = Response(response.content, response.status_code,
                           {k: v for k, v in response.headers.items() if k not in _HOP})
            await out(scope, receive, send)

        return respond

    async def _websocket(self, client: WebSocket) -> None:
        path = client.url.path + (f"?{client.url.query}" if client.url.query else "")
        machine = self._pick()
        url = self.machines[machine].replace("http", "ws", 1)
        try:
            upstream = await connect(url + path)
        except websockets.InvalidStatus as refused:
            target = self._replayed_to(refused.response.headers.get("fly-replay"))
            if target is None:
                await client.close(1011)
                return
            url = self.machines[target].replace("http", "ws", 1)
            upstream = await connect(
                url + path, additional_headers={"fly-replay-src": f"instance={machine}"}
            )
        await client.accept()
        async with upstream:
            async def up() -> None:
                try:
                    while True:
                        await upstream.send(await client.receive_text())
                except (WebSocketDisconnect, websockets.ConnectionClosed):
                    await upstream.close()

            async def down() -> None:
                try:
                    async for frame in upstream:
                        await client.send_text(str(frame))
                except websockets.ConnectionClosed:
                    pass
                await client.close(upstream.close_code or 1000)

            await asyncio.gather(up(), down(), return_exceptions=True)
