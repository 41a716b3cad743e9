"""FastAPI dependencies shared by the routers, as ``Annotated`` types, and the checks behind them.

The checks are plain functions too (:func:`work_state`), for the image routes: they take the request
alone and skip FastAPI's dependency solving, the largest part of the framework's cost per request
(docs/benchmarks.md).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.state import ServiceState

# The dependencies are `async def` although they never await: FastAPI runs plain `def` dependencies
# in a worker thread, a thread hop per dependency per request for a few attribute reads.


def service_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def check_ready(state: ServiceState) -> ServiceState:
    """The state, or 503 + Retry-After while the models are still loading (or already unloading)."""
    if not state.ready:
        state.metrics.rejections.labels("not_ready").inc()
        raise HTTPException(503, "not ready: the models are loading", headers={"Retry-After": "1"})
    return state


async def get_state(request: Request) -> ServiceState:
    return service_state(request)


StateDep = Annotated[ServiceState, Depends(get_state)]


async def ready_state(state: StateDep) -> ServiceState:
    return check_ready(state)


ReadyState = Annotated[ServiceState, Depends(ready_state)]


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_api_key(request: Request, state: ServiceState) -> None:
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


async def require_api_key(request: Request, state: StateDep) -> None:
    check_api_key(request, state)


def work_state(request: Request) -> ServiceState:
    """What ``dependencies=[Depends(require_api_key)]`` plus :data:`ReadyState` give, without FastAPI."""
    state = service_state(request)
    check_api_key(request, state)
    return check_ready(state)
