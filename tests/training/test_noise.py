"""Noise models: each kind's statistics, in numpy (evaluation) and torch (training) alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training import noise

N = (200, 28, 28)


def _numpy(kind: noise.Kind, x: np.ndarray, level: float) -> np.ndarray:
    return noise.noisy_numpy(kind, x, level, seed=7)


def _torch(kind: noise.Kind, x: np.ndarray, level: float) -> np.ndarray:
    t = torch.from_numpy(x)[:, None]
    levels = torch.full((len(x), 1, 1, 1), level)
    return noise.apply_torch(kind, t, levels, torch.Generator().manual_seed(7)).numpy()[:, 0]


BOTH = pytest.mark.parametrize("corrupt", [_numpy, _torch], ids=["numpy", "torch"])


@BOTH
@pytest.mark.parametrize("p", [0.05, 0.3])
def test_salt_pepper_replaces_the_given_fraction_of_pixels_half_by_white_half_by_black(corrupt, p) -> None:
    x = np.full(N, 0.5, np.float32)  # mid-grey: every replaced pixel visibly changes
    out = corrupt("salt-pepper", x, p)
    changed = out != 0.5
    assert changed.mean() == pytest.approx(p, abs=0.005)
    assert set(np.unique(out[changed])) == {0.0, 1.0}
    assert (out[changed] == 1.0).mean() == pytest.approx(0.5, abs=0.02)


@BOTH
@pytest.mark.parametrize(("value", "peak"), [(0.2, 50.0), (0.3, 20.0)])
def test_poisson_has_the_clean_mean_and_variance_value_over_peak(corrupt, value, peak) -> None:
    x = np.full(N, value, np.float32)
    out = corrupt("poisson", x, peak).astype(np.float64)
    # Counts are integers: the image takes only multiples of 1/peak.
    assert np.allclose(out * peak, np.rint(out * peak), atol=1e-4)
    clipped = out == 1.0
    assert clipped.mean() < 0.001  # clipping at white: P(Poisson(6) >= 20) is about 1e-5
    assert out.mean() == pytest.approx(value, rel=0.01)
    assert out.var() == pytest.approx(value / peak, rel=0.05)


@BOTH
@pytest.mark.parametrize(("value", "s"), [(0.4, 0.3), (0.2, 0.5)])
def test_speckle_is_multiplicative_with_variance_s2_x2(corrupt, value, s) -> None:
    x = np.full(N, value, np.float32)
    out = corrupt("speckle", x, s).astype(np.float64)
    assert out.mean() == pytest.approx(value, rel=0.01)
    assert out.var() == pytest.approx((s * value) ** 2, rel=0.05)
    black = corrupt("speckle", np.zeros(N, np.float32), s)
    assert not black.any(), "black pixels stay black under multiplicative noise"


@BOTH
def test_gaussian_has_the_protocol_std(corrupt) -> None:
    x = np.full(N, 0.5, np.float32)
    out = corrupt("gaussian", x, 0.1).astype(np.float64)
    assert out.mean() == pytest.approx(0.5, abs=0.002)
    assert out.std() == pytest.approx(0.1, rel=0.02)


def test_gaussian_evaluation_noise_is_exactly_the_protocols() -> None:
    x = np.random.default_rng(0).random((20, 28, 28)).astype(np.float32)
    assert np.array_equal(
        noise.noisy_numpy("gaussian", x, 0.3, 1234),
        np.clip(x + 0.3 * np.random.default_rng(1234).standard_normal(x.shape), 0, 1).astype(np.float32),
    )


def test_evaluation_noise_depends_on_the_seed_only() -> None:
    x = np.full((4, 28, 28), 0.5, np.float32)
    for kind in noise.KINDS:
        level = noise.SPECS[kind].eval_levels[2]
        assert np.array_equal(noise.noisy_numpy(kind, x, level, 3), noise.noisy_numpy(kind, x, level, 3))
        assert not np.array_equal(noise.noisy_numpy(kind, x, level, 3), noise.noisy_numpy(kind, x, level, 4))


@pytest.mark.parametrize("kind", noise.KINDS)
def test_every_kind_stays_in_the_unit_range(kind) -> None:
    x = np.random.default_rng(1).random(N).astype(np.float32)
    for level in noise.SPECS[kind].eval_levels:
        for out in (_numpy(kind, x, level), _torch(kind, x, level)):
            assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0


def test_training_levels_are_drawn_per_image_within_the_range() -> None:
    gen = torch.Generator().manual_seed(0)
    s = noise.draw_levels("gaussian", 4000, 0.1, 0.3, gen).flatten()
    assert s.min() >= 0.1 and s.max() <= 0.3 and s.std() > 0.05
    peaks = noise.draw_levels("poisson", 4000, 2.0, 100.0, gen).flatten()
    assert peaks.min() >= 2.0 and peaks.max() <= 100.0
    # Log-uniform: half the peaks lie below the geometric mean (about 14), not below 51.
    assert (peaks < (2.0 * 100.0) ** 0.5).float().mean() == pytest.approx(0.5, abs=0.03)


def _kind_of(image: np.ndarray) -> str:
    """Which noise made ``image`` from the clean left-black, right-grey (0.5) test image."""
    black, grey = image[:, :14], image[:, 14:]
    if set(np.unique(image)) <= {0.0, 0.5, 1.0}:
        return "salt-pepper"
    if black.any():
        return "gaussian"  # the only additive kind: black pixels change
    # Shot noise takes few values (counts / peak); speckle is continuous.
    return "poisson" if len(np.unique(grey)) < 80 else "speckle"


def test_mixed_gives_each_image_one_of_the_four_kinds_at_even_odds() -> None:
    x = torch.zeros(400, 1, 28, 28)
    x[..., 14:] = 0.5
    out = noise.corrupt(x, "mixed", 0.0, 0.0, torch.Generator().manual_seed(0))[:, 0].numpy()
    kinds = [_kind_of(image) for image in out]
    for kind in noise.KINDS:
        assert 60 <= kinds.count(kind) <= 140, (kind, kinds.count(kind))


def test_gaussian_training_corruption_is_unchanged_for_the_shipped_recipes() -> None:
    """The draws of a gaussian run are those of the code before other noises existed."""
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(5)
    s = 0.0 + 0.6 * torch.rand(8, 1, 1, 1, generator=gen)
    expected = torch.clamp(x + s * torch.randn(x.shape, generator=gen), 0.0, 1.0)
    got = noise.corrupt(x, "gaussian", 0.0, 0.6, torch.Generator().manual_seed(5))
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    ("kind", "low", "high", "words"),
    [
        ("salt-pepper", 0.1, 1.5, "fractions of pixels"),
        ("poisson", 0.0, 10.0, "must be > 0"),
        ("gaussian", 0.5, 0.1, "above --noise-max"),
        ("speckle", -0.1, 0.5, "must be >= 0"),
    ],
)
def test_invalid_level_ranges_are_refused_with_a_reason(kind, low, high, words) -> None:
    with pytest.raises(ValueError, match=words):
        noise.check_range(kind, low, high)


def test_the_card_entry_names_the_noise_and_its_ranges() -> None:
    entry = noise.card_entry("mixed", 0.0, 0.0)
    assert entry["kinds"] == list(noise.KINDS)
    assert entry["levels"]["poisson"] == {"name": "peak", "range": [2.0, 100.0]}
    assert noise.card_entry("speckle", 0.1, 0.4)["levels"] == {"speckle": {"name": "s", "range": [0.1, 0.4]}}
