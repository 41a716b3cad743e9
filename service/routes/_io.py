"""Helpers shared by the image and code routers: shaping replies (service/intake.py reads requests)."""

from __future__ import annotations

import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response

from service import imaging
from service.registry import Model, Registry


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "").lower()


def pixels_body(model: Model, image: np.ndarray) -> dict[str, object]:
    """The JSON form of one [28, 28] (or [1, 28, 28]) image."""
    pixels = np.asarray(image, dtype=np.float32).reshape(imaging.SIDE, imaging.SIDE)
    return {"model": model.id, "shape": [imaging.SIDE, imaging.SIDE], "pixels": pixels.tolist()}


def image_response(request: Request, model: Model, image: np.ndarray) -> Response:
    """PNG, or JSON pixels when the client asks for ``application/json``."""
    if wants_json(request):
        return JSONResponse(pixels_body(model, image))
    png = imaging.encode_png(np.asarray(image).reshape(imaging.SIDE, imaging.SIDE))
    return Response(png, media_type="image/png", headers={"X-Model": model.id})


def model_with_code(registry: Registry, model_id: str | None) -> Model:
    """The model (None: the default for codes), or 422 when it has no encoder/decoder or there is none."""
    reason = registry.no_code_reason(model_id)
    if reason is not None:
        raise HTTPException(422, reason)
    return registry.get(model_id if model_id is not None else registry.default_code_model)
