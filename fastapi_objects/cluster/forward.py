"""The forwarding client: a call on a node that does not own the object goes to its owner.

One rule keeps forwarding from ever applying a call twice: a forward is retried only when it
cannot have run — the connection was refused, or the owner answered 421 (it no longer owns the
object, or is leaving) before running anything. Any other failure after the request was sent
is ``OutcomeUnknown``: the caller is told, never silently retried.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import from_json, to_json

from .._exceptions import ForwardFailed, ObjectsError, OutcomeUnknown, RemoteError
from .signing import Signer

CALL_PATH = "/objects-internal/call"
KEEPALIVE_EXPIRY = 1.0
"""Seconds an idle forwarding connection is kept. A listener that stops waits this long after
its last request, so that no peer sends a call on a connection it is closing (a call that
could not be told from one that ran)."""


class Moved(Exception):
    """The node asked is not the owner (or is leaving): nothing ran; look the owner up again.

    ``owner``/``address``: the owner that node found in the database, when it found one.
    """

    def __init__(self, message: str, owner: str | None = None, address: str | None = None):
        super().__init__(message)
        self.owner = owner
        self.address = address


def _error_classes() -> dict[str, type[ObjectsError]]:
    found: dict[str, type[ObjectsError]] = {}
    stack: list[type[ObjectsError]] = [ObjectsError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.type, cls)
        stack.extend(cls.__subclasses__())
    return found


def rebuild_error(body: dict[str, Any]) -> ObjectsError:
    """The ``ObjectsError`` a remote error body describes, of the same class as on the owner."""
    kind, message = str(body.get("type")), str(body.get("message"))
    cls = _error_classes().get(kind)
    if cls is None:
        remote = RemoteError(message)
        remote.type = kind
        return remote
    error = cls(message)
    if "retry_after" in body and hasattr(error, "retry_after"):
        error.retry_after = float(body["retry_after"])
    return error


class Forwarder:
    """Sends signed calls to other nodes' internal listeners over HTTP (httpx2)."""

    def __init__(self, signer: Signer, timeout: float) -> None:
        import httpx2

        self._httpx = httpx2
        self.signer = signer
        # Short keep-alive: a connection the server has already closed would turn a request
        # that never ran into an unknown outcome.
        self._client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 2.0)),
            limits=httpx2.Limits(max_keepalive_connections=32, keepalive_expiry=KEEPALIVE_EXPIRY),
        )
        self.forwarded = 0

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()

    async def call(
        self, address: str, receiver: str, type: str, key: str, method: str, args: dict[str, Any]
    ) -> Any:
        """Run ``method`` on the owner; return its JSON result or raise what it raised."""
        body = to_json({"type": type, "key": key, "method": method, "args": args})
        headers = self.signer.headers("POST", CALL_PATH, body, receiver)
        headers["content-type"] = "application/json"
        httpx2 = self._httpx
        try:
            response = await self._client.post(address + CALL_PATH, content=body, headers=headers)
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
            raise Moved(f"{address} refused the connection: {exc!r}") from exc
        except Exception as exc:  # httpx2.HTTPError, or a transport's own error mid-request
            raise OutcomeUnknown(
                f"{type}:{key}.{method}() was sent to its owner {receiver} at {address} and the "
                f"connection failed before the answer ({exc!r}): it may or may not have run"
            ) from exc
        self.forwarded += 1
        if response.status_code == 421:
            try:
                found = from_json(response.content).get("error", {})
            except (ValueError, AttributeError):
                found = {}
            raise Moved(
                f"{receiver} does not own {type}:{key}", found.get("owner"), found.get("address")
            )
        try:
            reply = from_json(response.content)
        except ValueError:
            reply = None
        if response.status_code != 200 or not isinstance(reply, dict):
            raise ForwardFailed(
                f"{receiver} at {address} answered {response.status_code} to a forwarded call: "
                f"{response.text[:200]}"
            )
        if reply.get("ok"):
            return reply.get("result")
        raise rebuild_error(reply.get("error") or {})
