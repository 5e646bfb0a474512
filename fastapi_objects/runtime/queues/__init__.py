"""Durable work queues: one built-in event-sourced object per queue, and worker pools.

- ``queue.py``: ``ObjectsQueue``, the queue object (what ``objects.queue(name)`` reaches);
- ``state.py``: its state and events, applied in O(1) whatever the backlog, and the claim
  index kept in memory;
- ``_pmap.py``: the small copy-on-write map the state is made of;
- ``workers.py``: the pools ``@objects.worker`` runs on every node.
"""

from __future__ import annotations

from .queue import QUEUE_TYPE, Claimed, ObjectsQueue
from .state import QueueEvent, QueueState
from .workers import Handler, Worker, Workers

__all__ = [
    "QUEUE_TYPE",
    "Claimed",
    "Handler",
    "ObjectsQueue",
    "QueueEvent",
    "QueueState",
    "Worker",
    "Workers",
]
