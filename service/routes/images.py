"""Images in: POST /denoise, /encode and their /batch variants."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError

from service import ood
from service.deps import work_state
from service.registry import AUTOENCODER, ENCODER, Model
from service.routes._io import image_response, model_with_code, pixels_body
from service.routes._route import RequestOnlyRoute
from service.schemas import CodeResponse, ErrorResponse, OodRefusal, PixelsResponse
from service.state import ServiceState

# These routes take the request alone and read their query parameters and the API key themselves,
# and FastAPI calls them directly (RequestOnlyRoute): its dependency solving and generic handler cost
# more per request than the PNG decode (docs/benchmarks.md). The OpenAPI schema still documents the
# parameters (_PARAMETERS).
router = APIRouter(tags=["images"], route_class=RequestOnlyRoute)

# The same parsing as every FastAPI-declared boolean elsewhere in the API (pydantic's lax mode).
_BOOL = TypeAdapter(bool)
_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "model",
        "in": "query",
        "required": False,
        "description": "model id (GET /models); when absent, AE_DEFAULT_DENOISE_MODEL for /denoise, "
        "AE_DEFAULT_CODE_MODEL for /encode",
        "schema": {"type": "string"},
    },
    {
        "name": "resize",
        "in": "query",
        "required": False,
        "description": "resize images that are not 28×28 instead of answering 422",
        "schema": {"type": "boolean", "default": False},
    },
    {
        "name": "invert",
        "in": "query",
        "required": False,
        "description": "the input is dark on light: invert it first",
        "schema": {"type": "boolean", "default": False},
    },
    {
        "name": ood.REJECT_PARAMETER,
        "in": "query",
        "required": False,
        "description": "answer 422 with the out-of-distribution scores instead of a result when an "
        "input is past the model's threshold (docs/api.md)",
        "schema": {"type": "boolean", "default": False},
    },
]


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        raise HTTPException(
            422, f"query parameter {name!r} must be true or false, not {value[:40]!r}"
        ) from None


async def _images(
    request: Request, *, batch: bool, needs_code: bool
) -> tuple[ServiceState, Model, np.ndarray]:
    """The checks and inputs every image route shares: key, readiness, model, decoded uploads."""
    state = work_state(request)
    model_id = request.query_params.get("model") or None
    registry = state.registry
    if needs_code:
        chosen = model_with_code(registry, model_id or registry.default_code_model)
    else:
        chosen = registry.get(model_id)
    resize, invert = _flag(request, "resize"), _flag(request, "invert")
    images = await state.intake.images(request, batch=batch, resize=resize, invert=invert)
    return state, chosen, images


_IMAGE_BODY: dict[str, Any] = {
    "parameters": _PARAMETERS,
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
    },
}
_BATCH_BODY: dict[str, Any] = {
    "parameters": _PARAMETERS,
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
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 503)
}
# 422: a wrong input, a model without a code, or (reject_ood=true) an input past the threshold.
_ERRORS[422] = {"model": ErrorResponse | OodRefusal}


def _refused(request: Request, model: Model, outcome: ood.Outcome | None) -> Response | None:
    """The 422 answer when the request asked for ``reject_ood`` and an input is an outsider."""
    if not _flag(request, ood.REJECT_PARAMETER):
        return None
    if outcome is None:
        raise HTTPException(
            422,
            f"no out-of-distribution score for model {model.id!r} (its card has no calibration, or "
            "AE_OOD_SCORES is off): drop reject_ood",
        )
    return JSONResponse(outcome.refusal(), 422) if outcome.outsiders else None


@router.post(
    "/denoise",
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
    openapi_extra=_IMAGE_BODY,
    summary="Denoise one 28×28 image",
)
async def denoise(request: Request) -> Response:
    state, chosen, images = await _images(request, batch=False, needs_code=False)
    output = await state.infer(chosen, AUTOENCODER, images)
    scored = await ood.score(state, chosen, "denoise", images, outputs=output)
    return _refused(request, chosen, scored) or image_response(request, chosen, output[0], scored)


@router.post(
    "/denoise/batch",
    response_model=list[PixelsResponse],
    responses=_ERRORS,
    openapi_extra=_BATCH_BODY,
    summary="Denoise several images; one result per file, in order",
)
async def denoise_batch(request: Request) -> Response:
    state, chosen, images = await _images(request, batch=True, needs_code=False)
    outputs = await state.infer(chosen, AUTOENCODER, images)
    scored = await ood.score(state, chosen, "denoise", images, outputs=outputs)
    return _refused(request, chosen, scored) or JSONResponse(
        [pixels_body(chosen, out, scored, i) for i, out in enumerate(outputs)]
    )


def _code_body(model: Model, code: np.ndarray, scored: ood.Outcome | None, i: int = 0) -> dict[str, object]:
    body: dict[str, object] = {
        "model": model.id,
        "shape": list(model.code_shape or ()),
        "code": code.reshape(-1).tolist(),
    }
    if scored is not None:
        body["ood"] = scored.field(i)
    return body


@router.post(
    "/encode",
    response_model=CodeResponse,
    responses=_ERRORS,
    openapi_extra=_IMAGE_BODY,
    summary="The latent code of one image",
)
async def encode(request: Request) -> Response:
    state, chosen, images = await _images(request, batch=False, needs_code=True)
    codes = await state.infer(chosen, ENCODER, images)
    scored = await ood.score(state, chosen, "encode", images, codes=codes)
    return _refused(request, chosen, scored) or JSONResponse(_code_body(chosen, codes[0], scored))


@router.post(
    "/encode/batch",
    response_model=list[CodeResponse],
    responses=_ERRORS,
    openapi_extra=_BATCH_BODY,
    summary="The latent codes of several images; one per file, in order",
)
async def encode_batch(request: Request) -> Response:
    state, chosen, images = await _images(request, batch=True, needs_code=True)
    codes = await state.infer(chosen, ENCODER, images)
    scored = await ood.score(state, chosen, "encode", images, codes=codes)
    return _refused(request, chosen, scored) or JSONResponse(
        [_code_body(chosen, code, scored, i) for i, code in enumerate(codes)]
    )
