"""Generated data sets of "own images" for the tests: small dark-on-light glyphs in several formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# (extension, Pillow format, mode): the formats a user's folder is likely to hold.
FORMATS = (
    ("png", "PNG", "L"),
    ("png", "PNG", "RGBA"),
    ("jpg", "JPEG", "RGB"),
    ("bmp", "BMP", "L"),
    ("tif", "TIFF", "L"),
    ("webp", "WEBP", "RGB"),
)


def glyph(rng: np.random.Generator, width: int, height: int, mode: str) -> Image.Image:
    """Dark strokes (an ellipse, a bar, a line) on a light background; RGBA: on transparency."""
    background: int | tuple[int, ...] = 255 if mode == "L" else (255, 255, 255)
    if mode == "RGBA":
        background = (255, 255, 255, 0)
    image = Image.new(mode, (width, height), background)
    draw = ImageDraw.Draw(image)
    ink: int | tuple[int, ...] = 0 if mode == "L" else (20, 20, 20, 255)[: len(mode)]
    stroke = max(2, min(width, height) // 8)
    x0, y0 = rng.uniform(0.1, 0.4) * width, rng.uniform(0.1, 0.4) * height
    x1, y1 = rng.uniform(0.6, 0.9) * width, rng.uniform(0.6, 0.9) * height
    draw.ellipse((x0, y0, x1, y1), outline=ink, width=stroke)
    if rng.random() < 0.5:
        draw.line((x0, y1, x1, y0), fill=ink, width=stroke)
    else:
        draw.rectangle((x0, (y0 + y1) / 2, x1, (y0 + y1) / 2 + stroke), fill=ink)
    return image


def write_folder(root: Path, n: int, seed: int = 0, classes: int = 3) -> list[Path]:
    """``n`` images of mixed sizes (16-64 px, not square) and formats, in class sub-folders."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        ext, fmt, mode = FORMATS[i % len(FORMATS)]
        width, height = (int(v) for v in rng.integers(16, 65, size=2))
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:04d}.{ext}"
        glyph(rng, width, height, mode).save(path, fmt)
        paths.append(path)
    return paths
