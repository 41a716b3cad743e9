"""GET /healthz (liveness) and /readyz (readiness, with the execution providers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import StateDep
from service.schemas import ErrorResponse, ReadyResponse, StatusResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=StatusResponse, summary="200 while the process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={503: {"model": ErrorResponse}},
    summary="200 once every model is loaded and warmed up; 503 before",
)
async def readyz(state: StateDep) -> JSONResponse:
    if not state.ready:
        return JSONResponse(
            {"detail": "not ready: the models are loading"}, status_code=503, headers={"Retry-After": "1"}
        )
    registry = state.registry
    body = ReadyResponse(
        status="ready",
        provider=registry.get().provider,
        providers=registry.providers,
        models={model.id: model.provider for model in registry},
    )
    return JSONResponse(body.model_dump())
