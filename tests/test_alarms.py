"""Alarms in the runtime: set in a turn, fired as a turn, effects exactly once (issue 10).

On memory, SQLite and PostgreSQL; the hibernation and two-node cases need a durable backend.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

from fastapi_objects import DurableObject, Runtime, readonly
from fastapi_objects.storage import Alarm
from tests._support import wait_until
from tests.conftest import Backend

CALLS: Counter[tuple[str, str, datetime]] = Counter()  # (key, name, occurrence) -> on_alarm runs


class ReminderState(BaseModel):
    fired: list[str] = []


class Reminder(DurableObject[ReminderState]):
    alarm_retries = 2
    alarm_backoff = 0.05

    async def remind(self, name: str, delay: float, payload: Any = None) -> None:
        self.set_alarm(name, delay=delay, payload=payload)

    async def remind_then_fail(self, delay: float) -> None:
        self.set_alarm("doomed", delay=delay)
        raise ValueError("the turn fails: its alarm must not be stored")

    async def repeat(self, every: float) -> None:
        self.set_alarm("tick", every=every)

    async def stop(self, name: str) -> None:
        self.cancel_alarm(name)

    @readonly
    async def fired(self) -> list[str]:
        return self.state.fired

    @readonly
    async def pending(self) -> list[dict[str, Any]]:
        return [{"name": a.name, "status": a.status, "retries": a.retry_count}
                for a in self.alarms()]

    async def on_alarm(self, alarm: Alarm) -> None:
        CALLS[(self.key, alarm.name, alarm.scheduled_at)] += 1
        if alarm.payload == "explode":
            self.state.fired.append("never stored")
            raise RuntimeError("handler bug")
        self.state.fired.append(alarm.name)
        self.record("alarm", {"name": alarm.name})


def _rt(backend: Backend, **options: Any) -> Runtime:
    return Runtime(objects=[Reminder], database_url=backend.url, schema=backend.schema,
                   create_tables=True, **options)


async def test_an_alarm_fires_once_as_a_turn(backend: Backend) -> None:
    CALLS.clear()
    async with _rt(backend) as rt:
        r = rt.get(Reminder, "r")
        await r.remind("hello", 0.2)
        assert [a["name"] for a in await r.pending()] == ["hello"]
        await wait_until(lambda: sum(CALLS.values()) == 1, what="the alarm to fire")
        assert await r.fired() == ["hello"]
        assert await r.pending() == []  # completed with the turn
        await asyncio.sleep(0.6)  # the poller finds nothing left to deliver
        assert sum(CALLS.values()) == 1
        if backend.name != "memory":
            assert [e.kind for e in await rt.journal(Reminder, "r")] == ["alarm"]
            assert await rt.storage.load_alarms("reminder", "r") == []


async def test_an_alarm_set_by_a_failing_turn_is_gone(backend: Backend) -> None:
    async with _rt(backend) as rt:
        r = rt.get(Reminder, "r")
        with pytest.raises(ValueError, match="must not be stored"):
            await r.remind_then_fail(0.05)
        assert await r.pending() == []
        await asyncio.sleep(0.3)
        assert await r.fired() == []


async def test_recurring_alarms_and_cancel(backend: Backend) -> None:
    async with _rt(backend) as rt:
        r = rt.get(Reminder, "r")
        await r.repeat(0.15)
        await wait_until(lambda: len([k for k in CALLS if k[1] == "tick"]) >= 3, within=10,
                         what="three ticks")
        await r.stop("tick")
        ticks = len(await r.fired())
        await asyncio.sleep(0.5)
        assert len(await r.fired()) == ticks  # cancelled: no more ticks
        assert await r.pending() == []


async def test_a_failing_handler_is_retried_with_backoff_then_failed(backend: Backend) -> None:
    CALLS.clear()
    async with _rt(backend) as rt:
        r = rt.get(Reminder, "r")
        await r.remind("boom", 0.05, payload="explode")
        # 1 run + 2 retries (backoff 0.05 s, then 0.1 s), then it is marked failed
        await wait_until(lambda: sum(CALLS.values()) == 3, within=10, what="three runs")
        await asyncio.sleep(0.8)
        assert sum(CALLS.values()) == 3  # given up: no fourth run
        assert await r.fired() == []  # every run was rolled back
        assert await r.pending() == [{"name": "boom", "status": "failed", "retries": 3}]
        if backend.name != "memory":
            (stored,) = await rt.storage.load_alarms("reminder", "r")
            assert (stored.status, stored.retry_count) == ("failed", 3)
            assert "handler bug" in (stored.last_error or "")


async def test_a_due_alarm_wakes_a_hibernated_object(sql_backend: Backend) -> None:
    class Sleepy(Reminder):
        type_name = "sleepy"
        idle_timeout = 0.1

    CALLS.clear()
    async with Runtime(objects=[Sleepy], database_url=sql_backend.url,
                       schema=sql_backend.schema, create_tables=True) as rt:
        await rt.get(Sleepy, "s").remind("wake", 1.0)
        await wait_until(lambda: not rt._host.activations, what="the object to hibernate")
        await wait_until(lambda: sum(CALLS.values()) == 1, within=5, what="the poller")
        async with asyncio.timeout(5):  # the run commits just after on_alarm returned
            while (cp := await rt.storage.load("sleepy", "s")) is None or not cp.state["fired"]:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert cp.state["fired"] == ["wake"]


async def test_two_nodes_run_each_occurrence_once(sql_backend: Backend) -> None:
    CALLS.clear()
    keys = [f"k{i}" for i in range(12)]
    async with _rt(sql_backend, node_id="a") as a, _rt(sql_backend, node_id="b") as b:
        for i, key in enumerate(keys):
            await (a, b)[i % 2].get(Reminder, key).remind("x", 0.3 + 0.05 * i)
        await wait_until(lambda: len(CALLS) == len(keys), within=10, what="every alarm")
        await asyncio.sleep(1.0)  # both pollers had time to deliver everything again
    assert set(CALLS.values()) == {1}, CALLS  # each occurrence ran exactly once
    async with _rt(sql_backend) as c:
        for key in keys:
            assert await c.get(Reminder, key).fired() == ["x"]


async def test_alarms_survive_a_sigkill_and_run_once(sql_backend: Backend) -> None:
    import os
    import signal
    import sys
    from pathlib import Path

    worker = Path(__file__).with_name("_alarm_worker.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(worker), sql_backend.url, sql_backend.schema or "-", "2.0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line == b"ready\n", await proc.stderr.read()
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the alarms are set and committed, not yet due
    assert await proc.wait() == -signal.SIGKILL
    keys = [f"k{i}" for i in range(5)]
    async with _rt(sql_backend, node_ttl=1.0) as rt:
        async with asyncio.timeout(30):  # the dead node's objects are taken over after its TTL
            while True:
                stored = [await rt.storage.load("reminder", k) for k in keys]
                if all(cp is not None and cp.state["fired"] for cp in stored):
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # a second delivery, if any, would have run by now
        for key in keys:
            assert await rt.get(Reminder, key).fired() == ["x"], key  # exactly once
            assert await rt.storage.load_alarms("reminder", key) == []


async def test_cron_alarms_take_the_next_matching_minute(backend: Backend) -> None:
    from datetime import UTC, timedelta

    from fastapi_objects.runtime.alarms import completion, next_cron

    now = datetime.now(UTC)
    due = next_cron("*/5 * * * *", now)
    assert due > now and due.minute % 5 == 0 and due - now <= timedelta(minutes=5)
    with pytest.raises(ValueError, match="5 fields"):
        next_cron("* * * *", now)

    class Cronned(Reminder):
        type_name = "cronned"

        async def daily(self) -> str:
            return self.set_alarm("daily", cron="0 3 * * *").due_at.isoformat()

    async with Runtime(objects=[Cronned], database_url=backend.url, schema=backend.schema,
                       create_tables=True) as rt:
        first = datetime.fromisoformat(await rt.get(Cronned, "c").daily())
        assert (first.hour, first.minute) == (3, 0) and first > now
        (stored,) = await rt.get(Cronned, "c").pending()
        assert stored["name"] == "daily"
    again = completion(Alarm(type="cronned", key="c", name="daily", due_at=first,
                             scheduled_at=first, cron="0 3 * * *"))
    assert again.alarm is not None and again.alarm.due_at == first + timedelta(days=1)


def test_objects_show_lists_alarms(db_url: str) -> None:
    from typer.testing import CliRunner

    from fastapi_objects.cli import app as cli

    async def setup() -> None:
        async with Runtime(objects=[Reminder], database_url=db_url) as rt:
            await rt.get(Reminder, "r").remind("later", 3600.0)
            await rt.get(Reminder, "r").repeat(60.0)

    asyncio.run(setup())
    result = CliRunner().invoke(cli, ["show", "reminder", "r", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "alarms" in result.output and "later" in result.output
    assert "tick" in result.output and "60 s" in result.output
