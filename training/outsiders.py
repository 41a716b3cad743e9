"""Images a model was not trained on, for choosing and evaluating out-of-distribution scores.

Every set is float32 ``[n, 28, 28]`` in [0, 1], white on black like the data sets, and seeded:
uniform noise, letters rendered with a font, and the inverted images of a set (dark on light).
The other data set (MNIST for Fashion models and the reverse) comes from ``training.calibrate``'s
loader: its train split when choosing signals, its test split for the final evaluation.

:func:`strokes` is not an evaluation set: random pen strokes, the background that the ``strokes``
signal measures a picture against (``contract.ood``, ``training.calibrate``).
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


def strokes(n: int, seed: int) -> np.ndarray:
    """Random pen strokes, white on black, 28x28: one to three cubic Bézier curves with random
    control points inside the central 18x18 pixels, 1.6-3.6 px wide with round ends, drawn at 4x
    and box-filtered down (so edges are grey, as in scanned pen strokes); seeded.

    No digit, letter or other shape is drawn on purpose: the set stands for "a drawing made of
    strokes" as such."""
    rng = np.random.default_rng(seed)
    scale, steps = 4, np.linspace(0.0, 1.0, 40)[:, None]
    out = np.empty((n, 28, 28), dtype=np.float32)
    for i in range(n):
        canvas = Image.new("L", (28 * scale, 28 * scale), 0)
        draw = ImageDraw.Draw(canvas)
        width = int(rng.uniform(1.6, 3.6) * scale)
        for _ in range(int(rng.integers(1, 4))):
            p = rng.uniform(5, 23, (4, 2)) * scale
            t, u = steps, 1 - steps
            curve = u**3 * p[0] + 3 * u**2 * t * p[1] + 3 * u * t**2 * p[2] + t**3 * p[3]
            draw.line([(float(x), float(y)) for x, y in curve], fill=255, width=width, joint="curve")
            r = width / 2
            for x, y in (curve[0], curve[-1]):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
        out[i] = np.asarray(canvas.resize((28, 28), Image.Resampling.BOX), dtype=np.float32) / 255.0
    return out
