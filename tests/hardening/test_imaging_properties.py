"""Hypothesis on the intake's decode (``Intake.decode``, which every uploaded image goes through):
any bytes either decode to a valid model input or raise ImageError.

Random bytes rarely get past a decoder's magic number, so most examples start from a real image
in one of the formats users send and damage it (flip, cut, splice bytes), which reaches the
decoders' inner paths. Whatever comes in, the only outcomes allowed are a float32 [28, 28] array
in [0, 1] or an :class:`ImageError` subclass (which errors.py turns into a 4xx): never another
exception, which would be a 500.
"""

from __future__ import annotations

import asyncio
import io
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from service import imaging
from service.config import Settings
from service.intake import Intake, Upload

LIMIT = 4096 * 4096
INTAKE = Intake(Settings(_env_file=None, max_pixels=LIMIT))  # type: ignore[call-arg]


def decode(data: bytes, *, max_pixels: int = LIMIT, resize: bool = False, invert: bool = False) -> np.ndarray:
    """The production path: on the event loop for small uploads, in a decode thread for the rest."""
    if max_pixels == LIMIT:
        return asyncio.run(INTAKE.decode(Upload(data, None), resize=resize, invert=invert))
    intake = Intake(Settings(_env_file=None, max_pixels=max_pixels))  # type: ignore[call-arg]
    try:
        return asyncio.run(intake.decode(Upload(data, None), resize=resize, invert=invert))
    finally:
        intake.close()


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8))
    out = []
    for image, fmt, options in (
        (grey, "PNG", {}),
        (grey.convert("RGBA"), "PNG", {}),
        (grey.convert("P"), "GIF", {}),
        (grey, "JPEG", {"quality": 80}),
        (grey.convert("CMYK"), "JPEG", {}),
        (grey, "BMP", {}),
        (grey, "TIFF", {}),
        (grey, "WEBP", {}),
        (Image.fromarray(rng.integers(0, 65536, (28, 28), dtype=np.uint16)), "PNG", {}),
        (grey, "PNG", {"save_all": True, "append_images": [grey.transpose(Image.Transpose.ROTATE_90)]}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        out.append(buffer.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "splice", "overwrite"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            data = data[:at]
        elif kind == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
    return bytes(data)


def _decode_or_refuse(data: bytes, *, resize: bool, invert: bool) -> None:
    try:
        with warnings.catch_warnings():
            # Pillow warns about odd but readable files (e.g. truncated EXIF); a warning is not a failure.
            warnings.simplefilter("ignore")
            pixels = decode(data, resize=resize, invert=invert)
    except imaging.ImageError as exc:
        assert str(exc), "an ImageError must carry a message for the client"
        return
    assert pixels.shape == (28, 28) and pixels.dtype == np.float32
    assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0


@SETTINGS
@given(data=damaged_images(), resize=st.booleans(), invert=st.booleans())
def test_damaged_images_decode_or_raise_image_error(data: bytes, resize: bool, invert: bool) -> None:
    _decode_or_refuse(data, resize=resize, invert=invert)


@SETTINGS
@given(data=st.binary(max_size=512), resize=st.booleans())
def test_arbitrary_bytes_decode_or_raise_image_error(data: bytes, resize: bool) -> None:
    _decode_or_refuse(data, resize=resize, invert=False)


@SETTINGS
@given(data=st.binary(max_size=256))
def test_bytes_behind_a_real_png_signature_decode_or_raise_image_error(data: bytes) -> None:
    _decode_or_refuse(SEEDS[0][:16] + data, resize=True, invert=False)


@settings(max_examples=100, deadline=None)
@given(grey=arrays(np.uint8, (28, 28)))
def test_any_8_bit_grey_png_decodes_to_exactly_its_levels(grey: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, "PNG")
    pixels = decode(buffer.getvalue())
    np.testing.assert_array_equal(pixels, grey.astype(np.float32) / 255)


@settings(max_examples=100, deadline=None)
@given(pixels=arrays(np.float32, (28, 28), elements=st.floats(0, 1, width=32)))
def test_encode_png_then_decode_is_the_8_bit_rounding(pixels: np.ndarray) -> None:
    decoded = decode(imaging.encode_png(pixels))
    np.testing.assert_array_equal(decoded, imaging.to_uint8(pixels).astype(np.float32) / 255)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 80), height=st.integers(1, 80), invert=st.booleans())
def test_resize_brings_every_size_to_28x28_in_range(width: int, height: int, invert: bool) -> None:
    grey = np.random.default_rng(width * 100 + height).integers(0, 256, (height, width), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, "PNG")
    data = buffer.getvalue()
    pixels = decode(data, resize=True, invert=invert)
    assert pixels.shape == (28, 28) and pixels.min() >= 0.0 and pixels.max() <= 1.0
    if (width, height) != (28, 28):
        with pytest.raises(imaging.WrongImageSize, match=f"{width}×{height}"):
            decode(data)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 1 << 20), height=st.integers(1, 1 << 20), limit=st.integers(784, 1 << 24))
def test_pixel_limit_is_enforced_from_the_header_alone(width: int, height: int, limit: int) -> None:
    # A header with no pixel data at all: refusing it proves nothing was decoded.
    import struct
    import zlib

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b"")
    if width * height > limit:
        with pytest.raises(imaging.ImageTooLarge):
            imaging.open_image(data, limit)
    else:
        with pytest.raises(imaging.ImageError):  # not too large, but it has no pixels
            decode(data, max_pixels=limit, resize=True)
