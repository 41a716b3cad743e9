"""POST /admin/reload: load ``models/`` again without a restart and without dropping a request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.deps import ReadyState
from service.errors import ReloadFailed
from service.registry import ModelError
from service.schemas import ErrorResponse, ReloadResponse

router = APIRouter(prefix="/admin", tags=["admin"])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 422, 503)}


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses=_ERRORS,
    summary="Reload every model from AE_MODELS_DIR; on failure the old models keep serving (422 says why)",
)
async def reload(state: ReadyState) -> ReloadResponse:
    try:
        result = await state.reload()
    except ModelError as exc:
        raise ReloadFailed(
            f"reload failed; still serving the previous models (generation {state.generation}): {exc}"
        ) from None
    return ReloadResponse(
        status="reloaded",
        generation=result.generation,
        models=result.models,
        seconds=round(result.seconds, 3),
    )
