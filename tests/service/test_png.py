"""The hand-written PNG paths agree with Pillow, and refuse (``None``) whatever they do not cover."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from service import imaging, png

LIMIT = 4096 * 4096


def _pillow_png(grey: np.ndarray, **save: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(grey, mode="L").save(out, "PNG", **save)
    return out.getvalue()


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def _filtered_png(grey: np.ndarray, filters: list[int], extra: bytes = b"", split: int = 0) -> bytes:
    """A PNG whose rows use the given filter types (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth)."""
    h, w = grey.shape
    x = grey.astype(np.int64)
    rows = []
    for r, f in enumerate(filters):
        prev = x[r - 1] if r else np.zeros(w, np.int64)
        left = np.concatenate([[0], x[r, :-1]])
        upleft = np.concatenate([[0], prev[:-1]])
        if f == 0:
            pred = np.zeros(w, np.int64)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = prev
        elif f == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        rows.append(bytes([f]) + ((x[r] - pred) % 256).astype(np.uint8).tobytes())
    stream = zlib.compress(b"".join(rows), 6)
    parts = [stream[:split], stream[split:]] if split else [stream]
    return (
        png.SIGNATURE
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + extra
        + b"".join(_chunk(b"IDAT", p) for p in parts)
        + _chunk(b"IEND", b"")
    )


def _pillow_grey(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


grey_images = arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)))


@settings(max_examples=200, deadline=None)
@given(grey=grey_images, data=st.data())
def test_rows_with_filters_none_sub_up_decode_exactly_as_pillow(
    grey: np.ndarray, data: st.DataObject
) -> None:
    filters = data.draw(st.lists(st.integers(0, 2), min_size=len(grey), max_size=len(grey)))
    encoded = _filtered_png(grey, filters, split=data.draw(st.integers(0, 8)))
    decoded = png.decode_grey8(encoded)
    assert decoded is not None
    np.testing.assert_array_equal(decoded, grey)
    np.testing.assert_array_equal(decoded, _pillow_grey(encoded))


@settings(max_examples=100, deadline=None)
@given(grey=grey_images, optimize=st.booleans(), level=st.integers(0, 9))
def test_what_pillow_writes_decodes_to_the_same_pixels(grey: np.ndarray, optimize: bool, level: int) -> None:
    encoded = _pillow_png(grey, optimize=optimize, compress_level=level)
    decoded = png.decode_grey8(encoded)
    if decoded is not None:  # Pillow may choose Average/Paeth rows; those go to Pillow
        np.testing.assert_array_equal(decoded, grey)


@pytest.mark.parametrize("kind", [3, 4])
def test_average_and_paeth_rows_are_left_to_pillow(kind: int) -> None:
    grey = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    encoded = _filtered_png(grey, [0] * 27 + [kind])
    assert png.decode_grey8(encoded) is None
    np.testing.assert_array_equal(imaging.decode_image(encoded, max_pixels=LIMIT), grey / np.float32(255))


def _other_files() -> dict[str, bytes]:
    grey = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    good = _filtered_png(grey, [1] * 28)
    rgb = io.BytesIO()
    Image.fromarray(np.stack([grey] * 3, -1), mode="RGB").save(rgb, "PNG")
    sixteen = io.BytesIO()
    Image.fromarray(grey.astype(np.uint16) * 257).save(sixteen, "PNG")
    interlaced = io.BytesIO()
    Image.fromarray(grey).save(interlaced, "PNG", interlace=1)
    trns = _filtered_png(grey, [0] * 28, extra=_chunk(b"tRNS", b"\x00\x00"))
    return {
        "rgb": rgb.getvalue(),
        "16-bit": sixteen.getvalue(),
        "interlaced": interlaced.getvalue(),
        "transparency": trns,
        "bad-crc": good[:-20] + bytes([good[-20] ^ 1]) + good[-19:],
        "truncated": good[: len(good) // 2],
        "no-iend": good[:-12],
        "unknown-critical-chunk": _filtered_png(grey, [0] * 28, extra=_chunk(b"ABCD", b"x")),
        "too-little-data": _filtered_png(grey, [0] * 28)[:33] + _chunk(b"IDAT", zlib.compress(b"\0" * 100)),
        "not-png": b"GIF89a" + good[6:],
        "empty": b"",
    }


@pytest.mark.parametrize("name", list(_other_files()))
def test_anything_else_goes_to_pillow(name: str) -> None:
    assert png.decode_grey8(_other_files()[name]) is None


def test_harmless_chunks_are_skipped() -> None:
    grey = np.full((28, 28), 7, np.uint8)
    encoded = _filtered_png(
        grey, [2] * 28, extra=_chunk(b"tEXt", b"Comment\x00hi") + _chunk(b"gAMA", b"\0\1\0\0")
    )
    np.testing.assert_array_equal(png.decode_grey8(encoded), grey)


@settings(max_examples=100, deadline=None)
@given(grey=arrays(np.uint8, (28, 28)), invert=st.booleans())
def test_decode_common_equals_the_pillow_path(grey: np.ndarray, invert: bool) -> None:
    encoded = _filtered_png(grey, [0, 1, 2, 1] * 7)
    common = imaging.decode_common(encoded, invert=invert)
    assert common is not None and common.dtype == np.float32 and common.flags.c_contiguous
    pillow = imaging.to_array(imaging.open_image(encoded, LIMIT), invert=invert)
    np.testing.assert_array_equal(common, pillow)


def test_decode_common_leaves_other_sizes_to_the_general_path() -> None:
    assert imaging.decode_common(_filtered_png(np.zeros((32, 32), np.uint8), [0] * 32)) is None


@settings(max_examples=100, deadline=None)
@given(grey=grey_images, level=st.integers(0, 9))
def test_encoder_output_reads_back_in_pillow(grey: np.ndarray, level: int) -> None:
    encoded = png.encode_grey8(grey, level)
    np.testing.assert_array_equal(_pillow_grey(encoded), grey)
    np.testing.assert_array_equal(png.decode_grey8(encoded), grey)


def _bomb(side: int) -> bytes:
    """A small PNG that declares ``side``×``side`` pixels and inflates to about a gigabyte."""
    stream = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    body = b"".join(stream.compress(chunk) for _ in range(1024)) + stream.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return png.SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def test_a_declared_huge_image_is_never_inflated() -> None:
    import tracemalloc

    bomb = _bomb(40_000)
    assert len(bomb) < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        assert png.decode_grey8(bomb) is None  # over max_pixels
        assert png.decode_grey8(bomb, shape=(28, 28)) is None
        assert imaging.decode_common(bomb) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{peak} bytes allocated"
