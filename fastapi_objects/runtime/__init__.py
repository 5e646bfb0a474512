"""The runtime: activation, turns, group commit, hibernation and handles. It knows no HTTP."""

from __future__ import annotations

from .handle import Handle
from .methods import client_callable, readonly
from .object import DurableObject, EventSourced
from .runtime import Runtime
from .stats import RuntimeStats

__all__ = [
    "DurableObject",
    "EventSourced",
    "Handle",
    "Runtime",
    "RuntimeStats",
    "client_callable",
    "readonly",
]
