"""HMAC-SHA256 signatures of internal requests between nodes.

A request carries who sent it, whom it is for, when, a nonce and a signature over all of that
plus the method, the path and the body. The receiver refuses (401) a request that is
unsigned, signed with another secret, addressed to another node, older than ``max_age``
seconds or from the future, or whose nonce it has already seen: a captured request cannot be
replayed, to this node or to another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER_FROM = "x-objects-from"
HEADER_TO = "x-objects-to"
HEADER_TIME = "x-objects-time"
HEADER_NONCE = "x-objects-nonce"
HEADER_SIGNATURE = "x-objects-signature"
HEADER_CARRIED = "x-objects-carried"
"""What a signed websocket upgrade carries for the receiver (a relayed client's query and
auth, base64 JSON): a header, never the URL, which servers log; signed as the body."""


class Unauthorized(Exception):
    """An internal request failed verification; the message says why (for the 401 body)."""


class Misdirected(Unauthorized):
    """A well-signed request for another node (answered 421: the sender looks again).

    The address now belongs to a different node: the one meant stopped, and another process
    took its port. The answer names no node: the sender knows whom it meant.
    """


class Signer:
    """Signs this node's requests and verifies the ones it receives."""

    def __init__(self, secret: bytes | None, node_id: str, max_age: float = 30.0) -> None:
        self.secret = secret  # None until the node knows it (secret.py): it signs nothing
        self.node_id = node_id
        self.max_age = max_age
        # nonce -> when it stops mattering; insertion order is (nearly) expiry order, so the
        # expired ones are dropped from the front in O(expired), not by rebuilding the dict.
        self._seen: dict[str, float] = {}

    def _mac(self, method: str, path: str, body: bytes, sender: str, receiver: str,
             stamp: str, nonce: str) -> str:
        message = b"\n".join(
            part.encode() for part in (method.upper(), path, sender, receiver, stamp, nonce)
        )
        if self.secret is None:
            raise Unauthorized("this node does not know the cluster's secret yet")
        return hmac.new(self.secret, message + b"\n" + body, hashlib.sha256).hexdigest()

    def headers(self, method: str, path: str, body: bytes, receiver: str) -> dict[str, str]:
        """The headers that sign a request from this node to ``receiver``."""
        stamp = f"{time.time():.3f}"
        nonce = secrets.token_hex(16)
        return {
            HEADER_FROM: self.node_id, HEADER_TO: receiver, HEADER_TIME: stamp,
            HEADER_NONCE: nonce,
            HEADER_SIGNATURE: self._mac(method, path, body, self.node_id, receiver, stamp, nonce),
        }

    def verify(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> str:
        """Check a received request; return the sender's node id or raise ``Unauthorized``."""
        try:
            sender, receiver = headers[HEADER_FROM], headers[HEADER_TO]
            stamp, nonce, signature = (
                headers[HEADER_TIME], headers[HEADER_NONCE], headers[HEADER_SIGNATURE]
            )
        except KeyError as exc:
            raise Unauthorized(f"unsigned internal request (no {exc.args[0]} header)") from None
        expected = self._mac(method, path, body, sender, receiver, stamp, nonce)
        # compare_digest takes ASCII text only (a header of other bytes made it raise).
        if not signature.isascii() or not hmac.compare_digest(expected, signature):
            raise Unauthorized("bad signature: is OBJECTS_CLUSTER_SECRET the same on every node?")
        if receiver != self.node_id:
            raise Misdirected("this request is for another node (it stopped; look again)")
        try:
            sent = float(stamp)
        except ValueError:
            raise Unauthorized("malformed timestamp") from None
        now = time.time()
        if abs(now - sent) > self.max_age:
            raise Unauthorized(f"request is {now - sent:.0f}s old (limit {self.max_age:.0f}s)")
        self._forget_old(now)
        if nonce in self._seen:
            raise Unauthorized("replayed request (nonce already seen)")
        self._seen[nonce] = sent + self.max_age
        return sender

    def _forget_old(self, now: float) -> None:
        seen = self._seen
        while seen:
            nonce = next(iter(seen))
            if seen[nonce] > now:
                break
            del seen[nonce]
