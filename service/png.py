"""The reply's PNG, by hand: 8-bit greyscale, filter type 0, zlib level 1.

Pillow writes it correctly but, for a 28×28 image, its per-call Python overhead is six times the
work itself, and that overhead holds the GIL the event loop needs (docs/benchmarks.md). Only our
own model outputs pass through here; untrusted PNG bytes are read by libspng or Pillow
(service/imaging.py).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
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
