"""Classical baselines: the methods, the tuning on the train split, the cached table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.baselines import (
    METHODS_BY_KEY,
    Method,
    Runner,
    compute_baselines,
    main,
    protocol_noisy,
    tune,
)
from training.data import add_noise, load_mnist5k
from training.metrics import psnr


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_mnist5k().train_x[:12]


def test_identity_returns_the_noisy_input(digits: np.ndarray) -> None:
    noisy = protocol_noisy(digits, 0.3)
    with Runner() as runner:
        [out] = runner.apply_many(METHODS_BY_KEY["noisy"], [(noisy, 0.0)])
    np.testing.assert_array_equal(out, noisy)


def test_protocol_noise_is_one_draw_over_the_whole_array(digits: np.ndarray) -> None:
    # The first images get the same noise whether the evaluated array is short or long.
    np.testing.assert_array_equal(protocol_noisy(digits, 0.2)[:5], protocol_noisy(digits[:5], 0.2))
    expected = np.clip(digits + 0.2 * np.random.default_rng(1234).standard_normal(digits.shape), 0, 1)
    np.testing.assert_allclose(protocol_noisy(digits, 0.2), expected, atol=1e-7)


@pytest.mark.parametrize("key", ["gaussian", "median", "nl_means"])
def test_each_classical_method_beats_the_noisy_input_at_high_noise(digits: np.ndarray, key: str) -> None:
    noisy = protocol_noisy(digits, 0.5)
    method = METHODS_BY_KEY[key]
    param = 0.8 if key == "gaussian" else 0.225
    out = np.stack([method.apply(img, param) for img in noisy])
    assert out.shape == digits.shape
    assert psnr(digits, out).mean() > psnr(digits, noisy).mean() + 2


def test_bm3d_denoises_one_image(digits: np.ndarray) -> None:
    noisy = protocol_noisy(digits[:1], 0.3)
    out = METHODS_BY_KEY["bm3d"].apply(noisy[0], 0.165)
    assert out.shape == (28, 28)
    assert psnr(digits[:1], out[None]).mean() > psnr(digits[:1], noisy).mean() + 2


def _scale(img: np.ndarray, factor: float) -> np.ndarray:
    return img * factor


def test_tuning_picks_the_grid_value_with_the_best_psnr(digits: np.ndarray) -> None:
    # Scaling a noisy image by f: PSNR is maximal near the least-squares factor, which we compute here.
    method = Method("scale", "scale", _scale, grid=(0.2, 0.6, 0.9, 1.0, 1.3))
    noisy = add_noise(digits, 0.3, np.random.default_rng(999))
    scores = [psnr(digits, noisy * f).mean() for f in method.grid]
    with Runner() as runner:
        param, tuned_scores = tune(method, digits, 0.3, runner)
    assert param == method.grid[int(np.argmax(scores))]
    np.testing.assert_allclose(tuned_scores, scores)
    assert param not in (0.2, 1.3)  # the crafted grid brackets the optimum


def test_per_s_grids_return_factor_times_s(digits: np.ndarray) -> None:
    method = Method("scale", "scale", _scale, grid=(1.0, 2.0), per_s=True)
    with Runner() as runner:
        param, _ = tune(method, digits, 0.5, runner)
    assert param == 0.5  # factor 1.0 (identity) beats doubling the image


def test_tuning_never_looks_at_the_test_images() -> None:
    # Tuning sees only what it is given: the same train slice gives the same choice.
    x = load_mnist5k().train_x[:8]
    method = METHODS_BY_KEY["gaussian"]
    with Runner() as runner:
        a, _ = tune(method, x, 0.4, runner)
        b, _ = tune(method, x.copy(), 0.4, runner)
    assert a == b


def test_pooled_bm3d_matches_in_process_bm3d(digits: np.ndarray) -> None:
    noisy = protocol_noisy(digits[:2], 0.2)
    method = METHODS_BY_KEY["bm3d"]
    with Runner(1) as single:
        [a] = single.apply_many(method, [(noisy, 0.13)])
    with Runner(2) as pooled:
        [b] = pooled.apply_many(method, [(noisy, 0.13)])
    np.testing.assert_array_equal(a, b)


def test_compute_baselines_writes_every_method_and_the_subset(tmp_path: Path) -> None:
    out = tmp_path / "baselines.json"
    main(
        [
            "--dataset", "mnist5k", "--test-limit", "6", "--tune-images", "4",
            "--bm3d-tune-images", "1", "--bm3d-test-images", "2", "--workers", "1", "--out", str(out),
            "--levels", "0.05", "0.6",
        ]
    )  # fmt: skip
    data = json.loads(out.read_text())
    assert data["test_images"] == 6 and data["subset_images"] == 2
    assert set(data["methods"]) == {"noisy", "gaussian", "median", "nl_means", "bm3d"}
    bm3d = data["methods"]["bm3d"]
    assert bm3d["test_images"] == 2 and bm3d["tune_images"] == 1 and len(bm3d["params"]) == 2
    noisy = data["methods"]["noisy"]
    assert noisy["psnr"][0] > noisy["psnr"][-1]  # s=0.05 is far cleaner than s=0.6
    assert data["command"].startswith("python -m training.baselines --dataset mnist5k")
    assert data["versions"]["bm3d"]


def test_noisy_row_matches_the_protocol_by_hand() -> None:
    data = compute_baselines("mnist5k", test_limit=5, methods=["noisy"], levels=(0.3,), workers=1)
    test = load_mnist5k().test_x[:5]
    noisy = np.clip(test + 0.3 * np.random.default_rng(1234).standard_normal(test.shape), 0, 1)
    expected = np.mean(10 * np.log10(1 / np.mean((test - noisy.astype(np.float32)) ** 2, axis=(1, 2))))
    assert data["methods"]["noisy"]["psnr"][0] == pytest.approx(expected, abs=1e-4)
