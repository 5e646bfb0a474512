"""An app whose object answers with big results, served by uvicorn in a process of its own.

``uvicorn tests._bulky_app:app`` with the settings in the environment (``OBJECTS_*``), for
tests that measure the server process from outside (``tests/test_outbox.py``).
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_objects import DurableObject, Objects, client_callable, readonly


class _State(BaseModel):
    calls: int = 0


class Bulky(DurableObject[_State]):
    """Answers a call with ``size`` characters: a reply worth holding back from a slow client."""

    public = True

    @readonly
    @client_callable
    async def blob(self, size: int) -> str:
        return "x" * min(size, 1 << 20)


objects = Objects(objects=[Bulky])
app = FastAPI(lifespan=objects.lifespan)
app.include_router(objects.router)


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}
