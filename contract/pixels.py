"""Bytes → model input: the one image conversion that serving and training share.

The service decodes every upload with it (service/imaging.py); training converts a user's own
images with it (training/sources.py), so a model is trained on exactly what ``/denoise?resize=true``
will give it. It imports Pillow and numpy only.

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

Every failure is a subclass of :class:`ImageError`.
"""

from __future__ import annotations

import functools
import io
import struct

import numpy as np
from PIL import Image, UnidentifiedImageError

SIDE = 28
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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


def check_png(data: bytes) -> None:
    pos, end = len(PNG_SIGNATURE), len(data)
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
    if data.startswith(PNG_SIGNATURE):
        check_png(data)
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
