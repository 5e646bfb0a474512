"""``fly-replay``: on Fly.io, send a request to the machine that owns its object.

With ``fly_replay`` on, a request or websocket upgrade that lands on a machine which does not
own its object is answered ``421`` with the header ``fly-replay: instance=<owner's machine>``;
Fly's proxy then replays it there, so the call runs on the owner without a hop through this
node. A replayed request (it carries ``fly-replay-src``) is never replayed again, and bodies
over 1 MB (Fly replays none) are forwarded as usual. An object placed by ``region`` that is
outside this node's region gets ``fly-replay: region=<region>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers

if TYPE_CHECKING:
    from ..runtime.object import DurableObject
    from .objects import Objects

MAX_REPLAY_BODY = 1 << 20
REPLAY_STATUS = 421


def replay_target(
    objects: Objects, cls: type[DurableObject[Any]], key: str, headers: Headers
) -> str | None:
    """The ``fly-replay`` value for this request, or ``None`` to serve it here."""
    settings = objects.settings
    if not settings.fly_replay or "fly-replay-src" in headers:
        return None
    if int(headers.get("content-length") or 0) > MAX_REPLAY_BODY:
        return None
    if cls.placement == "region" and settings.region != cls.region:
        return f"region={cls.region}"
    gateway = objects.runtime.gateway
    owner = gateway.locate(cls, key)
    if owner is None:
        return None
    machine = gateway.machine_of(owner.node_id)
    if machine is None or machine == settings.machine:
        return None  # unknown machine: forward instead
    return f"instance={machine}"
