"""Where an object that no node holds is activated (the class's ``placement``).

- ``"local"``: on the node the first call lands on (no coordination at all);
- ``"hash"``: on the live node that rendezvous hashing picks for ``type:key``: every node
  computes the same choice from the same node list, and a node joining or leaving moves only
  the keys it wins or held;
- ``"region"``: on a live node of the class's ``region`` (hashed among them), else locally.

Placement decides only where an *unowned* object goes: an object stays with its owner until
it hibernates or the owner dies, as an Orleans grain stays with its activation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..storage import NodeInfo

if TYPE_CHECKING:
    from .object import DurableObject


def _score(node_id: str, ident: str) -> int:
    digest = hashlib.blake2b(f"{node_id}\x00{ident}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(ident: str, nodes: Iterable[str]) -> str | None:
    """The node with the highest score for ``ident`` (``None`` when there is none)."""
    return max(nodes, key=lambda node: _score(node, ident), default=None)


def choose(
    cls: type[DurableObject[Any]], key: str, me: str, live: dict[str, NodeInfo]
) -> NodeInfo | None:
    """The node to activate ``(cls, key)`` on, or ``None`` for this one."""
    if cls.placement == "local":
        return None
    candidates = {n.node_id: n for n in live.values() if n.address is not None}
    if cls.placement == "region":
        candidates = {i: n for i, n in candidates.items() if n.region == cls.region}
    if me in live and (cls.placement == "hash" or live[me].region == cls.region):
        candidates[me] = live[me]
    target = rendezvous(f"{cls.type_name}:{key}", candidates)
    return None if target is None or target == me else candidates[target]
