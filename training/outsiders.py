"""Images a model was not trained on, for choosing and evaluating out-of-distribution scores.

Every set is float32 ``[n, 28, 28]`` in [0, 1], white on black like the data sets, and seeded:
uniform noise, letters rendered with a font, and the inverted images of a set (dark on light).
The other data set (MNIST for Fashion models and the reverse) comes from ``training.calibrate``'s
loader: its train split when choosing signals, its test split for the final evaluation.
"""

from __future__ import annotations

import string

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LETTERS = string.ascii_letters


def uniform_noise(n: int, seed: int) -> np.ndarray:
    """Every pixel uniform in [0, 1]."""
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


def letters(n: int, seed: int) -> np.ndarray:
    """Latin letters (a-z, A-Z) in Pillow's built-in scalable font, white on black, 28x28.

    Size 16-24 px, centred like MNIST's digits (by the ink's bounding box) with a random shift of
    up to 2 px, a random stroke of 0 or 1 px; seeded.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, 28, 28), dtype=np.float32)
    fonts: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}
    for i in range(n):
        size = int(rng.integers(16, 25))
        font = fonts.setdefault(size, ImageFont.load_default(size=size))
        letter = LETTERS[int(rng.integers(len(LETTERS)))]
        stroke = int(rng.integers(0, 2))
        canvas = Image.new("L", (56, 56), 0)
        ImageDraw.Draw(canvas).text(
            (28, 28), letter, fill=255, font=font, anchor="mm", stroke_width=stroke, stroke_fill=255
        )
        box = canvas.getbbox() or (0, 0, 56, 56)
        cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        dx, dy = (int(v) for v in rng.integers(-2, 3, 2))
        left, top = cx - 14 + dx, cy - 14 + dy
        out[i] = np.asarray(canvas.crop((left, top, left + 28, top + 28)), dtype=np.float32) / 255.0
    return out


def inverted(images: np.ndarray) -> np.ndarray:
    """The same pictures dark on light."""
    return (1.0 - images).astype(np.float32)
