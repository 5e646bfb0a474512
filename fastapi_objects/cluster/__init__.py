"""Nodes, ownership and forwarding: one live instance per object across processes and machines.

- ``node.py``: registration, heartbeats, and the lease that lets a node serve;
- ``death.py``: proving a crashed node of the same machine dead, so as not to wait ``node_ttl``;
- ``signing.py``: HMAC signatures of internal requests;
- ``secret.py``: the key they are signed with (set, or the cluster's own in the database);
- ``channel.py``: the call channel between two nodes (a signed websocket, many calls on it);
- ``forward.py``: the client that sends a call to the object's owner over a channel;
- ``listener.py``: the internal listener that receives channels and relayed websockets
  (``_uvicorn.py``: the uvicorn server under it, quiet and bounded against floods).

The database is the only source of truth: ownership is a row with a fencing epoch, and every
commit is fenced by that epoch (storage/_owners.py, storage/_writes.py).
"""

from __future__ import annotations

from .forward import Forwarder, Moved
from .listener import Listener, is_loopback
from .node import ClusterNode
from .secret import ClusterSecret
from .signing import Signer, Unauthorized

__all__ = [
    "ClusterNode",
    "ClusterSecret",
    "Forwarder",
    "Listener",
    "Moved",
    "Signer",
    "Unauthorized",
    "is_loopback",
]
