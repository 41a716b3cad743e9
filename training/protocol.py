"""The evaluation protocol's image-quality metrics, one value per image (docs/evaluation/README.md)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

# A perfect reconstruction would give infinite PSNR; the floor caps it at 100 dB so means stay finite.
MSE_FLOOR = 1e-10


def psnr(clean: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """PSNR in dB per image (data range 1) for stacks ``[n, 28, 28]``; estimates are scored as they are."""
    diff = clean.astype(np.float64) - estimate.astype(np.float64)
    mse = np.mean(diff * diff, axis=(1, 2))
    return np.asarray(10.0 * np.log10(1.0 / np.maximum(mse, MSE_FLOOR)))


def ssim(clean: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """SSIM per image: skimage's default 7x7 window with data_range=1.0."""
    return np.array(
        [
            structural_similarity(c.astype(np.float64), e.astype(np.float64), data_range=1.0)
            for c, e in zip(clean, estimate, strict=True)
        ]
    )
