"""The exceptions of fastapi_objects.

Every error the library raises on purpose is an ``ObjectsError``::

    ObjectsError
    ├── ObjectNotFound            no such object type, or (for reads) no stored object
    │   └── UnknownObjectType
    ├── InvalidKey                key too long, empty, or with characters outside the allowed set
    ├── InvalidQuery              a listing's filters, limit or cursor are malformed
    ├── InvalidCall               the call itself is wrong; nothing ran
    │   ├── UnknownMethod
    │   ├── InvalidArguments      arguments failed validation against the method signature
    │   ├── UnstorableValue       the turn's state, journal or result is not storable JSON;
    │                             the turn was rolled back
    │   └── InvalidEdit           an operator's edit or restore cannot apply (a malformed
    │                             patch, a result the state model refuses); nothing changed
    ├── StaleRevision             an edit named a rev the object has moved past (If-Match)
    ├── ConflictError             the commit's expected_rev did not match: ownership lost
    ├── CallTimeout               the call overran its timeout; the turn was rolled back
    ├── Overloaded                the object's queue is full; retry after ``retry_after`` seconds
    ├── StorageUnavailable        the database could not be reached or refused the transaction
    ├── CorruptState              a stored checkpoint or journal entry cannot be decoded
    ├── ConnectionRejected        ``on_connect`` or ``authorize`` refused a websocket attach
    ├── PubSubClosed              the pub/sub (or a subscription) is closed or not started
    ├── SubscriptionOverflow      a subscriber fell ``max_queue`` messages behind; it was closed
    ├── ForwardFailed             a call for another node's object could not reach it (not run)
    │   └── OutcomeUnknown        it reached the owner, then the owner failed: may have run
    ├── RemoteError               the owner's code failed on a forwarded call (internal_error)
    └── MissingDependency         an optional driver is not installed (names the pip command)

Each class carries a stable ``type`` string (used in websocket error frames and HTTP error
bodies) so clients never depend on Python class names. Errors that are not ``ObjectsError``s
come from bugs: clients see them as ``internal_error`` with an id that is in the log
(``fastapi_objects.fastapi.errors``), never as the exception's text.
"""

from __future__ import annotations

from typing import Self


class ObjectsError(Exception):
    """Base class of every error raised by fastapi_objects.

    ``message`` is what clients see. ``detail``, when set (``hiding``), is what only the log
    and the operator's CLI see: a driver's message may hold SQL, a statement's parameters
    (another caller's key and state, in a group commit) or where the database is; a failed
    forward names nodes and their private addresses.
    """

    type: str = "objects_error"

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    @classmethod
    def hiding(cls, what: str, detail: object) -> Self:
        """``what`` failed, with an error id for clients; ``detail`` is logged under that id.

        Example: ``raise StorageUnavailable.hiding("storage refused the transaction", exc)``
        gives clients ``storage refused the transaction (error 3f2a...; details in the
        server's log)``, and the log ``error 3f2a... (storage_unavailable): storage refused
        the transaction: <the driver's message>``.
        """
        import logging  # here: the CLI's --help imports this module, and counts milliseconds
        import uuid

        error_id = uuid.uuid4().hex[:16]
        text = f"{what}: {detail}"
        logging.getLogger("fastapi_objects").warning("error %s (%s): %s", error_id, cls.type, text)
        return cls(f"{what} (error {error_id}; details in the server's log)", detail=text)


class ObjectNotFound(ObjectsError):
    """The object (or its type) does not exist."""

    type = "not_found"


class UnknownObjectType(ObjectNotFound):
    """No object class is registered under this type name."""

    type = "unknown_type"


class InvalidKey(ObjectsError):
    """An object key is empty, too long, or uses characters outside ``[A-Za-z0-9_.:@+=~-]``."""

    type = "invalid_key"


class InvalidQuery(ObjectsError):
    """A listing's ``limit``, ``cursor`` or filters are malformed; nothing was read."""

    type = "invalid_query"


class InvalidCall(ObjectsError):
    """The call cannot run as asked; nothing was executed and nothing was written."""

    type = "invalid_call"


class UnknownMethod(InvalidCall, AttributeError):
    """The object has no public method of that name (also an ``AttributeError``)."""

    type = "unknown_method"


class InvalidArguments(InvalidCall):
    """The arguments do not match the method signature (validated with pydantic)."""

    type = "invalid_arguments"


class UnstorableValue(InvalidCall):
    """A turn produced a state, journal entry or result that cannot be stored and read back.

    Examples: an integer of more than 4,300 digits, ``inf`` or ``nan``, a NUL character
    (PostgreSQL's JSON refuses it). The turn was rolled back: nothing was written or sent.
    """

    type = "unstorable_value"


class InvalidEdit(InvalidCall):
    """An edit's JSON Patch or a restore cannot apply, or its result breaks the state model.

    It ran as a turn on the object's owner and was rolled back: nothing changed.
    """

    type = "invalid_edit"


class StaleRevision(ObjectsError):
    """An edit was made against a rev the object has moved past: reload it, edit again.

    What HTTP calls a failed ``If-Match`` precondition (412). Nothing changed.
    """

    type = "stale_revision"


class ConflictError(ObjectsError):
    """Another writer committed first: this instance lost ownership and was dropped.

    The turn that hit the conflict was not applied. Usually a second process (another
    uvicorn worker, another machine) activated the same object; see ``docs/running.md``.
    """

    type = "conflict"


class CallTimeout(ObjectsError):
    """The call overran its timeout; a turn still running was cancelled and rolled back."""

    type = "timeout"


class Overloaded(ObjectsError):
    """The object's queue is full; the caller should retry after ``retry_after`` seconds."""

    type = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageUnavailable(ObjectsError):
    """The database could not be reached, or the commit failed; the outcome was not acknowledged.

    A driver's own words stay in the log (``ObjectsError.hiding``), never in ``message``.
    """

    type = "storage_unavailable"


class CorruptState(ObjectsError):
    """A stored checkpoint or journal entry cannot be decoded into the object's state."""

    type = "corrupt_state"


class ConnectionRejected(ObjectsError):
    """A websocket attach was refused by ``authorize`` or by the object's ``on_connect``."""

    type = "rejected"

    def __init__(self, message: str = "connection rejected", code: int = 4403) -> None:
        super().__init__(message)
        self.code = code


class PubSubClosed(ObjectsError):
    """The pub/sub (or the subscription) is closed, or the pub/sub was never started."""

    type = "pubsub_closed"


class SubscriptionOverflow(ObjectsError):
    """A subscriber fell ``max_queue`` messages behind; its subscription was closed."""

    type = "overflow"


class ForwardFailed(ObjectsError):
    """A call could not be delivered to the node owning the object; it did not run."""

    type = "forward_failed"


class OutcomeUnknown(ForwardFailed):
    """The owner got the call, then died or was cut off: it may or may not have run.

    Never retried silently: retry only if running the call twice is acceptable.
    """

    type = "outcome_unknown"


class RemoteError(ObjectsError):
    """The owner's code failed on a forwarded call: ``internal error <id>``, logged there."""

    type = "internal_error"


class MissingDependency(ObjectsError):
    """An optional driver is missing; the message names the ``pip install`` that adds it."""

    type = "missing_dependency"
