"""Helpers shared by the image and code routers: shaping replies (service/intake.py reads requests)."""

from __future__ import annotations

import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response

from service import imaging
from service.ood import Outcome
from service.registry import Model, Registry


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "").lower()


def pixels_body(model: Model, image: np.ndarray, ood: Outcome | None = None, i: int = 0) -> dict[str, object]:
    """The JSON form of one [28, 28] (or [1, 28, 28]) image, with image ``i``'s score of ``ood``."""
    pixels = np.asarray(image, dtype=np.float32).reshape(imaging.SIDE, imaging.SIDE)
    body: dict[str, object] = {
        "model": model.id,
        "shape": [imaging.SIDE, imaging.SIDE],
        "pixels": pixels.tolist(),
    }
    if ood is not None:
        body["ood"] = ood.field(i)
    return body


def image_response(request: Request, model: Model, image: np.ndarray, ood: Outcome | None = None) -> Response:
    """PNG (the score in headers), or JSON pixels (the score a field) for ``Accept: application/json``."""
    if wants_json(request):
        return JSONResponse(pixels_body(model, image, ood))
    png = imaging.encode_png(np.asarray(image).reshape(imaging.SIDE, imaging.SIDE))
    headers = {"X-Model": model.id, **(ood.headers() if ood is not None else {})}
    return Response(png, media_type="image/png", headers=headers)


def model_with_code(registry: Registry, model_id: str | None) -> Model:
    """The model, or 422 when it has no encoder/decoder (a ``unet``)."""
    model = registry.get(model_id)
    if not model.has_code:
        raise HTTPException(
            422,
            f"model {model.id!r} (arch {model.arch}) has no latent code, so it cannot encode or decode; "
            f"models with codes: {', '.join(registry.with_codes())}",
        )
    return model
