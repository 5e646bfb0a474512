"""Alarms of one object: setting them inside a turn, and running them as turns.

An alarm set in a turn is written with that turn's commit (gone if the turn raises). It fires
as a turn running ``on_alarm``; the same turn's commit deletes it (or moves a recurring one to
its next occurrence), so its state effects happen exactly once even when it is delivered
twice. A raising handler is rolled back and retried with exponential backoff, then marked
``failed``. The owner's activation keeps a timer for its earliest alarm; alarms of objects
nobody holds are found by every node's poller (``AlarmDelivery``) and delivered like calls.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..._exceptions import MissingDependency
from ...storage import Alarm, AlarmWrite
from ..storable import check_storable

if TYPE_CHECKING:
    from ..object import DurableObject

MAX_NAME = 128
RESERVED = "objects:"
"""Alarm names of the runtime's own start with it (user alarms may not)."""
EXPIRE = RESERVED + "expire"
"""The alarm of a class with ``expire_after``: when the object expires (``runtime/expiry.py``)."""


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def next_cron(expression: str, after: datetime) -> datetime:
    """The next time the 5-field cron ``expression`` matches after ``after`` (UTC)."""
    try:
        from croniter import croniter  # type: ignore[import-untyped]
    except ImportError:
        raise MissingDependency(
            "cron alarms need croniter: pip install 'fastapi-objects[cron]'"
        ) from None
    if len(expression.split()) != 5:
        raise ValueError(f"cron takes 5 fields (minute hour day month weekday): {expression!r}")
    moment: datetime = croniter(expression, after).get_next(datetime)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def make_alarm(
    owner: DurableObject[Any],
    name: str,
    *,
    at: datetime | None,
    delay: float | timedelta | None,
    every: float | timedelta | None,
    cron: str | None,
    payload: Any,
) -> Alarm:
    """Validate ``set_alarm``'s arguments into the alarm to store."""
    if not uses_alarms(type(owner)):
        raise TypeError(f"{type(owner).__name__} sets an alarm but defines no on_alarm()")
    check_alarm_name(name)
    if sum(x is not None for x in (at, delay, cron)) > 1:
        raise ValueError("give at most one of at=, delay= and cron=")
    interval = _seconds(every, "every")
    if interval is not None and interval <= 0:
        raise ValueError("every must be more than 0 seconds")
    now = datetime.now(UTC)
    if at is not None:
        due = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    elif delay is not None:
        due = now + timedelta(seconds=_seconds(delay, "delay") or 0.0)
    elif cron is not None:
        due = next_cron(cron, now)
    elif interval is not None:
        due = now + timedelta(seconds=interval)
    else:
        raise ValueError("set_alarm needs at=, delay=, every= or cron=")
    check_storable(payload, f"{owner._activation.topic}: alarm {name!r} payload")
    return Alarm(
        type=type(owner).type_name, key=owner.key, name=name, due_at=due, scheduled_at=due,
        payload=payload, every=interval, cron=cron,
    )


def check_alarm_name(name: str) -> str:
    """Return ``name`` if a user alarm may have it, else ``ValueError``."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"alarm name must be a string of 1 to {MAX_NAME} characters")
    if name.startswith(RESERVED):
        raise ValueError(f"alarm names starting with {RESERVED!r} are the runtime's: {name!r}")
    return name


def keeps_alarms(cls: type[DurableObject[Any]]) -> bool:
    """Whether ``cls`` has stored alarms: ``on_alarm``'s, or its expiry (``expire_after``)."""
    return uses_alarms(cls) or cls.expire_after is not None


def completion(alarm: Alarm) -> AlarmWrite:
    """What a successful run writes: the next occurrence of a recurring alarm, else a delete."""
    now = datetime.now(UTC)
    if alarm.cron is not None:
        due = next_cron(alarm.cron, max(now, alarm.scheduled_at))
    elif alarm.every is not None:
        due = alarm.scheduled_at + timedelta(seconds=alarm.every)
        if due <= now:  # missed occurrences (the node was down): run once, then on schedule
            behind = math.ceil((now - due).total_seconds() / alarm.every)
            due += timedelta(seconds=behind * alarm.every)
    else:
        return AlarmWrite(alarm.name, None)
    return AlarmWrite(alarm.name, Alarm(
        type=alarm.type, key=alarm.key, name=alarm.name, due_at=due, scheduled_at=due,
        payload=alarm.payload, every=alarm.every, cron=alarm.cron,
    ))


def failure(alarm: Alarm, error: str, retries: int, backoff: float) -> Alarm:
    """The alarm after a failed run: retried after ``backoff * 2**n`` seconds, then failed."""
    count = alarm.retry_count + 1
    status = "failed" if count > retries else "pending"
    due = datetime.now(UTC) + timedelta(seconds=backoff * 2 ** (count - 1))
    return Alarm(
        type=alarm.type, key=alarm.key, name=alarm.name, due_at=due,
        scheduled_at=alarm.scheduled_at, payload=alarm.payload, every=alarm.every,
        cron=alarm.cron, retry_count=count, status=status, last_error=error[:2000],
    )


def uses_alarms(cls: type[DurableObject[Any]]) -> bool:
    """Whether ``cls`` defines ``on_alarm`` (only those load, keep and poll for alarms)."""
    return not getattr(cls.on_alarm, "__objects_default__", False)
