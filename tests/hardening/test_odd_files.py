"""A generated corpus of odd files, sent to a running ``ae-serve`` over HTTP.

Broken files (truncated, empty, wrong magic, bad checksums, text posing as PNG, bombs) must get a
4xx whose message says what is wrong. Unusual but valid files (16-bit, RGBA, palette, animated,
CMYK JPEG) are what docs/api.md promises to read, so at 28×28 they must be served exactly as their
8-bit grey equivalent, and at any other size refused with a 422 that names the size.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.hardening.attacks import _chunk, _save
from tests.hardening.conftest import LiveServer, png

# Each test here bounds its own wait: a hang fails it within 120 s, not at the suite-wide 600 s.
pytestmark = pytest.mark.timeout(120)


def _png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG header declaring huge dimensions, with a tiny IDAT: a decompression bomb."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _grey8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)


# --- valid but unusual: each builder takes [h, w] floats and returns (bytes, the 8-bit grey they mean).


def _png16(p: np.ndarray) -> tuple[bytes, np.ndarray]:
    g = _grey8(p)
    return _save(Image.fromarray(g.astype(np.uint16) * 257), "PNG"), g  # 257·v / 65535 = v / 255


def _rgba_opaque(p: np.ndarray) -> tuple[bytes, np.ndarray]:
    g = _grey8(p)
    rgba = np.dstack([g, g, g, np.full_like(g, 255)])
    return _save(Image.fromarray(rgba, "RGBA"), "PNG"), g


def _palette(p: np.ndarray) -> tuple[bytes, np.ndarray]:
    g = _grey8(p)
    return _save(Image.fromarray(g).convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG"), g


def _animated_gif(p: np.ndarray) -> tuple[bytes, np.ndarray]:
    g = _grey8(p)
    frames = [Image.fromarray(g), Image.fromarray(255 - g)]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return data, g


def _apng(p: np.ndarray) -> tuple[bytes, np.ndarray]:
    g = _grey8(p)
    frames = [Image.fromarray(g), Image.fromarray(255 - g)]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50), g


VALID_ODD: dict[str, Callable[[np.ndarray], tuple[bytes, np.ndarray]]] = {
    "16-bit grey PNG": _png16,
    "opaque RGBA PNG": _rgba_opaque,
    "palette PNG": _palette,
    "animated GIF": _animated_gif,
    "animated PNG (APNG)": _apng,
}


def _broken_corpus(digit_png: bytes) -> dict[str, tuple[bytes, str, int, str]]:
    """name → (body, Content-Type, expected status, a phrase the message must contain)."""
    jpeg = _save(Image.open(io.BytesIO(digit_png)).convert("RGB"), "JPEG", quality=90)
    bad_crc = bytearray(digit_png)
    bad_crc[29] ^= 0xFF  # inside IHDR's CRC
    gif_bomb = bytearray(_save(Image.new("L", (28, 28)), "GIF"))
    gif_bomb[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen 65535×65535
    return {
        "0 bytes": (b"", "image/png", 400, "empty"),
        "truncated PNG": (digit_png[: len(digit_png) // 2], "image/png", 400, "PNG"),
        "PNG header only": (digit_png[:33], "image/png", 400, "PNG"),
        "truncated JPEG": (jpeg[: len(jpeg) // 2], "image/jpeg", 400, "truncated"),
        "wrong magic": (b"\x00" + digit_png[1:], "image/png", 400, "not an image format"),
        "PNG with a bad CRC": (bytes(bad_crc), "image/png", 400, "PNG"),
        "text pretending to be PNG": (
            b"this is not a PNG, honest\n",
            "image/png",
            400,
            "not an image format",
        ),
        "JSON pretending to be PNG": (b'{"pixels": [[0]]}', "image/png", 400, "not an image format"),
        "huge declared PNG dimensions": (_png_declaring(100_000, 100_000), "image/png", 413, "limit"),
        "huge declared GIF dimensions": (bytes(gif_bomb), "image/gif", 413, "limit"),
        "28×28 declared, 1 GB claimed in IHDR length": (
            digit_png[:8] + struct.pack(">I", 2**30) + digit_png[12:],
            "image/png",
            400,
            "header",
        ),
    }


def _post(server: LiveServer, body: bytes, content_type: str, **params: str) -> httpx.Response:
    files = {"file": ("odd", body, content_type)}
    return httpx.post(
        f"{server.url}/denoise",
        files=files,
        params=params,
        headers={"Accept": "application/json"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def broken(digit_png: bytes) -> dict[str, tuple[bytes, str, int, str]]:
    return _broken_corpus(digit_png)


@pytest.mark.parametrize("name", list(_broken_corpus(png(np.zeros((28, 28))))))
def test_broken_file_gets_a_4xx_saying_what_is_wrong(
    server: LiveServer, broken: dict[str, tuple[bytes, str, int, str]], name: str
) -> None:
    body, content_type, status, phrase = broken[name]
    for response in (
        _post(server, body, content_type),  # multipart
        httpx.post(f"{server.url}/denoise", content=body, headers={"Content-Type": content_type}, timeout=30),
    ):
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert phrase.lower() in detail.lower(), detail
        assert len(detail) >= 20  # a sentence, not a code


@pytest.mark.parametrize("name", list(VALID_ODD))
def test_unusual_valid_file_is_served_like_its_grey_equivalent(
    server: LiveServer, mnist_test_images: np.ndarray, name: str
) -> None:
    data, grey = VALID_ODD[name](mnist_test_images[1])
    got = _post(server, data, "application/octet-stream")
    want = _post(server, _save(Image.fromarray(grey), "PNG"), "image/png")
    assert got.status_code == want.status_code == 200, got.text
    assert got.json()["pixels"] == want.json()["pixels"]


def test_cmyk_jpeg_is_served_close_to_its_grey_equivalent(
    server: LiveServer, mnist_test_images: np.ndarray
) -> None:
    grey = _grey8(mnist_test_images[2])
    cmyk = Image.fromarray(np.dstack([grey] * 3)).convert("CMYK")
    got = _post(server, _save(cmyk, "JPEG", quality=95), "image/jpeg")
    want = _post(server, _save(Image.fromarray(grey), "PNG"), "image/png")
    assert got.status_code == 200, got.text
    # JPEG is lossy: the input differs by a few levels, so the output may too.
    diff = np.abs(np.asarray(got.json()["pixels"]) - np.asarray(want.json()["pixels"]))
    assert diff.mean() < 0.05


@pytest.mark.parametrize("name", list(VALID_ODD))
def test_unusual_file_of_the_wrong_size_is_422_naming_the_size(server: LiveServer, name: str) -> None:
    data, _ = VALID_ODD[name](np.linspace(0, 1, 30 * 31).reshape(31, 30))
    response = _post(server, data, "application/octet-stream")
    assert response.status_code == 422, response.text
    assert "30×31" in response.json()["detail"] and "resize=true" in response.json()["detail"]
    assert _post(server, data, "application/octet-stream", resize="true").status_code == 200


def test_text_part_in_place_of_the_file_is_a_4xx(server: LiveServer) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nnot a file\r\n--b--\r\n'
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    response = httpx.post(f"{server.url}/denoise", content=body, headers=headers, timeout=30)
    assert response.status_code == 422 and "file upload" in response.json()["detail"]
    response = httpx.post(
        f"{server.url}/denoise", files={"file": ("x.txt", b"hello", "text/plain")}, timeout=30
    )
    assert response.status_code == 415 and "text/plain" in response.json()["detail"]
