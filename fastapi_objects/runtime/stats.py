"""What a node counts: running totals and the snapshot ``Runtime.stats()`` returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    """Running totals since start."""

    thaws: int = 0
    hibernations: int = 0
    turns: int = 0
    conflicts: int = 0
    relayed: int = 0
    evictions: int = 0
    expired: int = 0



@dataclass(frozen=True)
class RuntimeStats:
    """A snapshot of what this node's runtime holds and has done (see ``Runtime.stats``)."""

    active: int
    thaws: int
    hibernations: int
    turns: int
    commits: int
    batches: int
    conflicts: int
    forwarded: int = 0
    """Calls this node sent to the owner on another node."""
    takeovers: int = 0
    """Objects this node claimed after another node had owned them."""
    relayed: int = 0
    """Websocket clients attached here through another node's relay."""
    evictions: int = 0
    """Objects hibernated before their idle timeout to make room (``max_active``)."""
    expired: int = 0
    """Objects this node deleted because they were idle past their ``expire_after``."""
    sleeping: int = 0
    """Websocket clients open here whose objects hibernated (``hibernate_with_clients``)."""
