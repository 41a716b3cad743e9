"""Classical baselines: the methods, the tuning on the validation split, the cached table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from training import baselines, protocol
from training.baselines import (
    METHODS_BY_KEY,
    Axis,
    Method,
    Params,
    Runner,
    TuningError,
    compute_baselines,
    main,
    tune,
)
from training.data import load_mnist5k
from training.protocol import psnr
from training.splits import Split


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_mnist5k().val_x[:12]


def test_identity_returns_the_noisy_input(digits: np.ndarray) -> None:
    noisy = protocol.noisy(digits, 0.3, 1234)
    with Runner() as runner:
        [out] = runner.apply_many(METHODS_BY_KEY["noisy"], [(noisy, {})])
    np.testing.assert_array_equal(out, noisy)


def test_protocol_noise_is_one_draw_over_the_whole_array(digits: np.ndarray) -> None:
    # The first images get the same noise whether the evaluated array is short or long.
    np.testing.assert_array_equal(
        protocol.noisy(digits, 0.2, 1234)[:5], protocol.noisy(digits[:5], 0.2, 1234)
    )
    expected = np.clip(digits + 0.2 * np.random.default_rng(1234).standard_normal(digits.shape), 0, 1)
    np.testing.assert_allclose(protocol.noisy(digits, 0.2, 1234), expected, atol=1e-7)


@pytest.mark.parametrize(
    ("key", "params"),
    [
        ("gaussian", {"sigma": 0.8}),
        ("median", {}),
        ("median_tuned", {"size": 5.0}),
        ("nl_means", {"h": 0.225, "patch_size": 3.0, "patch_distance": 5.0}),
    ],
)
def test_each_classical_method_beats_the_noisy_input_at_high_noise(
    digits: np.ndarray, key: str, params: Params
) -> None:
    noisy = protocol.noisy(digits, 0.5, 1234)
    out = np.stack([METHODS_BY_KEY[key].apply(img, params) for img in noisy])
    assert out.shape == digits.shape
    assert psnr(digits, out).mean() > psnr(digits, noisy).mean() + 2


def test_bm3d_denoises_one_image(digits: np.ndarray) -> None:
    noisy = protocol.noisy(digits[:1], 0.3, 1234)
    out = METHODS_BY_KEY["bm3d"].apply(noisy[0], {"sigma_psd": 0.165})
    assert out.shape == (28, 28)
    assert psnr(digits[:1], out[None]).mean() > psnr(digits[:1], noisy).mean() + 2


def _scale(img: np.ndarray, p: Params) -> np.ndarray:
    return img * p["f"]


def _affine(img: np.ndarray, p: Params) -> np.ndarray:
    return img * p["a"] + p["b"]


def _scale_method(*values: float, **axis: object) -> Method:
    return Method("scale", "scale", _scale, axes=(Axis("f", values, **axis),))  # type: ignore[arg-type]


def _direct(digits: np.ndarray, s: float, f: float) -> float:
    noisy = protocol.noisy(digits, s, 999)
    return float(psnr(digits, noisy * f).mean())


def test_tuning_picks_the_grid_value_with_the_best_psnr(digits: np.ndarray) -> None:
    # Scaling a noisy image by f: PSNR peaks near the least-squares factor, inside this grid.
    grid = (0.2, 0.6, 0.9, 1.0, 1.3)
    method = _scale_method(*grid, ratio=1.25)
    scores = [_direct(digits, 0.3, f) for f in grid]
    with Runner() as runner:
        tuning = tune(method, digits, 0.3, runner)
    assert tuning.params == {"f": grid[int(np.argmax(scores))]}
    np.testing.assert_allclose([tuning.scores[(f,)] for f in grid], scores)
    assert tuning.extensions == 0 and tuning.params["f"] not in (0.2, 1.3)


@pytest.mark.parametrize("grid", [(0.2, 0.3), (3.0, 4.0)])
def test_an_optimum_on_an_edge_extends_the_grid_until_it_is_inside(
    digits: np.ndarray, grid: tuple[float, float]
) -> None:
    method = _scale_method(*grid, ratio=1.5)
    with Runner() as runner:
        tuning = tune(method, digits, 0.3, runner)
    evaluated = sorted(p[0] for p in tuning.scores)
    f = tuning.params["f"]
    assert tuning.extensions >= 1 and f not in grid  # the starting grid did not hold the optimum
    assert evaluated[0] < f < evaluated[-1]  # never on an edge of what was searched
    low, high = tuning.neighbours["f"]["low"], tuning.neighbours["f"]["high"]
    assert low is not None and high is not None
    assert low[1] <= tuning.psnr >= high[1] and low[0] < f < high[0]
    assert tuning.psnr == pytest.approx(max(_direct(digits, 0.3, v) for v in evaluated))
    assert 0.5 < f < 1.5


def test_every_axis_of_a_product_grid_is_kept_off_its_edges(digits: np.ndarray) -> None:
    axes = (Axis("a", (0.2, 0.3), ratio=1.5), Axis("b", (0.01, 0.02), step=0.01))
    with Runner() as runner:
        tuning = tune(Method("affine", "affine", _affine, axes=axes), digits, 0.3, runner)
    for i, name in enumerate(("a", "b")):
        line = sorted({p[i] for p in tuning.scores})
        assert line[0] < tuning.point[i] < line[-1], name
        assert all(v is not None for v in tuning.neighbours[name].values())


def test_an_edge_past_a_hard_limit_fails_loudly(digits: np.ndarray) -> None:
    with Runner() as runner:
        with pytest.raises(TuningError, match=r"f=0\.3 is on the high edge"):
            tune(_scale_method(0.2, 0.3, ratio=1.5, upper=0.4), digits, 0.3, runner)
        with pytest.raises(TuningError, match="still on the high edge after 0 extensions"):
            tune(_scale_method(0.2, 0.3, ratio=1.5), digits, 0.3, runner, max_extensions=0)


def test_an_optimum_at_a_declared_method_bound_is_accepted_and_recorded(digits: np.ndarray) -> None:
    # f >= 1 only: the best is f = 1 (the noisy input is already better than brightening it).
    bounded = _scale_method(1.0, 1.5, step=0.5, lower=1.0, method_bounds=(("low", "f < 1 not allowed"),))
    with Runner() as runner:
        tuning = tune(bounded, digits, 0.05, runner)
        assert tuning.params == {"f": 1.0}
        assert tuning.at_method_bound == {"f": "f < 1 not allowed"}
        assert tuning.neighbours["f"]["low"] is None and tuning.neighbours["f"]["high"] is not None
        with pytest.raises(TuningError, match="low edge"):
            tune(
                dataclasses.replace(bounded, axes=(Axis("f", (1.0, 1.5), step=0.5, lower=1.0),)),
                digits,
                0.05,
                runner,
            )


def test_per_s_axes_return_factor_times_s(digits: np.ndarray) -> None:
    method = _scale_method(0.5, 1.0, 2.0, per_s=True, ratio=2.0)
    with Runner() as runner:
        tuning = tune(method, digits, 0.5, runner)
    # The grid holds factors of s; the params are absolute: f = factor * s.
    assert tuning.params == {"f": tuning.point[0] * 0.5}
    direct = {factor: _direct(digits, 0.5, factor * 0.5) for (factor,) in tuning.scores}
    assert tuning.point[0] == max(direct, key=direct.__getitem__)


def test_the_median_size_is_tuned(digits: np.ndarray) -> None:
    method = METHODS_BY_KEY["median_tuned"]
    with Runner() as runner:
        low = tune(method, digits, 0.05, runner)
        high = tune(method, digits, 0.6, runner)
    # Light noise: 3×3, at the method's own bound (no smaller median window), recorded as such.
    assert low.params == {"size": 3.0} and "smallest median window" in low.at_method_bound["size"]
    # Heavy noise: the size that scores best, directly computed, with both neighbours evaluated.
    noisy = protocol.noisy(digits, 0.6, 999)
    direct = {
        size: float(psnr(digits, np.stack([method.apply(im, {"size": size}) for im in noisy])).mean())
        for size in (3.0, 5.0, 7.0, 9.0)
    }
    best = max(direct, key=direct.__getitem__)
    assert best > 3.0 and high.params == {"size": best}
    assert {best - 2, best + 2} <= {p[0] for p in high.scores}
    assert high.psnr == pytest.approx(direct[best])


def _poisoned(split: Split, **parts: Any) -> Split:
    return dataclasses.replace(split, **parts)


def test_tuning_reads_the_validation_split_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = load_mnist5k()
    rng = np.random.default_rng(5)
    garbage = rng.random(real.test_x.shape).astype(np.float32)

    def run(split: Split) -> dict:
        monkeypatch.setattr(baselines, "load_dataset", lambda *_a, **_k: split)
        return compute_baselines(
            "mnist5k",
            test_limit=4,
            tune_images=10,
            methods=["gaussian", "median_tuned"],
            levels=(0.1, 0.5),
            workers=1,
        )["methods"]

    clean = run(real)
    poisoned = run(_poisoned(real, test_x=garbage, train_x=rng.random(real.train_x.shape).astype(np.float32)))
    for key in ("gaussian", "median_tuned"):
        assert poisoned[key]["params"] == clean[key]["params"]  # same choices ...
        assert poisoned[key]["tuning"] == clean[key]["tuning"]
        assert poisoned[key]["psnr"] != clean[key]["psnr"]  # ... though the test images changed
    # The validation split is what the choice hangs on: smoother validation digits want a wider blur.
    smooth = np.stack([gaussian_filter(im, 1.5) for im in real.val_x]).astype(np.float32)
    blurred = run(_poisoned(real, val_x=smooth))
    for a, b in zip(blurred["gaussian"]["params"], clean["gaussian"]["params"], strict=True):
        assert a["sigma"] > b["sigma"]


def test_pooled_bm3d_matches_in_process_bm3d(digits: np.ndarray) -> None:
    noisy = protocol.noisy(digits[:2], 0.2, 1234)
    method = METHODS_BY_KEY["bm3d"]
    with Runner(1) as single:
        [a] = single.apply_many(method, [(noisy, {"sigma_psd": 0.13})])
    with Runner(2) as pooled:
        [b] = pooled.apply_many(method, [(noisy, {"sigma_psd": 0.13})])
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
    assert not (tmp_path / "baselines.partial.json").exists()
    assert data["test_images"] == 6 and data["subset_images"] == 2
    assert set(data["methods"]) == {"noisy", "gaussian", "median", "median_tuned", "nl_means", "bm3d"}
    assert "validation split" in data["protocol"]["tuning"] and "train" not in data["protocol"]["tuning"]
    bm3d = data["methods"]["bm3d"]
    assert bm3d["test_images"] == 2 and bm3d["tune_images"] == 1 and len(bm3d["params"]) == 2
    assert bm3d["tune_split"] == "validation" and bm3d["on_grid_edge"] is False
    nl_means = data["methods"]["nl_means"]
    assert set(nl_means["params"][0]) == {"h", "patch_size", "patch_distance"}
    for entry in data["methods"].values():
        for tuning in entry.get("tuning", []):
            for name, sides in tuning["neighbours"].items():
                missing = [side for side, v in sides.items() if v is None]
                assert len(missing) <= 1 and (not missing or name in tuning["at_method_bound"])
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
