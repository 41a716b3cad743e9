"""The readiness and API-key checks, and the FastAPI dependencies of the cold routes built on them.

The checks are plain functions of the headers (:func:`check_api_key`, :func:`check_ready`): the
request core (service/core.py) calls them for the work endpoints without FastAPI; the other routes
get them as ``Annotated`` dependencies. Both raise the service's own errors (service/errors.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReady, Unauthorized
from service.state import ServiceState

# The dependencies are `async def` although they never await: FastAPI runs plain `def` dependencies
# in a worker thread, a thread hop per dependency per request for a few attribute reads.


def check_ready(state: ServiceState) -> ServiceState:
    """The state, or 503 + Retry-After while the models are still loading (or already unloading)."""
    if not state.ready:
        raise NotReady("not ready: the models are loading")
    return state


def _presented_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_api_key(state: ServiceState, headers: Mapping[str, str]) -> None:
    """401 unless the request carries AE_API_KEY (``X-API-Key`` or ``Authorization: Bearer``)."""
    expected = state.settings.api_key
    if expected is None:
        return
    presented = _presented_key(headers)
    # compare_digest: the time taken must not reveal how much of a guess was right.
    if presented is None or not hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
        detail = "missing API key" if presented is None else "wrong API key"
        raise Unauthorized(f"{detail}: send it as X-API-Key or Authorization: Bearer")


async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def ready_state(state: StateDep) -> ServiceState:
    return check_ready(state)


ReadyState = Annotated[ServiceState, Depends(ready_state)]


async def require_api_key(request: Request, state: StateDep) -> None:
    check_api_key(state, request.headers)
