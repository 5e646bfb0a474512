"""``GET /metrics``: a node's Prometheus families in the text format (the ``prometheus`` extra).

The families come from ``Runtime.metrics()`` (listed in ``runtime/prometheus.py``), in a
registry of this router's own: nothing is added to prometheus-client's global ``REGISTRY``
(the app's own metrics stay the app's). Like the inspector, it never mounts unprotected by
accident: it needs ``dependencies`` that guard it, or ``public=True`` said on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.responses import Response

if TYPE_CHECKING:
    from ..runtime import Runtime


def metrics_router(
    runtime: Runtime, path: str, dependencies: Sequence[Any] | None, public: bool
) -> APIRouter:
    """A router serving ``runtime``'s families at ``path`` (see ``Objects.metrics_router``)."""
    if not dependencies and not public:
        raise ValueError(
            "metrics_router() serves this node's metrics to whoever asks: pass "
            "dependencies=[Depends(...)] that guard it (a token, an internal network check), or "
            "public=True to serve them to anyone on purpose"
        )
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    collector = runtime.metrics()  # MissingDependency without the extra, before any request
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    router = APIRouter(dependencies=list(dependencies or ()), tags=["objects"])

    @router.get(path, include_in_schema=False)
    async def objects_metrics() -> Response:
        await collector.refresh()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
