"""Codes in: POST /decode and /decode/batch."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from service.calls import Call, Reply, json_reply
from service.core import WorkRoute
from service.intake import code_rows
from service.registry import DECODER
from service.routes._route import RequestOnlyRoute, endpoint
from service.routes.images import image_reply, model_with_code, pixels_body
from service.schemas import DecodeBatchRequest, DecodeRequest, ErrorResponse, PixelsResponse

# The request core answers these routes (service/core.py); FastAPI declares them for the schema.
router = APIRouter(tags=["codes"], route_class=RequestOnlyRoute)

_MODEL_QUERY: list[dict[str, Any]] = [
    {
        "name": "model",
        "in": "query",
        "required": False,
        "description": "model id, when the body names none; AE_DEFAULT_CODE_MODEL when neither does",
        "schema": {"type": "string"},
    }
]
# 400: a body that is not JSON.
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503)
}


def _body(schema: type[DecodeRequest] | type[DecodeBatchRequest]) -> dict[str, Any]:
    return {
        "parameters": _MODEL_QUERY,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema.model_json_schema()}},
        },
    }


async def _decode(call: Call, *, batch: bool) -> tuple[Any, Any]:
    model_id, codes = call.state.intake.codes(call.body, call.header("content-encoding"), batch=batch)
    chosen = model_with_code(call.state.registry, model_id or call.query("model"))
    images = await call.state.infer(chosen, DECODER, code_rows(codes, chosen))
    return chosen, images


async def decode(call: Call) -> Reply:
    """The image a code decodes to."""
    chosen, images = await _decode(call, batch=False)
    return image_reply(call, chosen, images[0])


async def decode_batch(call: Call) -> Reply:
    """The images several codes decode to; one per code, in order."""
    chosen, images = await _decode(call, batch=True)
    return json_reply([pixels_body(chosen, image) for image in images])


WORK = [WorkRoute("POST", "/decode", decode), WorkRoute("POST", "/decode/batch", decode_batch)]

router.post(
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
    openapi_extra=_body(DecodeRequest),
    summary="The image a code decodes to",
)(endpoint(decode))
router.post(
    "/decode/batch",
    response_model=list[PixelsResponse],
    responses=_ERRORS,
    openapi_extra=_body(DecodeBatchRequest),
    summary="The images several codes decode to; one per code, in order",
)(endpoint(decode_batch))
