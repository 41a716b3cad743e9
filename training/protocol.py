"""The evaluation protocol (docs/evaluation/README.md), defined once: levels, seeds, sizes, noise, scores.

Every noise level, seed and image count below is used by training's validation check, the
baselines, the evaluation and the reports alike; the noise itself comes from training/noise.py.

- Gaussian levels: ``NOISE_LEVELS`` (the reports), ``VAL_LEVELS`` (training's per-epoch check).
- Noise seeds: the test protocol's (final reports only) and validation's own, so that no choice
  made on validation ever sees the test noise. Each level gets a fresh generator; one draw covers
  the whole array (:func:`noisy`).
- ``TEST_LIMIT``: the first test images scored (all 1,000 of MNIST-5k; 2,000 of the 10,000 of
  MNIST and Fashion-MNIST). ``TUNE_IMAGES``: the validation slice the classical methods are tuned on.
- PSNR (data range 1) and SSIM (skimage's 7×7 window) per image, then averaged (:func:`mean_scores`).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from training import noise

NOISE_LEVELS: tuple[float, ...] = noise.SPECS["gaussian"].eval_levels
VAL_LEVELS: tuple[float, ...] = noise.SPECS["gaussian"].val_levels
TEST_NOISE_SEED = 1234
VAL_NOISE_SEED = 999
TEST_LIMIT = 2000
TUNE_IMAGES = 200
# A perfect reconstruction would give infinite PSNR; the floor caps it at 100 dB so means stay finite.
MSE_FLOOR = 1e-10


def noisy(clean: np.ndarray, level: float, seed: int, kind: noise.Kind = "gaussian") -> np.ndarray:
    """The protocol's input at ``level``: one draw from a fresh ``default_rng(seed)`` over the whole array.

    For Gaussian noise: ``clip(x + s·N(0, 1), 0, 1)``, float32.
    """
    return noise.noisy_numpy(kind, clean, level, seed)


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


def mean_scores(clean: np.ndarray, estimate: np.ndarray, subset: int) -> dict[str, float]:
    """Mean PSNR/SSIM over all images and over the first ``subset`` (the paired BM3D comparison)."""
    p, q = psnr(clean, estimate), ssim(clean, estimate)
    return {
        "psnr": float(p.mean()),
        "ssim": float(q.mean()),
        "subset_psnr": float(p[:subset].mean()),
        "subset_ssim": float(q[:subset].mean()),
    }
