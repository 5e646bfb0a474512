"""An app with the inspector behind HTTP Basic, and objects of every kind it shows.

Example::

    app, objects = make_app("sqlite+aiosqlite:///x.db")
    with TestClient(app) as client:
        client.get("/objects/inspector/api/types", auth=ADMIN)
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from fastapi_objects import Alarm, DurableObject, EventSourced, Objects, readonly

ADMIN = ("ann", "s3cret-pass")
_basic = HTTPBasic(realm="objects inspector")


def require_admin(credentials: Annotated[HTTPBasicCredentials, Depends(_basic)]) -> Any:
    """The app's admin check: it returns the credentials (with the password in them)."""
    if not (secrets.compare_digest(credentials.username, ADMIN[0])
            and secrets.compare_digest(credentials.password, ADMIN[1])):
        raise HTTPException(401, "admins only", headers={"WWW-Authenticate": "Basic"})
    return credentials


class Score(BaseModel):
    value: int = Field(default=0, ge=0)
    label: str = "counter"
    tags: list[str] = []


class Counter(DurableObject[Score]):
    history = timedelta(days=7)
    idle_timeout = 30.0
    public = True  # the browser tests attach a client to it

    async def increment(self, by: int = 1) -> int:
        self.state.value += by
        self.broadcast("changed", {"value": self.state.value})
        return self.state.value

    @readonly
    async def get(self) -> int:
        return self.state.value


class Sleepy(Counter):
    """Hibernates at once: what the inspector reads must not wake it."""

    idle_timeout = 0.05


class Ledger(BaseModel):
    total: int = 0


class Added(BaseModel):
    amount: int


class Till(EventSourced[Ledger, Added]):
    snapshot_every = 3

    @staticmethod
    def apply(state: Ledger, event: Added) -> Ledger:
        return Ledger(total=state.total + event.amount)

    async def add(self, amount: int) -> int:
        self.emit(Added(amount=amount))
        return self.state.total


class Plan(BaseModel):
    sent: list[str] = []


class Reminder(DurableObject[Plan]):
    """An alarm that fails (kept as failed, with its last error) and one that waits."""

    alarm_retries = 0

    async def schedule(self) -> None:
        self.set_alarm("broken", delay=0)
        self.set_alarm("digest", delay=3600, payload={"to": "ann"})

    async def on_alarm(self, alarm: Alarm) -> None:
        if alarm.name == "broken":
            raise RuntimeError("mail server unreachable")
        self.state.sent.append(alarm.name)


def make_app(database_url: str, **options: Any) -> tuple[FastAPI, Objects]:
    objects = Objects(
        objects=[Counter, Sleepy, Till, Reminder], database_url=database_url, **options
    )
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    app.include_router(objects.inspector_router(dependencies=[Depends(require_admin)]))
    return app, objects


async def populate(objects: Objects) -> None:
    """Objects of every kind: counters with kept states, a till, reminders, a queue's jobs."""
    for key, times in (("alpha", 3), ("beta", 1), ("user:7", 2)):
        for _ in range(times):
            await objects.get(Counter, key).increment()
    for amount in (5, 10, 20, 40):
        await objects.get(Till, "main").add(amount)
    await objects.get(Reminder, "ann").schedule()
    emails = objects.queue("emails")
    for to in ("ann", "bob", "cy"):
        await emails.enqueue({"to": to}, max_attempts=1)
    leased = await emails.claim("worker-1", lease=600)
    dead = await emails.claim("worker-1", lease=600)
    assert leased is not None and dead is not None
    await emails.fail(dead.id, dead.token, "smtp: connection refused")
