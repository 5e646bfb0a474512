"""Alarms: durable wake-ups of objects.

- ``schedule.py``: what an alarm is when it is set, completed or failed (``make_alarm``,
  ``completion``, ``failure``, cron);
- ``clock.py``: ``AlarmClock``, the part of a live object that holds its alarms and fires the
  earliest as a turn;
- ``delivery.py``: ``AlarmDelivery``, every node's poller for the alarms of objects nobody
  holds, delivered to their owner like calls.
"""

from __future__ import annotations

from .clock import AlarmClock
from .delivery import ALARM_CALL, AlarmDelivery
from .schedule import completion, failure, make_alarm, next_cron, uses_alarms

__all__ = [
    "ALARM_CALL",
    "AlarmClock",
    "AlarmDelivery",
    "completion",
    "failure",
    "make_alarm",
    "next_cron",
    "uses_alarms",
]
