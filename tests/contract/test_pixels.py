"""contract/pixels.py: the one image conversion, shared by the service and by training."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from contract import pixels
from service import imaging
from training import sources


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, "L").save(out, "PNG")
    return out.getvalue()


def test_service_and_training_run_the_same_conversion() -> None:
    assert imaging.to_array is pixels.to_array and imaging.open_image is pixels.open_image
    assert sources.to_array is pixels.to_array and sources.open_image is pixels.open_image


def test_resize_true_averages_the_area_of_each_target_pixel() -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    big = np.kron(small, np.ones((3, 3), dtype=np.uint8))  # 84×84: each pixel a 3×3 block
    out = pixels.to_array(pixels.open_image(_png(big), 2048 * 2048), resize=True)
    np.testing.assert_allclose(out, small / 255.0, atol=1e-6)
    via_training = sources.convert(Image.open(io.BytesIO(_png(big))), invert=True)
    np.testing.assert_allclose(via_training, 1.0 - small / 255.0, atol=1e-6)


def test_the_service_decodes_an_upload_as_training_converts_a_file() -> None:
    digit = (np.random.default_rng(1).random((40, 30)) * 255).astype(np.uint8)
    data = _png(digit)
    served = imaging.decode_image(data, max_pixels=2048 * 2048, resize=True)
    trained = sources.convert(Image.open(io.BytesIO(data)), invert=False)
    np.testing.assert_array_equal(served, trained)
