"""Images in: POST /denoise, /encode and their /batch variants."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from service import imaging, ood
from service.calls import Call, Reply, json_reply
from service.core import WorkRoute
from service.errors import BadParameter, NoCode
from service.registry import AUTOENCODER, ENCODER, Model, Registry
from service.routes._route import RequestOnlyRoute, endpoint
from service.schemas import CodeResponse, ErrorResponse, OodRefusal, PixelsResponse

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
    {
        "name": ood.REJECT_PARAMETER,
        "in": "query",
        "required": False,
        "description": "answer 422 with the out-of-distribution scores instead of a result when an "
        "input is past the model's threshold (docs/api.md)",
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
    """The model, or 422 when it has no encoder/decoder (a ``unet`` or ``s2d``), or when none is
    named and AE_DEFAULT_CODE_MODEL is ``none``."""
    model_id = model_id or None
    reason = registry.no_code_reason(model_id)
    if reason is not None:
        raise NoCode(reason)
    return registry.get(model_id if model_id is not None else registry.default_code_model)


def pixels_body(
    model: Model, image: np.ndarray, scored: ood.Outcome | None = None, i: int = 0
) -> dict[str, object]:
    """The JSON form of one [28, 28] (or [1, 28, 28]) image, with image ``i``'s score of ``scored``."""
    pixels = np.asarray(image, dtype=np.float32).reshape(imaging.SIDE, imaging.SIDE)
    body: dict[str, object] = {
        "model": model.id,
        "shape": [imaging.SIDE, imaging.SIDE],
        "pixels": pixels.tolist(),
    }
    if scored is not None:
        body["ood"] = scored.field(i)
    return body


def image_reply(call: Call, model: Model, image: np.ndarray, scored: ood.Outcome | None = None) -> Reply:
    """PNG (the score in headers), or JSON pixels (the score a field) for ``Accept: application/json``."""
    if call.wants_json:
        return json_reply(pixels_body(model, image, scored))
    png = imaging.encode_png(np.asarray(image).reshape(imaging.SIDE, imaging.SIDE))
    return Reply(png, "image/png", {"X-Model": model.id, **(scored.headers() if scored is not None else {})})


def _refused(call: Call, model: Model, scored: ood.Outcome | None) -> Reply | None:
    """The 422 answer when the request asked for ``reject_ood`` and an input is an outsider."""
    if not _flag(call, ood.REJECT_PARAMETER):
        return None
    if scored is None:
        raise BadParameter(
            f"no out-of-distribution score for model {model.id!r} (its card has no calibration, or "
            "AE_OOD_SCORES is off): drop reject_ood"
        )
    if not scored.outsiders:
        return None
    reply = json_reply(scored.refusal())
    reply.status = 422
    return reply


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
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 503)
}
# 422: a wrong input, a model without a code, or (reject_ood=true) an input past the threshold.
_ERRORS[422] = {"model": ErrorResponse | OodRefusal}


def _code_body(model: Model, code: np.ndarray, scored: ood.Outcome | None, i: int = 0) -> dict[str, object]:
    body: dict[str, object] = {
        "model": model.id,
        "shape": list(model.code_shape or ()),
        "code": code.reshape(-1).tolist(),
    }
    if scored is not None:
        body["ood"] = scored.field(i)
    return body


async def denoise(call: Call) -> Reply:
    """Denoise one 28×28 image."""
    chosen, images = await _images(call, batch=False, needs_code=False)
    output, batch_scores = await call.state.infer_scored(chosen, AUTOENCODER, images)
    scored = await ood.score(call.state, chosen, "denoise", images, outputs=output, scores=batch_scores)
    return _refused(call, chosen, scored) or image_reply(call, chosen, output[0], scored)


async def denoise_batch(call: Call) -> Reply:
    """Denoise several images; one result per file, in order."""
    chosen, images = await _images(call, batch=True, needs_code=False)
    outputs, batch_scores = await call.state.infer_scored(chosen, AUTOENCODER, images)
    scored = await ood.score(call.state, chosen, "denoise", images, outputs=outputs, scores=batch_scores)
    return _refused(call, chosen, scored) or json_reply(
        [pixels_body(chosen, out, scored, i) for i, out in enumerate(outputs)]
    )


async def encode(call: Call) -> Reply:
    """The latent code of one image."""
    chosen, images = await _images(call, batch=False, needs_code=True)
    codes = await call.state.infer(chosen, ENCODER, images)
    scored = await ood.score(call.state, chosen, "encode", images, codes=codes)
    return _refused(call, chosen, scored) or json_reply(_code_body(chosen, codes[0], scored))


async def encode_batch(call: Call) -> Reply:
    """The latent codes of several images; one per file, in order."""
    chosen, images = await _images(call, batch=True, needs_code=True)
    codes = await call.state.infer(chosen, ENCODER, images)
    scored = await ood.score(call.state, chosen, "encode", images, codes=codes)
    return _refused(call, chosen, scored) or json_reply(
        [_code_body(chosen, code, scored, i) for i, code in enumerate(codes)]
    )


WORK = [
    WorkRoute("POST", "/denoise", denoise),
    WorkRoute("POST", "/denoise/batch", denoise_batch),
    WorkRoute("POST", "/encode", encode),
    WorkRoute("POST", "/encode/batch", encode_batch),
]

_PNG_OR_PIXELS = {
    "content": {
        "image/png": {},
        "application/json": {"schema": {"$ref": "#/components/schemas/PixelsResponse"}},
    }
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
