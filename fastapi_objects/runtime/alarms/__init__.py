"""Alarms: durable wake-ups of objects.

- ``schedule.py``: what an alarm is when it is set, completed or failed (``make_alarm``,
  ``completion``, ``failure``, cron), and the names of the runtime's own alarms (an expiring
  object's ``objects:expire``, kept by ``runtime/expiry.py``);
- ``clock.py``: ``AlarmClock``, the part of a live object that holds its alarms and fires the
  earliest as a turn;
- ``delivery.py``: ``AlarmDelivery``, every node's poller for the alarms of objects nobody
  holds, delivered to their owner like calls.
"""

from __future__ import annotations

from .clock import AlarmClock
from .delivery import ALARM_CALL, AlarmDelivery
from .schedule import completion, failure, keeps_alarms, make_alarm, next_cron, uses_alarms

__all__ = [
    "ALARM_CALL",
    "AlarmClock",
    "AlarmDelivery",
    "completion",
    "failure",
    "keeps_alarms",
    "make_alarm",
    "next_cron",
    "uses_alarms",
]
