"""The forwarding client: a call on a node that does not own the object goes to its owner.

Calls travel over one call channel per peer (``channel.py``: a signed websocket, many calls in
flight). One rule keeps forwarding from ever applying a call twice: a forward is retried only
when it cannot have run — the connection was refused, the owner answered 421 (it no longer
owns the object, or is leaving) before running anything, or it closed the channel saying it
ran nothing. Any other failure after the call was sent is ``OutcomeUnknown``: the caller is
told, never silently retried.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._exceptions import ForwardFailed, ObjectsError, OutcomeUnknown, RemoteError
from .channel import CHANNEL_PATH, Channel, ChannelClosed
from .signing import Signer, Unauthorized

# What a client hears when a call could not be forwarded; which node, where and why go to the
# log (ObjectsError.hiding): nodes' ids and private addresses are not for clients.
_NOT_HANDED = "the call could not be handed to the node that owns the object, and did not run"


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
    """Sends calls to other nodes' internal listeners, over one call channel per peer."""

    def __init__(self, signer: Signer, timeout: float) -> None:
        self.signer = signer
        self.timeout = timeout
        self.forwarded = 0
        self._channels: dict[tuple[str, str], Channel] = {}
        self._opening: dict[tuple[str, str], asyncio.Future[Channel]] = {}

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)

    async def _channel(self, address: str, receiver: str) -> Channel:
        peer = (address, receiver)
        channel = self._channels.get(peer)
        if channel is not None and channel.usable:
            return channel
        opening = self._opening.get(peer)
        if opening is None:  # one connection per peer, however many calls wait for it
            opening = asyncio.ensure_future(self._open(address, receiver))
            self._opening[peer] = opening
            opening.add_done_callback(lambda _: self._opening.pop(peer, None))
        channel = await asyncio.shield(opening)
        self._channels[peer] = channel
        return channel

    async def _open(self, address: str, receiver: str) -> Channel:
        import websockets
        from websockets.asyncio.client import connect

        try:
            headers = self.signer.headers("GET", CHANNEL_PATH + "?", b"", receiver)
        except Unauthorized as exc:  # this node does not know the cluster's secret yet
            raise ForwardFailed.hiding(_NOT_HANDED, exc) from exc
        url = "ws" + address.removeprefix("http") + CHANNEL_PATH
        try:  # replies of any size (the peer is authenticated); calls are checked when sent
            websocket = await connect(
                url, additional_headers=headers, max_size=None, compression=None,
                open_timeout=min(self.timeout, 2.0), user_agent_header=None,
            )
        except websockets.InvalidStatus as exc:
            response = exc.response
            if response.status_code == 401:
                raise ForwardFailed.hiding(
                    _NOT_HANDED, f"{receiver} at {address} refused this node's call channel: "
                    f"{response.body.decode(errors='replace')[:200]}"
                ) from exc
            raise Moved(f"{address} refused a call channel ({response.status_code})") from exc
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise Moved(f"{address} refused the connection: {exc!r}") from exc
        peer = (address, receiver)

        def closed(channel: Channel) -> None:
            if self._channels.get(peer) is channel:
                del self._channels[peer]

        return Channel(websocket, closed)

    async def call(
        self, address: str, receiver: str, type: str, key: str, method: str, args: dict[str, Any]
    ) -> Any:
        """Run ``method`` on the owner; return its JSON result or raise what it raised."""
        request = {"type": type, "key": key, "method": method, "args": args}
        channel = await self._channel(address, receiver)  # Moved when it cannot connect
        try:
            async with asyncio.timeout(self.timeout):
                reply = await channel.call(request)
        except ChannelClosed as exc:
            if exc.ran_nothing:
                raise Moved(f"{receiver} at {address}: {exc}") from exc
            raise OutcomeUnknown.hiding(
                f"{type}:{key}.{method}() was sent to the object's owner, whose channel closed "
                "before the answer: it may or may not have run", f"{receiver} at {address}: {exc}"
            ) from exc
        except TimeoutError as exc:
            raise OutcomeUnknown.hiding(
                f"{type}:{key}.{method}() was sent to the object's owner, which did not answer "
                f"within {self.timeout:g}s: it may or may not have run", f"{receiver} at {address}"
            ) from exc
        self.forwarded += 1
        status = reply.get("status")
        if status == 421:
            found = reply.get("error") or {}
            raise Moved(
                f"{receiver} does not own {type}:{key}", found.get("owner"), found.get("address")
            )
        if status != 200:
            raise ForwardFailed.hiding(
                _NOT_HANDED, f"{receiver} at {address} answered {status} to a forwarded call: "
                f"{str(reply.get('error'))[:200]}"
            )
        if reply.get("ok"):
            return reply.get("result")
        raise rebuild_error(reply.get("error") or {})
