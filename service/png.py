"""The PNG work on every request, by hand: the 8-bit greyscale reply, and the common upload's decode.

Pillow does both correctly but, for a 28×28 image, its per-call Python overhead is many times the
work itself, and that overhead holds the GIL the event loop needs (docs/benchmarks.md). Both
functions here cover one narrow, common case and nothing else:

- :func:`encode_grey8` writes 8-bit greyscale, filter type 0, zlib level 1 (every reply);
- :func:`decode_grey8` reads 8-bit greyscale, non-interlaced files whose rows use filter types
  0-2 (what Pillow and most Python clients write) and returns ``None`` for anything else: other
  colour types or depths, transparency, Average/Paeth rows, a bad CRC, a damaged stream. ``None``
  sends the upload down Pillow's path, which gives the error message or handles the general case.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that leave an 8-bit grey image's pixels as stored (Pillow ignores them when decoding).
_HARMLESS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"pHYs", b"gAMA", b"sRGB", b"cHRM", b"iCCP", b"tIME"})
_CHUNK_HEAD = struct.Struct(">I4s")
_IHDR = struct.Struct(">IIBBBBB")


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def encode_grey8(grey: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 ``[h, w]`` → PNG bytes (8-bit greyscale, no filtering, no interlace)."""
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got {grey.dtype} {grey.shape}")
    height, width = grey.shape
    scanlines = np.zeros((height, width + 1), dtype=np.uint8)  # each row starts with filter 0
    scanlines[:, 1:] = grey
    header = _IHDR.pack(width, height, 8, 0, 0, 0, 0)
    return b"".join(
        (
            SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), compress_level)),
            _chunk(b"IEND", b""),
        )
    )


def _chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """(type, payload) up to IEND, every CRC checked; ``None`` if the file is cut short or damaged."""
    chunks = []
    pos, end = len(SIGNATURE), len(data)
    while pos + 12 <= end:
        length, tag = _CHUNK_HEAD.unpack_from(data, pos)
        stop = pos + 8 + length
        if stop + 4 > end:
            return None
        payload = data[pos + 8 : stop]
        if zlib.crc32(payload, zlib.crc32(tag)) != int.from_bytes(data[stop : stop + 4], "big"):
            return None
        chunks.append((tag, payload))
        if tag == b"IEND":
            return chunks
        pos = stop + 4
    return None


def _unfilter(rows: np.ndarray, filters: np.ndarray) -> np.ndarray | None:
    """Undo filter types 0 (None), 1 (Sub) and 2 (Up) of one-byte pixels, vectorised; ``None`` for 3, 4."""
    if filters.max(initial=0) > 2:
        return None
    out = rows.copy()
    sub = filters == 1
    if sub.any():
        out[sub] = np.cumsum(rows[sub], axis=1, dtype=np.uint8)  # Sub: running sum along the row
    up = filters == 2
    if up.any():
        # Up: each row adds the decoded row above. A run of Up rows after row b (or from the top)
        # is the running sum down the columns since b, so with C the column-wise running sum of
        # `out`, row i = C[i] - C[start - 1], start being the run's base row (0 from the top).
        running = np.cumsum(out, axis=0, dtype=np.uint8)
        index = np.arange(len(filters))
        start = np.maximum.accumulate(np.where(up, 0, index))
        above = np.where(start > 0, running[np.maximum(start - 1, 0)].T, 0).T.astype(np.uint8)
        out[up] = (running - above)[up]
    return out


def decode_grey8(
    data: bytes, shape: tuple[int, int] | None = None, max_pixels: int = 1 << 20
) -> np.ndarray | None:
    """uint8 ``[h, w]`` of an 8-bit greyscale PNG in the narrow case above, else ``None``.

    ``shape`` (height, width), when given, and ``max_pixels`` are checked from the header, before
    anything is decompressed: a small file that declares a huge image never inflates here.
    """
    if not data.startswith(SIGNATURE):
        return None
    chunks = _chunks(data)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != _IHDR.size:
        return None
    width, height, depth, colour, compression, filtering, interlace = _IHDR.unpack(chunks[0][1])
    if (depth, colour, compression, filtering, interlace) != (8, 0, 0, 0, 0) or not width or not height:
        return None
    if (shape is not None and (height, width) != shape) or width * height > max_pixels:
        return None
    idat = []
    for tag, payload in chunks[1:-1]:
        if tag == b"IDAT":
            idat.append(payload)
        elif tag not in _HARMLESS:
            return None  # tRNS, an unknown critical chunk, a second IHDR, …
    expected = height * (width + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), expected + 1)
    except zlib.error:
        return None
    if len(raw) != expected or not inflater.eof:
        return None
    scanlines = np.frombuffer(raw, dtype=np.uint8).reshape(height, width + 1)
    return _unfilter(scanlines[:, 1:], scanlines[:, 0])
