"""Service fixtures: apps built on the shipped models, run with their lifespan, and test images."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.config import Settings
from service.main import create_app

NOISE = 0.3


def make_settings(models_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test app: only what the test names differs from the defaults (no AE_* env)."""
    return Settings(models_dir=models_dir, **overrides)


def png_bytes(pixels: np.ndarray, mode: str = "L", **save: Any) -> bytes:
    """[h, w] floats in [0, 1] → PNG bytes through Pillow (an independent encoder)."""
    grey = np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(grey).convert(mode).save(out, "PNG", **save)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width × height`` but carries almost no data: a decompression bomb's header."""

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def read_png(data: bytes) -> np.ndarray:
    """PNG bytes → [h, w] floats in [0, 1] through Pillow."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.mode == "L"
    return np.asarray(image, dtype=np.float32) / 255.0


@pytest.fixture(scope="session")
def digits(mnist_test_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) float32 ``[80, 28, 28]``: real test digits and the protocol's noise at s=0.3."""
    from training import protocol

    clean = mnist_test_images[:80]
    noisy = protocol.noisy(clean, NOISE, 0).astype(np.float32)
    # The service sees 8-bit PNGs: compare against what it can actually receive.
    return clean, (np.rint(noisy * 255) / 255).astype(np.float32)


@pytest.fixture(scope="session")
def app_factory(models_dir: Path) -> Callable[..., Any]:
    """``app_factory(**settings)`` → an app on the shipped models (lifespan not started)."""

    def build(**overrides: Any) -> Any:
        return create_app(make_settings(overrides.pop("models_dir", models_dir), **overrides))

    return build


@pytest.fixture(scope="session")
def client(app_factory: Callable[..., Any]) -> Iterator[TestClient]:
    """A client of a running app (lifespan started) with default settings, shared by every test.

    Tests must not depend on its state (metrics tests compare before/after).
    """
    with TestClient(app_factory()) as test_client:
        yield test_client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
