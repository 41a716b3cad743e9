"""training.outsiders: the seeded sets of images no model was trained on."""

from __future__ import annotations

import numpy as np

from training import outsiders


def test_letters_are_seeded_white_on_black_28x28_glyphs() -> None:
    a, b = outsiders.letters(12, 3), outsiders.letters(12, 3)
    assert a.shape == (12, 28, 28) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, outsiders.letters(12, 4))
    assert a.min() == 0.0 and a.max() == 1.0
    ink = (a > 0.5).mean(axis=(1, 2))
    assert ((ink > 0.02) & (ink < 0.5)).all(), "every letter has some ink and a dark background"
    assert (a[:, 0, :] < 0.5).all() and (a[:, -1, :] < 0.5).all(), "letters are centred, not cut"


def test_uniform_noise_and_inverted_images() -> None:
    noise = outsiders.uniform_noise(5, 1)
    assert noise.shape == (5, 28, 28) and noise.min() >= 0 and noise.max() < 1
    assert np.array_equal(noise, outsiders.uniform_noise(5, 1))
    assert np.array_equal(
        outsiders.inverted(np.zeros((1, 28, 28), np.float32)), np.ones((1, 28, 28), np.float32)
    )
