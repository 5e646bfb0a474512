"""fastapi_objects: Durable Objects for FastAPI and Starlette.

Keyed, singleton, durable objects whose calls run one turn at a time and commit before they
answer; browsers attach over websockets and get live broadcasts; idle objects hibernate to
the database and thaw on the next call. See README.md for the whole story.

The errors are imported at once; everything else on first use (PEP 562), so that tools which
need one corner of the package (the ``objects`` command) do not load FastAPI, SQLAlchemy and
pydantic to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    CallTimeout,
    ConflictError,
    ConnectionRejected,
    CorruptState,
    ForwardFailed,
    InvalidArguments,
    InvalidCall,
    InvalidEdit,
    InvalidKey,
    InvalidQuery,
    MissingDependency,
    ObjectNotFound,
    ObjectsError,
    OutcomeUnknown,
    Overloaded,
    PubSubClosed,
    RemoteError,
    StaleRevision,
    StorageUnavailable,
    SubscriptionOverflow,
    UnknownMethod,
    UnknownObjectType,
    UnstorableValue,
)

if TYPE_CHECKING:
    from .fastapi import Objects, get_object
    from .pubsub import Message
    from .runtime import (
        DurableObject,
        EventSourced,
        Handle,
        Runtime,
        RuntimeStats,
        client_callable,
        readonly,
    )
    from .runtime.connection import Connection
    from .runtime.queues import Claimed as Job
    from .settings import ObjectsSettings
    from .storage import Alarm, JournalEntry, ObjectPage, TypeStats

# Public name -> the module that defines it (":name" when it is named otherwise there),
# imported when the name is first asked for.
_LAZY = {
    "Alarm": ".storage",
    "Connection": ".runtime.connection",
    "DurableObject": ".runtime",
    "EventSourced": ".runtime",
    "Handle": ".runtime",
    "Job": ".runtime.queues:Claimed",  # what a worker function receives
    "JournalEntry": ".storage",
    "Message": ".pubsub",
    "ObjectPage": ".storage",
    "Objects": ".fastapi",
    "ObjectsSettings": ".settings",
    "Runtime": ".runtime",
    "RuntimeStats": ".runtime",
    "TypeStats": ".storage",
    "client_callable": ".runtime",
    "get_object": ".fastapi",
    "readonly": ".runtime",
}

__version__ = "0.1.0"

__all__ = [
    "Alarm",
    "CallTimeout",
    "ConflictError",
    "Connection",
    "ConnectionRejected",
    "CorruptState",
    "DurableObject",
    "EventSourced",
    "ForwardFailed",
    "Handle",
    "InvalidArguments",
    "InvalidCall",
    "InvalidEdit",
    "InvalidKey",
    "InvalidQuery",
    "Job",
    "JournalEntry",
    "Message",
    "MissingDependency",
    "ObjectNotFound",
    "ObjectPage",
    "Objects",
    "ObjectsError",
    "ObjectsSettings",
    "OutcomeUnknown",
    "Overloaded",
    "PubSubClosed",
    "RemoteError",
    "Runtime",
    "RuntimeStats",
    "StaleRevision",
    "StorageUnavailable",
    "SubscriptionOverflow",
    "TypeStats",
    "UnknownMethod",
    "UnknownObjectType",
    "UnstorableValue",
    "client_callable",
    "get_object",
    "readonly",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attr = where.partition(":")
    value = getattr(importlib.import_module(module, __name__), attr or name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
