"""service.imaging: bytes ⇄ arrays, every input format and every refusal."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service import imaging
from tests.service.conftest import png_bytes, png_header_only

LIMIT = 4096 * 4096


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def digit(mnist_test_images: np.ndarray) -> np.ndarray:
    return np.rint(mnist_test_images[0] * 255) / 255


def test_grey_png_decodes_to_its_pixels(digit: np.ndarray) -> None:
    pixels = imaging.decode_image(png_bytes(digit), max_pixels=LIMIT)
    assert pixels.shape == (28, 28) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, digit, atol=1e-6)


def test_encode_png_round_trips_through_pillow(digit: np.ndarray) -> None:
    data = imaging.encode_png(digit)
    image = Image.open(io.BytesIO(data))
    image.load()  # checks every CRC and the zlib stream
    assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
    np.testing.assert_array_equal(np.asarray(image), imaging.to_uint8(digit))


def test_encode_png_rounds_to_nearest_level() -> None:
    pixels = np.full((28, 28), 0.5, dtype=np.float32)  # 127.5 → 128
    assert np.asarray(Image.open(io.BytesIO(imaging.encode_png(pixels))))[0, 0] == 128


def test_rgb_becomes_luma(digit: np.ndarray) -> None:
    rgb = np.stack([digit, digit, digit], axis=-1)
    data = _save(Image.fromarray(imaging.to_uint8(rgb)), "PNG")
    np.testing.assert_allclose(imaging.decode_image(data, max_pixels=LIMIT), digit, atol=1 / 255)


def test_rgba_composites_transparency_on_black(digit: np.ndarray) -> None:
    # White everywhere; the digit lives only in the alpha channel.
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = imaging.to_uint8(digit)
    data = _save(Image.fromarray(rgba, "RGBA"), "PNG")
    np.testing.assert_allclose(imaging.decode_image(data, max_pixels=LIMIT), digit, atol=1 / 255)


def test_invert_composites_on_white_then_inverts(digit: np.ndarray) -> None:
    # A black stroke on a transparent canvas, as a drawing app saves it.
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., 3] = imaging.to_uint8(digit)
    data = _save(Image.fromarray(rgba, "RGBA"), "PNG")
    np.testing.assert_allclose(imaging.decode_image(data, max_pixels=LIMIT, invert=True), digit, atol=1 / 255)


def test_invert_flips_dark_on_light(digit: np.ndarray) -> None:
    data = png_bytes(1.0 - digit)
    np.testing.assert_allclose(imaging.decode_image(data, max_pixels=LIMIT, invert=True), digit, atol=1e-6)


def test_16_bit_grey_is_scaled_not_clipped(digit: np.ndarray) -> None:
    wide = np.rint(digit * 65535).astype(np.uint16)
    data = _save(Image.fromarray(wide), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    np.testing.assert_allclose(imaging.decode_image(data, max_pixels=LIMIT), digit, atol=1e-4)


def test_palette_image_goes_through_its_palette(digit: np.ndarray) -> None:
    data = _save(Image.fromarray(imaging.to_uint8(digit)).convert("P"), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "P"
    np.testing.assert_allclose(imaging.decode_image(data, max_pixels=LIMIT), digit, atol=1e-6)


def test_palette_transparency_counts_as_background(digit: np.ndarray) -> None:
    grey = imaging.to_uint8(digit)
    unused = int(np.setdiff1d(np.arange(1, 256), grey)[0])
    grey[grey == 0] = unused  # the background is a grey level of its own, marked transparent
    data = _save(Image.fromarray(grey).convert("P"), "PNG", transparency=unused)
    pixels = imaging.decode_image(data, max_pixels=LIMIT)
    assert pixels[digit == 0].max() == 0.0
    np.testing.assert_allclose(pixels[digit > 0], digit[digit > 0], atol=1e-6)


def test_animated_gif_uses_its_first_frame(digit: np.ndarray) -> None:
    first = Image.fromarray(imaging.to_uint8(digit))
    second = Image.fromarray(imaging.to_uint8(1.0 - digit))
    data = _save(first, "GIF", save_all=True, append_images=[second])
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    np.testing.assert_allclose(imaging.decode_image(data, max_pixels=LIMIT), digit, atol=1 / 255)


def test_jpeg_decodes_close_to_the_original(digit: np.ndarray) -> None:
    data = _save(Image.fromarray(imaging.to_uint8(digit)), "JPEG", quality=95)
    assert np.abs(imaging.decode_image(data, max_pixels=LIMIT) - digit).mean() < 0.02


def test_wrong_size_is_refused_without_resize() -> None:
    data = png_bytes(np.zeros((32, 30)))
    with pytest.raises(imaging.WrongImageSize, match=r"30×32; expected 28×28.*resize=true"):
        imaging.decode_image(data, max_pixels=LIMIT)


def test_resize_brings_any_size_to_28x28(digit: np.ndarray) -> None:
    big = Image.fromarray(imaging.to_uint8(digit)).resize((280, 280), Image.Resampling.NEAREST)
    pixels = imaging.decode_image(_save(big, "PNG"), max_pixels=LIMIT, resize=True)
    assert pixels.shape == (28, 28)
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert np.abs(pixels - digit).mean() < 0.02


def test_empty_bytes_are_undecodable() -> None:
    with pytest.raises(imaging.UndecodableImage, match="empty"):
        imaging.decode_image(b"", max_pixels=LIMIT)


def test_wrong_magic_is_undecodable() -> None:
    with pytest.raises(imaging.UndecodableImage, match="not an image format"):
        imaging.decode_image(b"GIF00000 definitely not an image" * 4, max_pixels=LIMIT)


def test_truncated_png_is_undecodable(digit: np.ndarray) -> None:
    data = png_bytes(digit)
    with pytest.raises(imaging.UndecodableImage, match="PNG"):
        imaging.decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_png_with_bad_crc_is_undecodable(digit: np.ndarray) -> None:
    data = bytearray(png_bytes(digit))
    data[40] ^= 0xFF  # inside the IDAT chunk
    with pytest.raises(imaging.UndecodableImage):
        imaging.decode_image(bytes(data), max_pixels=LIMIT)


def test_eps_is_not_handed_to_ghostscript() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nshowpage\n"
    with pytest.raises(imaging.UndecodableImage, match="not an image format"):
        imaging.decode_image(eps, max_pixels=LIMIT)


def test_pixel_limit_is_checked_from_the_header() -> None:
    with pytest.raises(imaging.ImageTooLarge, match="5000×5000 = 25000000 pixels; the limit is 16777216"):
        imaging.decode_image(png_header_only(5000, 5000), max_pixels=LIMIT, resize=True)


def test_decompression_bomb_is_refused() -> None:
    # Far past Pillow's own guard too (2 × 89 Mpx): refused while parsing the header.
    with pytest.raises(imaging.ImageTooLarge):
        imaging.decode_image(png_header_only(50_000, 50_000), max_pixels=LIMIT, resize=True)


def test_real_oversized_image_is_refused_before_decoding() -> None:
    data = _save(Image.new("1", (4100, 4100)), "PNG")  # a few kB that would decode to 16.8 Mpx
    assert len(data) < 100_000
    with pytest.raises(imaging.ImageTooLarge):
        imaging.decode_image(data, max_pixels=LIMIT, resize=True)
