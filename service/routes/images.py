"""Images in: POST /denoise, /encode and their /batch variants."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from service import imaging
from service.calls import Call, Reply, json_reply
from service.core import WorkRoute
from service.errors import BadParameter, NoCode
from service.registry import AUTOENCODER, ENCODER, Model, Registry
from service.routes._route import RequestOnlyRoute, endpoint
from service.schemas import CodeResponse, ErrorResponse, PixelsResponse

# The request core answers these routes (service/core.py); FastAPI declares them for the OpenAPI
# schema, which documents their parameters and bodies (_PARAMETERS, _IMAGE_BODY).
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
]


def _flag(call: Call, name: str) -> bool:
    value = call.query(name)
    if value is None:
        return False
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        raise BadParameter(f"query parameter {name!r} must be true or false, not {value[:40]!r}") from None


def model_with_code(registry: Registry, model_id: str | None) -> Model:
    """The model, or 422 when it has no encoder/decoder (a ``unet`` or ``s2d``)."""
    model = registry.get(model_id or registry.default_code_model)
    if not model.has_code:
        raise NoCode(
            f"model {model.id!r} (arch {model.arch}) has no latent code, so it cannot encode or decode; "
            f"models with codes: {', '.join(registry.with_codes()) or 'none'}"
        )
    return model


def pixels_body(model: Model, image: np.ndarray) -> dict[str, object]:
    """The JSON form of one [28, 28] (or [1, 28, 28]) image."""
    pixels = np.asarray(image, dtype=np.float32).reshape(imaging.SIDE, imaging.SIDE)
    return {"model": model.id, "shape": [imaging.SIDE, imaging.SIDE], "pixels": pixels.tolist()}


def image_reply(call: Call, model: Model, image: np.ndarray) -> Reply:
    """PNG, or JSON pixels when the client asks for ``application/json``."""
    if call.wants_json:
        return json_reply(pixels_body(model, image))
    png = imaging.encode_png(np.asarray(image).reshape(imaging.SIDE, imaging.SIDE))
    return Reply(png, "image/png", {"X-Model": model.id})


async def _images(call: Call, *, batch: bool, needs_code: bool) -> tuple[Model, np.ndarray]:
    """What every image route shares: the model, then the decoded uploads."""
    registry = call.state.registry
    model_id = call.query("model") or None
    chosen = model_with_code(registry, model_id) if needs_code else registry.get(model_id)
    resize, invert = _flag(call, "resize"), _flag(call, "invert")
    images = await call.state.intake.images(
        call.body,
        call.header("content-type"),
        call.header("content-encoding"),
        batch=batch,
        resize=resize,
        invert=invert,
    )
    return chosen, images


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
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503)
}


def _code_body(model: Model, code: np.ndarray) -> dict[str, object]:
    return {"model": model.id, "shape": list(model.code_shape or ()), "code": code.reshape(-1).tolist()}


async def denoise(call: Call) -> Reply:
    """Denoise one 28×28 image."""
    chosen, images = await _images(call, batch=False, needs_code=False)
    output = await call.state.infer(chosen, AUTOENCODER, images)
    return image_reply(call, chosen, output[0])


async def denoise_batch(call: Call) -> Reply:
    """Denoise several images; one result per file, in order."""
    chosen, images = await _images(call, batch=True, needs_code=False)
    outputs = await call.state.infer(chosen, AUTOENCODER, images)
    return json_reply([pixels_body(chosen, out) for out in outputs])


async def encode(call: Call) -> Reply:
    """The latent code of one image."""
    chosen, images = await _images(call, batch=False, needs_code=True)
    codes = await call.state.infer(chosen, ENCODER, images)
    return json_reply(_code_body(chosen, codes[0]))


async def encode_batch(call: Call) -> Reply:
    """The latent codes of several images; one per file, in order."""
    chosen, images = await _images(call, batch=True, needs_code=True)
    codes = await call.state.infer(chosen, ENCODER, images)
    return json_reply([_code_body(chosen, code) for code in codes])


WORK = [
    WorkRoute("POST", "/denoise", denoise),
    WorkRoute("POST", "/denoise/batch", denoise_batch),
    WorkRoute("POST", "/encode", encode),
    WorkRoute("POST", "/encode/batch", encode_batch),
]

_PNG_OR_PIXELS = {
    "content": {"image/png": {}, "application/json": {"schema": PixelsResponse.model_json_schema()}}
}
router.post(
    "/denoise",
    response_class=Response,
    responses={200: _PNG_OR_PIXELS, **_ERRORS},
    openapi_extra=_IMAGE_BODY,
    summary="Denoise one 28×28 image",
)(endpoint(denoise))
router.post(
    "/denoise/batch",
    response_model=list[PixelsResponse],
    responses=_ERRORS,
    openapi_extra=_BATCH_BODY,
    summary="Denoise several images; one result per file, in order",
)(endpoint(denoise_batch))
router.post(
    "/encode",
    response_model=CodeResponse,
    responses=_ERRORS,
    openapi_extra=_IMAGE_BODY,
    summary="The latent code of one image",
)(endpoint(encode))
router.post(
    "/encode/batch",
    response_model=list[CodeResponse],
    responses=_ERRORS,
    openapi_extra=_BATCH_BODY,
    summary="The latent codes of several images; one per file, in order",
)(endpoint(encode_batch))
