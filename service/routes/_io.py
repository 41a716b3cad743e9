"""Helpers shared by the image and code routers: reading uploads, shaping replies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from service import imaging
from service.config import Settings
from service.multipart import MultipartError, TooManyParts, parse_multipart
from service.registry import Model, Registry

# Decoding a 28×28 image takes well under a millisecond; larger ones (resize=true) move off the loop.
_INLINE_DECODE_PIXELS = 64 * 64
_ACCEPTED_PART_TYPES = ("image/", "application/octet-stream")
# Form fields other than the files a request may carry (ignored, but parsed).
_SPARE_PARTS = 16


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _unsupported(media: str) -> HTTPException:
    return HTTPException(
        415,
        f"unsupported media type {media or '(none)'!r}: send the image as multipart/form-data field "
        "'file', or as the raw body with an image/* Content-Type (e.g. image/png)",
    )


def _files_hint(limit: int, batch: bool) -> str:
    return f"at most {limit} per request (AE_MAX_BATCH_ITEMS)" if batch else "one; use the /batch endpoint"


async def read_uploads(request: Request, settings: Settings, *, batch: bool) -> list[Upload]:
    """The image(s) of a request: multipart field ``file`` (``files`` too for batches) or the raw body."""
    media = _media_type(request.headers.get("content-type"))
    if media.startswith("image/") or media == "application/octet-stream":
        return [Upload(await request.body(), None)]
    if media != "multipart/form-data":
        raise _unsupported(media)
    fields = ("file", "files") if batch else ("file",)
    limit = settings.max_batch_items if batch else 1
    try:
        # Parts beyond the limit (plus room for a few text fields) are refused while parsing.
        parts = parse_multipart(await request.body(), request.headers["content-type"], limit + _SPARE_PARTS)
    except TooManyParts as exc:
        raise HTTPException(422, f"{exc}; {_files_hint(limit, batch)}") from None
    except MultipartError as exc:
        raise HTTPException(400, str(exc)) from None
    uploads: list[Upload] = []
    for part in parts:
        if part.name not in fields:
            continue
        if part.filename is None:
            raise HTTPException(422, f"form field {fields[0]!r} must be a file upload, not a text value")
        part_media = _media_type(part.content_type)
        if part_media and not part_media.startswith(_ACCEPTED_PART_TYPES):
            raise _unsupported(part_media)
        uploads.append(Upload(part.data, part.filename))
    if not uploads:
        names = " or ".join(repr(f) for f in fields)
        raise HTTPException(422, f"the multipart body has no file field {names}")
    if len(uploads) > limit:
        raise HTTPException(422, f"{len(uploads)} files sent; {_files_hint(limit, batch)}")
    return uploads


async def decode_upload(upload: Upload, settings: Settings, *, resize: bool, invert: bool) -> np.ndarray:
    """One upload → float32 [28, 28]; imaging errors propagate (errors.py maps them)."""
    common = imaging.decode_common(upload.data, invert=invert)
    if common is not None:
        return common
    image = imaging.open_image(upload.data, settings.max_pixels)
    if image.width * image.height <= _INLINE_DECODE_PIXELS:
        return imaging.to_array(image, resize=resize, invert=invert)
    return await run_in_threadpool(imaging.to_array, image, resize=resize, invert=invert)


async def decode_uploads(
    uploads: list[Upload], settings: Settings, *, resize: bool, invert: bool
) -> np.ndarray:
    """Uploads → float32 [n, 1, 28, 28]; an error names the file it comes from when there are several."""
    images = []
    for index, upload in enumerate(uploads):
        try:
            images.append(await decode_upload(upload, settings, resize=resize, invert=invert))
        except imaging.ImageError as exc:
            if len(uploads) == 1:
                raise
            name = f" ({upload.filename})" if upload.filename else ""
            raise type(exc)(f"file {index}{name}: {exc}") from exc
    return np.stack(images)[:, None]


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
    """The model, or 422 when it has no encoder/decoder (a ``unet``)."""
    model = registry.get(model_id)
    if not model.has_code:
        raise HTTPException(
            422,
            f"model {model.id!r} (arch {model.arch}) has no latent code, so it cannot encode or decode; "
            f"models with codes: {', '.join(registry.with_codes())}",
        )
    return model
