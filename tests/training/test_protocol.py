"""PSNR and SSIM per image, as the evaluation protocol defines them."""

from __future__ import annotations

import numpy as np

from training import protocol
from training.protocol import psnr, ssim


def test_psnr_of_a_known_error() -> None:
    clean = np.zeros((2, 28, 28), np.float32)
    estimate = clean + np.array([0.1, 0.01], np.float32)[:, None, None]  # mse 1e-2 and 1e-4
    np.testing.assert_allclose(psnr(clean, estimate), [20.0, 40.0], rtol=1e-5)


def test_perfect_reconstruction_scores_the_maximum() -> None:
    clean = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(psnr(clean, clean), 100.0)  # the 1e-10 mse floor
    np.testing.assert_allclose(ssim(clean, clean), 1.0)


def test_metrics_fall_as_noise_grows() -> None:
    rng = np.random.default_rng(1)
    clean = rng.random((4, 28, 28))
    low = clean + 0.05 * rng.standard_normal(clean.shape)
    high = clean + 0.3 * rng.standard_normal(clean.shape)
    assert np.all(psnr(clean, low) > psnr(clean, high))
    assert np.all(ssim(clean, low) > ssim(clean, high))


def test_outputs_are_scored_without_clipping() -> None:
    clean = np.zeros((1, 28, 28))
    np.testing.assert_allclose(psnr(clean, clean - 0.1), [20.0])  # negative values count in full


def test_noisy_is_clipped_float32_and_reproducible() -> None:
    x = np.full((2, 28, 28), 0.5, np.float32)
    a = protocol.noisy(x, 0.6, 3)
    b = protocol.noisy(x, 0.6, 3)
    assert a.dtype == np.float32 and a.min() == 0.0 and a.max() == 1.0
    np.testing.assert_array_equal(a, b)
    expected = np.clip(x + 0.6 * np.random.default_rng(3).standard_normal(x.shape), 0, 1)
    np.testing.assert_allclose(a, expected, atol=1e-7)


def test_every_level_and_size_has_one_definition() -> None:
    from training import noise

    assert (
        protocol.NOISE_LEVELS == noise.SPECS["gaussian"].eval_levels == (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    )
    assert set(protocol.VAL_LEVELS) <= set(protocol.NOISE_LEVELS)
    assert (protocol.TEST_NOISE_SEED, protocol.VAL_NOISE_SEED, protocol.TEST_LIMIT) == (1234, 999, 2000)
