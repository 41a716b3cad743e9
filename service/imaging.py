"""Bytes ⇄ arrays and nothing else: image decoding for the models, PNG encoding for the replies.

Decoding accepts anything Pillow reads (except EPS, which Pillow hands to Ghostscript) and returns
float32 ``[28, 28]`` in [0, 1], white on black like the training data:

- colour → 8-bit luma (ITU-R 601-2, Pillow's ``convert("L")``); palette images through their palette;
- 16-bit (and 32-bit integer) grey → divided by 65535, not clipped at 255 as Pillow's own
  conversion would; 32-bit float grey is read as [0, 1] and clipped;
- transparency is composited onto the *background*: black, or white with ``invert=True`` (the
  image is dark on light, and is inverted after compositing), so a digit drawn on a transparent
  canvas comes out right either way;
- animated images: the first frame;
- not 28×28: :class:`WrongImageSize` unless ``resize=True`` (then stretched to 28×28: area average when
  shrinking, bilinear when enlarging).

The pixel count is checked from the header, before any pixel is decoded, and Pillow's own
decompression-bomb guard stays on; :func:`decode_cost` estimates from the header what a decode will
allocate, so that callers can budget memory before any pixel exists. Large images are decoded at
reduced size where the format allows (JPEG's DCT scaling through ``draft``) and shrunk by integer
box reduction (``Image.reduce``) in their own 8-bit mode before any float copy is made.

PNG is read by libspng (``pyspng``) for the usual upload, an 8-bit grey 28×28 file, and by Pillow
for everything else. Every failure is a subclass of :class:`ImageError`.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import pyspng
from PIL import Image, UnidentifiedImageError

from service import png

SIDE = 28
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Bytes per pixel of each mode as Pillow stores it (4 for every mode of 3 or 4 bands and I, F).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# What a decode allocates per source pixel beyond the decoded image (measured: docs/api.md): an
# "LA" and an "La" copy for transparent images, two float32 planes for 16-bit grey, an "L" copy
# for the rest.
_WORKING_BYTES = {"alpha": 8, "wide": 10, "other": 1}
# libwebp keeps its own RGBA canvas and hands Pillow a copy; Pillow's BMP RLE decoder builds the
# image in a bytearray first.
_FORMAT_BYTES = {"WEBP": 9, "BMP": 2}
# Decoder state, row buffers and the 28×28 result: small, but not nothing.
_DECODE_OVERHEAD = 1 << 20

# EPS is excluded: Pillow decodes it by running Ghostscript on the bytes it is given.
_EXCLUDED_FORMATS = frozenset({"EPS"})
# Pillow tries formats in the order given; the common ones first saves ~0.2 ms per request.
_COMMON_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_WIDE_INT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class ImageError(Exception):
    """The bytes cannot become a model input; subclasses say why."""


class UndecodableImage(ImageError):
    """Empty, truncated, corrupt, or not an image format Pillow recognises."""


class ImageTooLarge(ImageError):
    """More pixels than allowed (checked before decoding), or a decompression bomb."""


class WrongImageSize(ImageError):
    """The image is not 28×28 and resizing was not asked for."""


@functools.cache
def _readable_formats() -> tuple[str, ...]:
    Image.init()  # registers every plugin
    rest = sorted(f for f in Image.OPEN if f not in _EXCLUDED_FORMATS and f not in _COMMON_FORMATS)
    return tuple(f for f in _COMMON_FORMATS if f in Image.OPEN) + tuple(rest)


# Structure beyond these counts is a flood, not an image. Encoders write a few ancillary PNG chunks
# and IDAT in pieces of 8 KB or more (256 of them in a 2 MB body; APNG adds two chunks per frame);
# a JPEG has a dozen segments before its first scan (ICC profiles split into 64 KB pieces); a
# TIFF's first directory holds a few dozen tags.
MAX_PNG_CHUNKS = 4096
MAX_JPEG_SEGMENTS = 512
MAX_TIFF_TAGS = 1024
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_JPEG_SOS = 0xDA
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _flood(kind: str, limit: int) -> UndecodableImage:
    return UndecodableImage(
        f"the {kind} has more than {limit} {_FLOOD_UNITS[kind]}: not an image this service reads"
    )


_FLOOD_UNITS = {"PNG": "chunks", "JPEG": "segments before its image data", "TIFF": "tags"}


def _check_png(data: bytes) -> None:
    pos, end = len(_PNG_SIGNATURE), len(data)
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 8 > end:
            return
        pos += _U32.unpack_from(data, pos)[0] + 12
    if pos + 8 <= end:
        raise _flood("PNG", MAX_PNG_CHUNKS)


def _check_jpeg(data: bytes) -> None:
    pos, end = 2, len(data)
    for _ in range(MAX_JPEG_SEGMENTS):
        while pos < end and data[pos] == 0xFF:  # a marker's 0xFF, and any fill bytes before it
            pos += 1
        if pos + 3 > end or data[pos] == _JPEG_SOS:
            return
        pos += 1 if data[pos] in _JPEG_STANDALONE else 1 + _U16.unpack_from(data, pos + 1)[0]
    if pos + 3 <= end:
        raise _flood("JPEG", MAX_JPEG_SEGMENTS)


def _check_tiff(data: bytes) -> None:
    order = "<" if data.startswith(b"II") else ">"
    if len(data) < 8:
        return
    offset = struct.unpack_from(order + "I", data, 4)[0]
    if offset + 2 <= len(data) and struct.unpack_from(order + "H", data, offset)[0] > MAX_TIFF_TAGS:
        raise _flood("TIFF", MAX_TIFF_TAGS)


def _check_structure(data: bytes) -> None:
    """:class:`UndecodableImage` when a PNG, JPEG or TIFF holds more chunks, segments or tags than any
    real image needs.

    Walks length fields only (Pillow or libspng check the rest): a fraction of a microsecond per
    chunk, against several microseconds each in Pillow's Python handlers, so that what a flood
    costs stops at the limit instead of growing with the body.
    """
    if data.startswith(_PNG_SIGNATURE):
        _check_png(data)
    elif data.startswith(b"\xff\xd8"):
        _check_jpeg(data)
    elif data.startswith((b"II*\x00", b"MM\x00*")):
        _check_tiff(data)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only and enforce the pixel limit; pixels are decoded by :func:`to_array`."""
    if not data:
        raise UndecodableImage("the image is empty (0 bytes)")
    _check_structure(data)
    try:
        image = Image.open(io.BytesIO(data), formats=_readable_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError:
        raise UndecodableImage(f"not an image format this service reads (starts with {data[:8]!r})") from None
    except Exception as exc:  # Pillow's plugins raise many types on malformed headers
        raise UndecodableImage(f"cannot read the image header ({exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is too large: {width}×{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if width == 0 or height == 0:
        raise UndecodableImage(f"the image is {width}×{height}")
    return image


def _check_size(image: Image.Image, resize: bool) -> None:
    if image.size != (SIDE, SIDE) and not resize:
        raise WrongImageSize(
            f"the image is {image.width}×{image.height}; expected {SIDE}×{SIDE} (or pass resize=true)"
        )


def _draft(image: Image.Image, resize: bool) -> None:
    if resize and image.format == "JPEG" and image.size != (SIDE, SIDE):
        # libjpeg can decode at 1/2 … 1/8 scale directly: far cheaper for photos, in time and memory.
        image.draft("L", (SIDE * 2, SIDE * 2))


def decode_cost(image: Image.Image, *, resize: bool = False) -> int:
    """Bytes a :func:`to_array` of this image (from :func:`open_image`) may allocate at its peak.

    From the header alone: the decoded size (after any reduced-size JPEG decode) times the bytes per
    pixel of the mode and of the working copies. Measured peaks stay under it (docs/api.md).
    """
    _draft(image, resize)
    mode = image.mode
    if mode in _ALPHA_MODES or "transparency" in image.info:
        kind = "alpha"
    elif mode in _WIDE_INT_MODES:
        kind = "wide"
    else:
        kind = "other"
    per_pixel = _MODE_BYTES.get(mode, 4) + _WORKING_BYTES[kind] + _FORMAT_BYTES.get(image.format or "", 0)
    return image.width * image.height * per_pixel + _DECODE_OVERHEAD


def _reduce(image: Image.Image) -> tuple[Image.Image, tuple[float, float, float, float] | None]:
    """Integer box reduction of each side to 224…447 pixels, in the image's own mode (no float copy yet).

    Transparent images are reduced premultiplied ("La"), so compositing afterwards averages what
    each source pixel shows, as compositing before the reduction would.
    """
    factor = (max(1, image.width // (8 * SIDE)), max(1, image.height // (8 * SIDE)))
    if max(factor) < 2:
        return image, None
    # Where the source's edges fall in the reduced image (its last row and column may be partial).
    box = (0.0, 0.0, image.width / factor[0], image.height / factor[1])
    mode = image.mode
    if mode in _ALPHA_MODES or "transparency" in image.info:
        if mode not in ("RGBA", "LA", "La"):
            image = image.convert("RGBA")  # palette or colour-key transparency becomes alpha
        if image.mode == "RGBA":
            image = image.convert("LA")
        if image.mode == "LA":
            image = image.convert("La")
    elif mode in _WIDE_INT_MODES:
        image = Image.fromarray(np.asarray(image, dtype=np.float32) / 65535.0)  # mode F, in [0, 1]
    elif mode not in ("L", "RGB", "F"):
        image = image.convert("L")
    return image.reduce(factor), box


def to_array(image: Image.Image, *, resize: bool = False, invert: bool = False) -> np.ndarray:
    """Decode an image from :func:`open_image` into float32 ``[28, 28]`` in [0, 1], white on black."""
    _check_size(image, resize)
    _draft(image, resize)
    box = None
    try:
        if resize:
            image, box = _reduce(image)
        pixels = _grey(image, background=1.0 if invert else 0.0)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image is too large to decode safely ({exc})") from exc
    except Exception as exc:  # truncated data, bad checksums, broken chunks: all undecodable
        raise UndecodableImage(f"cannot decode the {image.format or 'image'} data ({exc})") from exc
    if pixels.shape != (SIDE, SIDE):
        # Area averaging when shrinking (every source pixel counts once, no ringing); bilinear when enlarging.
        shrinking = min(pixels.shape) >= SIDE
        method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        resized = Image.fromarray(pixels, mode="F").resize((SIDE, SIDE), method, box=box)
        pixels = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    if invert:
        pixels = 1.0 - pixels
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _grey(image: Image.Image, background: float) -> np.ndarray:
    """Decode to float32 ``[h, w]`` in [0, 1], compositing any transparency onto ``background``."""
    mode = image.mode
    if mode == "La":  # premultiplied, from _reduce
        grey_alpha = np.asarray(image, dtype=np.float32) / 255.0
        return grey_alpha[..., 0] + background * (1.0 - grey_alpha[..., 1])
    if mode in _WIDE_INT_MODES:
        return np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)
    if mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        if mode == "P":
            image = image.convert("RGBA")  # palette transparency, whichever way it is stored
        grey_alpha = np.asarray(image.convert("LA"), dtype=np.float32) / 255.0
        grey, alpha = grey_alpha[..., 0], grey_alpha[..., 1]
        return grey * alpha + background * (1.0 - alpha)
    if mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0


# Signature, then IHDR: length 13, type, width, height, depth, colour, compression, filter, interlace, CRC.
_PNG_HEAD = struct.Struct(">8sI4sIIBBBBBI")
# Chunks that make Pillow's result differ from plain 8-bit grey levels: transparency, animation.
_PNG_SPECIAL = (b"tRNS", b"acTL")


def _is_grey8_28(data: bytes) -> bool:
    """Whether the bytes start like an 8-bit grey 28×28 PNG with a sound IHDR (libspng ignores CRCs)."""
    if len(data) < _PNG_HEAD.size or not data.startswith(_PNG_SIGNATURE):
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
    _check_png(data)  # a flood is refused here as on Pillow's path (a microsecond for 4 chunks)
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
