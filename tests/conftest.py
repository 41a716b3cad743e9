"""Fixtures shared by every test package: the repository's paths and the shipped data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The shipped ``models/`` directory; fails (never skips) when it holds no model."""
    if not any(MODELS_DIR.glob("*/card.json")):
        pytest.fail(f"{MODELS_DIR} holds no model (expected models/<id>/card.json)")
    return MODELS_DIR


@pytest.fixture(scope="session")
def mnist_test_images() -> np.ndarray:
    """The MNIST-5k test split (DESIGN.md): float32 ``[1000, 28, 28]`` in [0, 1], white on black."""
    from training.data import load_mnist5k

    return load_mnist5k().test_x
