"""Codes in: POST /decode and /decode/batch."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from service.deps import ReadyState
from service.registry import DECODER, Model
from service.routes._io import image_response, model_with_code, pixels_body
from service.schemas import DecodeBatchRequest, DecodeRequest, ErrorResponse, PixelsResponse

router = APIRouter(tags=["codes"])

ModelQuery = Annotated[
    str | None,
    Query(description="model id, when the body names none; AE_DEFAULT_CODE_MODEL when neither does"),
]
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# 400: FastAPI's own answer to a body it cannot even read as text ("There was an error parsing the body").
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503)
}


def code_array(code: list[Any], model: Model, where: str = "code") -> np.ndarray:
    """A JSON code (flat, or nested to the code shape) → float32 ``code_shape``; 422 otherwise."""
    shape = model.code_shape or ()
    expected = f"{model.code_size} numbers, flat or nested as {list(shape)}"
    try:
        values = np.asarray(code, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):  # ragged, non-numeric, or an integer beyond float64
        raise HTTPException(422, f"{where} must be {expected} (model {model.id})") from None
    if values.shape not in (shape, (model.code_size,)):
        raise HTTPException(
            422, f"{where} has shape {list(values.shape)}; model {model.id} expects {expected}"
        )
    if not np.isfinite(values).all():
        raise HTTPException(422, f"{where} contains NaN or infinite values; it must be {expected}")
    if np.abs(values).max(initial=0.0) > _FLOAT32_MAX:
        raise HTTPException(422, f"{where} has values beyond the float32 range")
    return values.astype(np.float32).reshape(shape)


@router.post(
    "/decode",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}, "application/json": {"schema": PixelsResponse.model_json_schema()}}
        },
        **_ERRORS,
    },
    summary="The image a code decodes to",
)
async def decode(
    request: Request, body: DecodeRequest, state: ReadyState, model: ModelQuery = None
) -> Response:
    registry = state.registry
    chosen = model_with_code(registry, body.model or model or registry.default_code_model)
    codes = code_array(body.code, chosen)[None]
    images = await state.infer(chosen, DECODER, codes)
    return image_response(request, chosen, images[0])


@router.post(
    "/decode/batch",
    response_model=list[PixelsResponse],
    responses=_ERRORS,
    summary="The images several codes decode to; one per code, in order",
)
async def decode_batch(body: DecodeBatchRequest, state: ReadyState, model: ModelQuery = None) -> Response:
    registry = state.registry
    chosen = model_with_code(registry, body.model or model or registry.default_code_model)
    limit = state.settings.max_batch_items
    if len(body.codes) > limit:
        raise HTTPException(
            422, f"{len(body.codes)} codes sent; at most {limit} per request (AE_MAX_BATCH_ITEMS)"
        )
    codes = np.stack([code_array(code, chosen, f"codes[{i}]") for i, code in enumerate(body.codes)])
    images = await state.infer(chosen, DECODER, codes)
    return JSONResponse([pixels_body(chosen, image) for image in images])
