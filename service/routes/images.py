"""Images in: POST /denoise, /encode and their /batch variants."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from service.deps import ReadyState
from service.registry import AUTOENCODER, ENCODER, Model
from service.routes._io import (
    decode_uploads,
    image_response,
    model_with_code,
    pixels_body,
    read_uploads,
)
from service.schemas import CodeResponse, ErrorResponse, PixelsResponse

router = APIRouter(tags=["images"])

ModelQuery = Annotated[str | None, Query(description="model id (GET /models); the default model when absent")]
ResizeQuery = Annotated[bool, Query(description="resize images that are not 28×28 instead of answering 422")]
InvertQuery = Annotated[bool, Query(description="the input is dark on light: invert it first")]

_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["files"],
                }
            }
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503)
}


@router.post(
    "/denoise",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}, "application/json": {"schema": PixelsResponse.model_json_schema()}}
        },
        **_ERRORS,
    },
    openapi_extra=_IMAGE_BODY,
    summary="Denoise one 28×28 image",
)
async def denoise(
    request: Request,
    state: ReadyState,
    model: ModelQuery = None,
    resize: ResizeQuery = False,
    invert: InvertQuery = False,
) -> Response:
    chosen = state.registry.get(model)
    uploads = await read_uploads(request, state.settings, batch=False)
    images = await decode_uploads(uploads, state.settings, resize=resize, invert=invert)
    output = await state.infer(chosen, AUTOENCODER, images)
    return image_response(request, chosen, output[0])


@router.post(
    "/denoise/batch",
    response_model=list[PixelsResponse],
    responses=_ERRORS,
    openapi_extra=_BATCH_BODY,
    summary="Denoise several images; one result per file, in order",
)
async def denoise_batch(
    request: Request,
    state: ReadyState,
    model: ModelQuery = None,
    resize: ResizeQuery = False,
    invert: InvertQuery = False,
) -> Response:
    chosen = state.registry.get(model)
    uploads = await read_uploads(request, state.settings, batch=True)
    images = await decode_uploads(uploads, state.settings, resize=resize, invert=invert)
    outputs = await state.infer(chosen, AUTOENCODER, images)
    return JSONResponse([pixels_body(chosen, out) for out in outputs])


def _code_body(model: Model, code: np.ndarray) -> dict[str, object]:
    return {"model": model.id, "shape": list(model.code_shape or ()), "code": code.reshape(-1).tolist()}


@router.post(
    "/encode",
    response_model=CodeResponse,
    responses=_ERRORS,
    openapi_extra=_IMAGE_BODY,
    summary="The latent code of one image",
)
async def encode(
    request: Request,
    state: ReadyState,
    model: ModelQuery = None,
    resize: ResizeQuery = False,
    invert: InvertQuery = False,
) -> Response:
    chosen = model_with_code(state.registry, model)
    uploads = await read_uploads(request, state.settings, batch=False)
    images = await decode_uploads(uploads, state.settings, resize=resize, invert=invert)
    codes = await state.infer(chosen, ENCODER, images)
    return JSONResponse(_code_body(chosen, codes[0]))


@router.post(
    "/encode/batch",
    response_model=list[CodeResponse],
    responses=_ERRORS,
    openapi_extra=_BATCH_BODY,
    summary="The latent codes of several images; one per file, in order",
)
async def encode_batch(
    request: Request,
    state: ReadyState,
    model: ModelQuery = None,
    resize: ResizeQuery = False,
    invert: InvertQuery = False,
) -> Response:
    chosen = model_with_code(state.registry, model)
    uploads = await read_uploads(request, state.settings, batch=True)
    images = await decode_uploads(uploads, state.settings, resize=resize, invert=invert)
    codes = await state.infer(chosen, ENCODER, images)
    return JSONResponse([_code_body(chosen, code) for code in codes])
