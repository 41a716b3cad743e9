"""Bytes ⇄ arrays for the service: the usual upload's fast path, and PNG encoding for the replies.

The conversion of any image into a model input (decoding, grey levels, transparency, the
``resize=true`` rule) is contract/pixels.py's, shared with training; its names are re-exported
here. The usual upload, an 8-bit grey 28×28 PNG, is read by libspng (``pyspng``) instead, with the
same result; every failure is a subclass of :class:`ImageError`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import pyspng

from contract.pixels import (
    MAX_JPEG_SEGMENTS,
    MAX_PNG_CHUNKS,
    MAX_TIFF_TAGS,
    PNG_SIGNATURE,
    SIDE,
    ImageError,
    ImageTooLarge,
    UndecodableImage,
    WrongImageSize,
    check_png,
    decode_cost,
    open_image,
    to_array,
)
from service import png

__all__ = [
    "MAX_JPEG_SEGMENTS",
    "MAX_PNG_CHUNKS",
    "MAX_TIFF_TAGS",
    "SIDE",
    "ImageError",
    "ImageTooLarge",
    "UndecodableImage",
    "WrongImageSize",
    "decode_common",
    "decode_cost",
    "decode_image",
    "encode_png",
    "open_image",
    "to_array",
    "to_uint8",
    "warm_up",
]

# Signature, then IHDR: length 13, type, width, height, depth, colour, compression, filter, interlace, CRC.
_PNG_HEAD = struct.Struct(">8sI4sIIBBBBBI")
# Chunks that make Pillow's result differ from plain 8-bit grey levels: transparency, animation.
_PNG_SPECIAL = (b"tRNS", b"acTL")


def _is_grey8_28(data: bytes) -> bool:
    """Whether the bytes start like an 8-bit grey 28×28 PNG with a sound IHDR (libspng ignores CRCs)."""
    if len(data) < _PNG_HEAD.size or not data.startswith(PNG_SIGNATURE):
        return False
    _, length, tag, width, height, depth, colour, compression, filtering, interlace, crc = (
        _PNG_HEAD.unpack_from(data)
    )
    return (
        (length, tag, width, height, depth, colour, compression, filtering)
        == (13, b"IHDR", SIDE, SIDE, 8, 0, 0, 0)
        and interlace in (0, 1)
        and zlib.crc32(data[12:29]) == crc
        # A false match (the tag's bytes inside compressed data) only sends the file to Pillow.
        and not any(tag in data for tag in _PNG_SPECIAL)
    )


def decode_common(data: bytes, *, invert: bool = False) -> np.ndarray | None:
    """The usual upload, an 8-bit greyscale 28×28 PNG, decoded by libspng; ``None`` for any other.

    Same result as :func:`to_array` on the same bytes (tests/service/test_intake.py checks it).
    A file libspng refuses is ``None`` too: Pillow's path then says what is wrong with it.
    """
    if not _is_grey8_28(data):
        return None
    check_png(data)  # a flood is refused here as on Pillow's path (a microsecond for 4 chunks)
    try:
        grey = pyspng.load(data)
    except RuntimeError:
        return None
    pixels = grey.astype(np.float32) / 255.0
    if invert:
        pixels = 1.0 - pixels
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _unbudgeted(nbytes: int) -> AbstractContextManager[None]:
    return nullcontext()


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    resize: bool = False,
    invert: bool = False,
    reserve: Callable[[int], AbstractContextManager[None]] = _unbudgeted,
) -> np.ndarray:
    """Upload bytes → float32 [28, 28]: :func:`decode_common`, or :func:`open_image` then :func:`to_array`
    while holding ``reserve(decode_cost)`` (the service's decode memory budget, service/intake.py)."""
    common = decode_common(data, invert=invert)
    if common is not None:
        return common
    image = open_image(data, max_pixels)
    try:
        with reserve(decode_cost(image, resize=resize)):
            try:
                return to_array(image, resize=resize, invert=invert)
            finally:
                image.close()  # the decoded pixels go now, inside the reservation
    finally:
        image.close()
        del image  # not kept alive by a traceback while the error travels up


def warm_up() -> None:
    """One encode and one decode through each path, so that no request pays a first-call cost.

    The Pillow path registers every Pillow plugin (tens of modules, a twentieth of a second); the
    service runs this after it is ready, in the background (service/state.py).
    """
    data = encode_png(np.zeros((SIDE, SIDE), dtype=np.float32))
    decode_common(data)
    to_array(open_image(data, SIDE * SIDE))


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] floats → 8-bit grey, rounded to nearest."""
    return np.clip(np.rint(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    """[h, w] floats in [0, 1] → 8-bit greyscale PNG bytes (written by hand, a sixth of Pillow's
    cost for a 28×28 reply: service/png.py, docs/benchmarks.md)."""
    return png.encode_grey8(to_uint8(pixels), compress_level)
