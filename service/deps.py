"""FastAPI dependencies shared by the routers, as ``Annotated`` types."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.state import ServiceState

# The dependencies are `async def` although they never await: FastAPI runs plain `def` dependencies
# in a worker thread, a thread hop per dependency per request for a few attribute reads.


async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def ready_state(state: StateDep) -> ServiceState:
    """The state, or 503 + Retry-After while the models are still loading (or already unloading)."""
    if not state.ready:
        state.metrics.rejections.labels("not_ready").inc()
        raise HTTPException(503, "not ready: the models are loading", headers={"Retry-After": "1"})
    return state


ReadyState = Annotated[ServiceState, Depends(ready_state)]


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_api_key(request: Request, state: StateDep) -> None:
    """401 unless the request carries AE_API_KEY (``X-API-Key`` or ``Authorization: Bearer``)."""
    expected = state.settings.api_key
    if expected is None:
        return
    presented = _presented_key(request)
    # compare_digest: the time taken must not reveal how much of a guess was right.
    if presented is None or not hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
        state.metrics.rejections.labels("unauthorized").inc()
        detail = "missing API key" if presented is None else "wrong API key"
        raise HTTPException(
            401,
            f"{detail}: send it as X-API-Key or Authorization: Bearer",
            headers={"WWW-Authenticate": "Bearer"},
        )
