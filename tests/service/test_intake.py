"""service/intake.py and the decoders it uses: multipart parsing, the libspng path, budgets, codes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from service import imaging, png
from service.config import Settings
from service.intake import (
    DecodeBudget,
    DecodeBusy,
    Intake,
    InvalidInput,
    MalformedBody,
    code_array,
    parse_multipart,
)
from service.registry import load_model
from tests.service.conftest import png_bytes

CT = "multipart/form-data; boundary=XyZ"


def _body(*parts: tuple[str, str | None, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, media, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--XyZ\r\nContent-Disposition: {disposition}\r\n".encode()
        if media:
            out += f"Content-Type: {media}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + b"--XyZ--\r\n"


def test_parts_keep_order_names_filenames_types_and_exact_bytes() -> None:
    payload = bytes(range(256)) * 3 + b"\r\n--XyY almost the boundary\r\n--Xy"
    parts = parse_multipart(
        _body(("file", "a.png", "image/png", payload), ("note", None, None, b"hello")), CT, max_parts=4
    )
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("file", "a.png", "image/png"),
        ("note", None, None),
    ]
    assert b"".join(parts[0].chunks) == payload and b"".join(parts[1].chunks) == b"hello"


def test_what_httpx_sends_parses_back() -> None:
    request = httpx.Request("POST", "http://x/", files=[("files", ("0.png", b"\x89PNG0", "image/png"))] * 3)
    parts = parse_multipart(request.read(), request.headers["content-type"], max_parts=8)
    assert [(p.name, p.filename, b"".join(p.chunks)) for p in parts] == [("files", "0.png", b"\x89PNG0")] * 3


def test_too_many_parts_stop_the_parser() -> None:
    body = _body(*[("files", f"{i}.png", "image/png", b"x") for i in range(5)])
    with pytest.raises(InvalidInput, match="too many parts"):
        parse_multipart(body, CT, max_parts=4)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", _body(("file", "a", None, b"x"))),
        (CT, b"--XyZ\r\nContent-Disposition form-data broken header\r\n\r\nx\r\n--XyZ--\r\n"),
        (CT, b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\ncut off here'),
        (CT, b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--\r\n"),
    ],
    ids=["no boundary", "broken header", "not closed", "no disposition"],
)
def test_malformed_bodies_are_malformed(content_type: str, body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parse_multipart(body, content_type, max_parts=4)


# --- the usual upload through libspng, against Pillow's path.


@settings(max_examples=40, deadline=None)
@given(grey=arrays(np.uint8, (28, 28)), invert=st.booleans(), optimize=st.booleans())
def test_libspng_path_equals_the_pillow_path(grey: np.ndarray, invert: bool, optimize: bool) -> None:
    data = png_bytes(grey.astype(np.float32) / 255.0, optimize=optimize)
    fast = imaging.decode_common(data, invert=invert)
    assert fast is not None
    slow = imaging.to_array(imaging.open_image(data, 28 * 28), invert=invert)
    np.testing.assert_array_equal(fast, slow)


def test_interlaced_grey_png_takes_the_libspng_path() -> None:
    grey = np.arange(784, dtype=np.uint8).reshape(28, 28)
    out = io.BytesIO()
    Image.fromarray(grey).save(out, "PNG", interlace=1)
    fast = imaging.decode_common(out.getvalue())
    assert fast is not None and np.array_equal(imaging.to_uint8(fast), grey)


def _with_chunk(data: bytes, tag: bytes, payload: bytes) -> bytes:
    chunk = struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))
    return data[:33] + chunk + data[33:]


def test_transparency_animation_bad_ihdr_and_other_kinds_go_to_pillow() -> None:
    grey = png_bytes(np.zeros((28, 28)))
    bad_crc = bytearray(grey)
    bad_crc[29] ^= 0xFF
    others = {
        "tRNS": _with_chunk(grey, b"tRNS", b"\x00\x00"),
        "acTL": _with_chunk(grey, b"acTL", b"\x00" * 8),
        "bad IHDR CRC": bytes(bad_crc),
        "RGB": png_bytes(np.zeros((28, 28, 3)), mode="RGB"),
        "30×28": png_bytes(np.zeros((28, 30))),
        "JPEG": b"\xff\xd8\xff" + grey,
    }
    for name, data in others.items():
        assert imaging.decode_common(data) is None, name
    with pytest.raises(imaging.UndecodableImage):
        imaging.decode_image(bytes(bad_crc), max_pixels=784)


def test_a_png_of_too_many_chunks_is_refused_before_pillow_parses_them() -> None:
    grey = png_bytes(np.zeros((28, 28)))
    flood = grey[:33] + _with_chunk(b"", b"tEXt", b"k\x00v")[0:] * (imaging.MAX_PNG_CHUNKS + 1) + grey[33:]
    with pytest.raises(imaging.UndecodableImage, match="more than 4096 chunks"):
        imaging.open_image(flood, 784)
    with pytest.raises(imaging.UndecodableImage, match="more than 4096 chunks"):
        imaging.decode_common(flood)  # the libspng path refuses it too
    few = grey[:33] + _with_chunk(b"", b"tEXt", b"k\x00v") * 100 + grey[33:]
    assert imaging.decode_image(few, max_pixels=784).shape == (28, 28)


def test_a_jpeg_or_tiff_flood_is_refused_before_pillow_parses_it() -> None:
    jpeg = io.BytesIO()
    Image.new("L", (28, 28)).save(jpeg, "JPEG")
    comments = b"\xff\xfe\x00\x03x" * (imaging.MAX_JPEG_SEGMENTS + 1)
    with pytest.raises(imaging.UndecodableImage, match="more than 512 segments"):
        imaging.open_image(jpeg.getvalue()[:2] + comments + jpeg.getvalue()[2:], 784)
    fine = jpeg.getvalue()[:2] + b"\xff\xfe\x00\x03x" * 100 + jpeg.getvalue()[2:]
    assert imaging.decode_image(fine, max_pixels=784).shape == (28, 28)
    tiff = io.BytesIO()
    Image.new("L", (28, 28)).save(tiff, "TIFF", tiffinfo={40000 + i: 1 for i in range(imaging.MAX_TIFF_TAGS)})
    with pytest.raises(imaging.UndecodableImage, match="more than 1024 tags"):
        imaging.open_image(tiff.getvalue(), 784)


@settings(max_examples=30, deadline=None)
@given(grey=arrays(np.uint8, (28, 28)), level=st.integers(0, 9))
def test_encoder_output_reads_back_in_pillow(grey: np.ndarray, level: int) -> None:
    data = png.encode_grey8(grey, level)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), grey)


def test_resizing_a_large_image_stays_close_to_a_direct_area_average() -> None:
    rng = np.random.default_rng(0)
    noise = (rng.random((2000, 1900)) * 255).astype(np.uint8)
    coarse = Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8))
    smooth = np.asarray(coarse.resize((1900, 2000), Image.Resampling.BICUBIC))
    for grey in (noise, smooth):
        direct = Image.fromarray(grey.astype(np.float32) / 255).resize((28, 28), Image.Resampling.BOX)
        for mode in ("L", "RGBA"):
            data = io.BytesIO()
            Image.fromarray(grey).convert(mode).save(data, "PNG")
            got = imaging.decode_image(data.getvalue(), max_pixels=4 * 10**6, resize=True)
            # Reduced by an integer factor first (to 224-447 a side), then area-averaged.
            error = np.abs(got - np.asarray(direct)) * 255
            assert error.mean() < 3 and error.max() < 10, (mode, error.mean(), error.max())


# --- budgets.


def test_a_decode_over_the_whole_budget_is_413_and_over_what_is_left_is_busy() -> None:
    budget = DecodeBudget(limit_bytes=100, max_pending=1)
    with pytest.raises(imaging.ImageTooLarge, match="AE_DECODE_MEMORY_MB"):
        budget.reserve(101).__enter__()
    with budget.reserve(60):
        with pytest.raises(DecodeBusy, match="AE_DECODE_MEMORY_MB"), budget.reserve(41):
            pass
        with budget.reserve(40):
            assert budget.used_bytes == 100
    assert budget.used_bytes == 0
    with budget.admit(), pytest.raises(DecodeBusy, match="AE_DECODE_QUEUE"), budget.admit():
        pass


def test_intake_decodes_under_its_budget(models_dir: Path) -> None:
    intake = Intake(Settings(models_dir=models_dir, decode_memory_mb=8))
    big = io.BytesIO()
    Image.new("RGBA", (1024, 1024), (9, 9, 9, 9)).save(big, "PNG")
    with pytest.raises(imaging.ImageTooLarge, match="needs about 13 MB"):
        intake.decode_bytes(big.getvalue(), resize=True, invert=False)
    small = io.BytesIO()
    Image.new("RGBA", (256, 256), (9, 9, 9, 255)).save(small, "PNG")
    assert intake.decode_bytes(small.getvalue(), resize=True, invert=False).shape == (28, 28)
    assert intake.budget.used_bytes == 0


# --- codes.


def test_codes_outside_the_card_range_widened_by_its_width_are_refused(models_dir: Path) -> None:
    model = load_model(models_dir / "mnist-denoise", "cpu", 1)
    low, high = model.card["code_range"]["min"], model.card["code_range"]["max"]
    width = high - low
    assert model.code_limits == pytest.approx((low - width, high + width))
    inside = np.full(256, high + 0.99 * width).tolist()
    assert code_array(inside, model).shape == (16, 4, 4)
    for value in (high + 1.01 * width, low - 1.01 * width, 3e38):
        with pytest.raises(InvalidInput, match="takes values in"):
            code_array([value] * 256, model)
