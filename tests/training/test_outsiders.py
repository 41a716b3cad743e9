"""training.outsiders: the seeded sets of images no model was trained on."""

from __future__ import annotations

import numpy as np

from contract import ood
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


def test_strokes_are_seeded_grey_edged_pen_strokes_inside_the_frame() -> None:
    a = outsiders.strokes(40, 5)
    assert a.shape == (40, 28, 28) and a.dtype == np.float32
    assert np.array_equal(a, outsiders.strokes(40, 5)) and not np.array_equal(a, outsiders.strokes(40, 6))
    assert a.min() == 0.0 and a.max() == 1.0
    ink = (a > 0.5).mean(axis=(1, 2))
    assert ((ink > 0.01) & (ink < 0.4)).all(), "every picture has a stroke, on a dark background"
    # drawn at 4x and box-filtered: the strokes' edges are grey, not only 0 and 1
    assert ((a > 0.05) & (a < 0.95)).mean() > 0.01
    # control points stay inside the central 18x18 pixels and a stroke is at most 3.6 px wide
    assert (a[:, :2, :] == 0).all() and (a[:, -2:, :] == 0).all()
    assert (a[:, :, :2] == 0).all() and (a[:, :, -2:] == 0).all()
    # thin strokes: much edge per unit of ink, as the descriptor's stroke statistics measure
    stats = ood.descriptor(a)[:, -3:]
    assert np.median(stats[:, 2]) > 0.0  # log edge > log ink: longer edges than a filled shape
