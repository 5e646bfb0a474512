"""Kinds of object (DESIGN §3): ``persistence`` and ``expire_after``, checked at class definition.

- ``persistence = "durable"`` (the default): every turn that changed something is committed
  before its output leaves.
- ``persistence = "memory"``: one live instance in the cluster, owned, routed, forwarded and
  run turn by turn like any object, but nothing is written: no checkpoint, no journal, no
  commit, so an answer leaves when its turn ends. Hibernation (or a crash) ends the object;
  the next call starts it fresh. It still claims ownership when it starts and releases it when
  it hibernates, so that two nodes never run two instances. It has no journal and no alarms:
  ``EventSourced``, ``on_alarm`` and ``expire_after`` are refused here, ``record()`` and
  ``set_alarm()`` on first use.
- ``expire_after`` (a ``timedelta`` or seconds): a durable object left without calls, clients
  or alarms that long is deleted, state, journal and alarms (``runtime/expiry.py``).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .alarms.schedule import uses_alarms

if TYPE_CHECKING:
    from .object import DurableObject

PERSISTENCES = ("durable", "memory")


def check_kind(cls: type[DurableObject[Any]], event_sourced: bool) -> None:
    """Refuse a ``persistence`` or ``expire_after`` that cannot work; normalize ``expire_after``.

    ``TypeError`` names the class and what to change.
    """
    name = cls.__name__
    if cls.persistence not in PERSISTENCES:
        raise TypeError(
            f"{name}.persistence must be 'durable' or 'memory', not {cls.persistence!r}"
        )
    after = cls.expire_after
    if after is not None:
        seconds = after.total_seconds() if isinstance(after, timedelta) else after
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (
            math.isfinite(seconds) and seconds > 0
        ):
            raise TypeError(
                f"{name}.expire_after must be a timedelta (or seconds) above zero, got {after!r}"
            )
        cls.expire_after = timedelta(seconds=seconds)
    if cls.persistence == "memory":
        refused = (
            "it is EventSourced (a memory object keeps no journal)" if event_sourced
            else "it defines on_alarm (a memory object keeps no alarms)" if uses_alarms(cls)
            else "it sets expire_after (a memory object ends when it hibernates)"
            if after is not None else None
        )
        if refused is not None:
            raise TypeError(f"{name} cannot be persistence = 'memory': {refused}")


def refuse_in_memory(obj: DurableObject[Any], what: str) -> None:
    """``TypeError`` when ``obj`` is a memory object: it has no journal and no alarms."""
    if obj.persistence == "memory":
        raise TypeError(
            f"{type(obj).__name__}.{what}: a memory object (persistence = 'memory') writes "
            "nothing, so it has no journal and no alarms; make it durable to use them"
        )

