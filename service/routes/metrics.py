"""GET /metrics: Prometheus text exposition of the app's own registry."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from service.deps import StateDep
from service.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(state: StateDep) -> Response:
    for name, batcher in state.batchers.items():
        state.metrics.queue_depth.labels(name).set(batcher.depth)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
