"""Codes in: POST /decode and /decode/batch."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from service.deps import ReadyState
from service.intake import check_identity_encoding, code_array
from service.registry import DECODER
from service.routes._io import image_response, model_with_code, pixels_body
from service.schemas import DecodeBatchRequest, DecodeRequest, ErrorResponse, PixelsResponse


class _UncompressedBodyRoute(APIRoute):
    """Refuses a compressed body (415) before FastAPI reads it as JSON; nothing here inflates one."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            check_identity_encoding(request)
            return await handler(request)

        return handle


router = APIRouter(tags=["codes"], route_class=_UncompressedBodyRoute)

ModelQuery = Annotated[
    str | None,
    Query(description="model id, when the body names none; AE_DEFAULT_CODE_MODEL when neither does"),
]
# 400: FastAPI's own answer to a body it cannot even read as text ("There was an error parsing the body").
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503)
}


@router.post(
    "/decode",
    response_class=Response,
    responses={
        200: {
            "content": {
                "image/png": {},
                "application/json": {"schema": {"$ref": "#/components/schemas/PixelsResponse"}},
            }
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
