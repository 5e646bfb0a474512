"""The fan-out baseline: uvicorn and Starlette alone, no runtime (``bench_fanout.py --bare``).

What a plain Starlette app does with the same clients: a websocket route that keeps every
socket it accepted, and a tick route that encodes one frame and sends it to each socket in
turn, then answers. Same paths as ``_http_app.py``, so that the same load generator attaches.

    uvicorn _bare_fanout_app:app --port 8000
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

sockets: set[WebSocket] = set()
ticks = 0


async def attach(websocket: WebSocket) -> None:
    """Accept, keep the socket until its client leaves."""
    await websocket.accept()
    sockets.add(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        sockets.discard(websocket)


async def tick(request: Request) -> JSONResponse:
    """One broadcast: a frame shaped like the runtime's, encoded once, sent to every socket."""
    global ticks
    ticks += 1
    t = float(request.query_params["t"])
    text = json.dumps({"type": "broadcast", "event": "tick", "data": {"t": t, "n": ticks}})
    for websocket in list(sockets):
        try:
            await websocket.send_text(text)
        except Exception:  # a client that left meanwhile
            sockets.discard(websocket)
    return JSONResponse({"n": ticks})


async def ready(request: Request) -> JSONResponse:
    """What ``bench_http.wait_ready`` asks for."""
    return JSONResponse({"value": 0})


app = Starlette(routes=[
    WebSocketRoute("/objects/ticker/hot/ws", attach),
    Route("/tickers/hot/tick", tick, methods=["POST"]),
    Route("/plain/{key}/increment", ready, methods=["POST"]),
])
