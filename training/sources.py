"""A user's own images as a data set: ``folder:PATH``, ``npz:PATH`` or ``npy:PATH``.

Every image becomes float32 ``[28, 28]`` in [0, 1], white on black, through the very function the
service runs for ``/denoise?resize=true`` (and ``invert=true`` for dark-on-light sets): contract/pixels.py,
which both import. A model is trained on exactly what it will be served:

- ``folder:PATH``: every non-hidden file under PATH (any depth; class sub-folders are ignored).
  When PATH has ``train/`` and ``test/`` sub-folders, they are the splits; otherwise the test split
  is carved out by a seeded permutation (``TEST_FRACTION``). Files that are not images, cannot be
  decoded or are smaller than ``MIN_SIDE`` pixels on a side fail the load (the message counts them
  and names the first few) unless ``skip_bad``.
- ``npy:PATH``: one ``[N, H, W]`` array, uint8 (0-255) or float in [0, 1].
- ``npz:PATH``: arrays ``train`` (and optionally ``test``), or a single array of any name.

Dark on light: with ``invert="auto"`` the set is inverted when most images have a bright border
(the mean of their outermost pixels above 0.5), as the service's ``invert=true`` would do.
The validation split is then carved from the training images (`training.splits.carve_validation`).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from contract.pixels import ImageError, open_image, to_array  # the service's resize=true path
from training.splits import VAL_FRACTION, DataError, Split, carve_validation

PREFIXES = ("folder", "npz", "npy")
# Smaller images would be blown up more than 3.5x: too little detail to learn 28x28 from.
MIN_SIDE = 8
# Pixels per file, checked from the header before decoding: four times the service's default limit
# (AE_MAX_PIXELS, 2048²), since these are files the user chose, yet bounded against decompression bombs.
MAX_PIXELS = 4096 * 4096
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 2
# At least this many training images after both carve-outs, plus one validation and one test image.
MIN_TRAIN = 8
NAMED = 5  # bad files named in a message


def is_source(name: str) -> bool:
    prefix, sep, rest = name.partition(":")
    return bool(sep) and prefix in PREFIXES and bool(rest)


def source_id(name: str) -> str:
    """A model-id stem for a source: the file or folder name (``folder:data/glyphs/`` -> ``glyphs``)."""
    return Path(name.partition(":")[2].rstrip("/")).stem or name.partition(":")[0]


def convert(image: Image.Image, *, invert: bool) -> np.ndarray:
    """The one place where an image becomes a model input: the service's ``resize=true`` path."""
    return to_array(image, resize=True, invert=invert)


def _bright_border(x: np.ndarray) -> bool:
    border = np.concatenate([x[0], x[-1], x[1:-1, 0], x[1:-1, -1]])
    return float(border.mean()) > 0.5


def _decide_invert(images: Sequence[np.ndarray], invert: str) -> bool:
    if invert in ("yes", "no"):
        return invert == "yes"
    return sum(_bright_border(x) for x in images) * 2 > len(images)


def _pretty(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class _Bad:
    """Files that failed, by reason, for one message."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.items: list[tuple[Path, str]] = []

    def add(self, path: Path, why: str) -> None:
        self.items.append((path, why))

    def message(self, total: int) -> str:
        shown = "; ".join(f"{_pretty(p, self.root)} ({why})" for p, why in self.items[:NAMED])
        more = f"; and {len(self.items) - NAMED} more" if len(self.items) > NAMED else ""
        return f"{len(self.items)} of {total} files are not usable images: {shown}{more}"


class _Unusable(Exception):
    """One file that cannot be a training image; the message says why."""


def _decode_file(path: Path, invert: bool) -> np.ndarray:
    try:
        image = open_image(path.read_bytes(), MAX_PIXELS)
        if min(image.size) < MIN_SIDE:
            raise _Unusable(f"{image.width}×{image.height} is smaller than {MIN_SIDE}×{MIN_SIDE}")
        return convert(image, invert=invert)
    except OSError as exc:
        raise _Unusable(f"cannot read: {exc.strerror or exc}") from None
    except ImageError as exc:
        raise _Unusable(str(exc)) from None


def _decode_files(files: list[Path], invert: bool, bad: _Bad | None) -> tuple[list[Path], list[np.ndarray]]:
    """Decode ``files``; the unusable ones go to ``bad`` (or raise when ``bad`` is None)."""
    paths, arrays = [], []
    for path in files:
        try:
            arrays.append(_decode_file(path, invert))
        except _Unusable as exc:
            if bad is None:
                raise DataError(f"{path}: {exc}") from None
            bad.add(path, str(exc))
            continue
        paths.append(path)
    return paths, arrays


def _list_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def load_folder(root: Path, *, skip_bad: bool = False, invert: str = "auto") -> tuple[dict[str, Any], dict]:
    """Decode every image under ``root``; returns ``{"train": x, "test": x | None}`` and facts."""
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    parts = {"train": root / "train", "test": root / "test"}
    has_splits = parts["train"].is_dir() and parts["test"].is_dir()
    groups = {k: _list_files(v) for k, v in parts.items()} if has_splits else {"train": _list_files(root)}
    total = sum(len(v) for v in groups.values())
    if total == 0:
        raise DataError(
            f"{root}: no files (expected PNG, JPEG, BMP, TIFF or WebP images, in sub-folders or not)"
        )
    bad = _Bad(root)
    # Decode as is; dark-on-light sets are decoded once more with invert=True, which composites
    # transparency onto white before inverting, as the service does (re-read: nothing big is kept).
    decoded = {k: _decode_files(v, False, bad) for k, v in groups.items()}
    if bad.items and not skip_bad:
        raise DataError(f"{root}: {bad.message(total)}; fix or remove them, or pass --skip-bad")
    for key, (paths, _) in decoded.items():
        if not paths:
            raise DataError(f"{root}: no usable image in {'the ' + key + '/ folder' if has_splits else 'it'}")
    flip = _decide_invert(decoded["train"][1], invert)
    if flip:
        decoded = {k: _decode_files(paths, True, None) for k, (paths, _) in decoded.items()}
    arrays = {k: np.stack(v[1]).astype(np.float32) for k, v in decoded.items()}
    facts = {
        "source": f"folder {root.resolve()}",
        "files": total,
        "skipped": len(bad.items),
        "skipped_examples": [_pretty(p, root) for p, _ in bad.items[:NAMED]],
        "inverted": flip,
        "splits_from": "train/ and test/ sub-folders" if has_splits else None,
    }
    return {"train": arrays["train"], "test": arrays.get("test")}, facts


def _array_images(array: np.ndarray, where: str, invert: str) -> tuple[np.ndarray, bool]:
    """Validate an ``[N, H, W]`` array and convert it (resize, polarity) like the folder images."""
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(f"{where}: expected an N×H×W array of images, got shape {list(array.shape)}")
    if len(array) == 0:
        raise DataError(f"{where}: the array holds no images (shape {list(array.shape)})")
    h, w = array.shape[1:]
    if min(h, w) < MIN_SIDE:
        raise DataError(f"{where}: images are {w}×{h}, smaller than {MIN_SIDE}×{MIN_SIDE}")
    if array.dtype != np.uint8 and np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise DataError(f"{where}: the array holds NaN or infinite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"{where}: float images must lie in [0, 1], these span [{lo:g}, {hi:g}] "
                "(scale them, or pass uint8)"
            )
        array = array.astype(np.float32)  # Pillow mode "F": read as [0, 1] by the conversion
    elif array.dtype != np.uint8:
        raise DataError(
            f"{where}: dtype {array.dtype} is not supported; use uint8 (0-255) or float in [0, 1]"
        )
    plain = [convert(Image.fromarray(a), invert=False) for a in array]
    flip = _decide_invert(plain, invert)
    images = [convert(Image.fromarray(a), invert=True) for a in array] if flip else plain
    return np.stack(images).astype(np.float32), flip


def load_arrays(path: Path, kind: str, *, invert: str = "auto") -> tuple[dict[str, Any], dict]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if kind == "npy":
            found: dict[str, np.ndarray] = {"train": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as npz:
                found = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .{kind} file ({exc})") from None
    if kind == "npz" and "train" not in found:
        if len(found) != 1:
            raise DataError(
                f"{path}: expected an array named 'train' (and optionally 'test'), or a single array; "
                f"found {sorted(found) or 'none'}"
            )
        found = {"train": next(iter(found.values()))}
    flips = {}
    out: dict[str, Any] = {"train": None, "test": None}
    for key in ("train", "test"):
        if key in found:
            out[key], flips[key] = _array_images(
                found[key], f"{path}[{key}]" if kind == "npz" else str(path), invert
            )
    facts = {
        "source": f"{kind} {path.resolve()}",
        "inverted": flips["train"],
        "splits_from": "arrays 'train' and 'test'" if out["test"] is not None else None,
    }
    return out, facts


def load_source(name: str, *, skip_bad: bool = False, invert: str = "auto") -> Split:
    """``folder:PATH``, ``npz:PATH`` or ``npy:PATH`` as train / validation / test splits."""
    if not is_source(name):
        raise DataError(f"{name!r}: expected folder:PATH, npz:PATH or npy:PATH")
    kind, _, rest = name.partition(":")
    path = Path(rest).expanduser()
    if kind == "folder":
        arrays, facts = load_folder(path, skip_bad=skip_bad, invert=invert)
    else:
        arrays, facts = load_arrays(path, kind, invert=invert)
    train, test = arrays["train"], arrays["test"]
    n = len(train)
    if test is None:
        # No test split given: carve one, as the validation split is carved below.
        n_test = math.ceil(TEST_FRACTION * n)
        if not _fits(n):
            need = next(m for m in range(MIN_TRAIN, 100 * MIN_TRAIN) if _fits(m))
            raise DataError(
                f"{name}: {n} images; the splits need at least {need} "
                f"({TEST_FRACTION:.0%} test, {VAL_FRACTION:.1%} of the rest validation, {MIN_TRAIN} train)"
            )
        perm = np.random.default_rng(TEST_SPLIT_SEED).permutation(n)
        test, train = train[perm[n - n_test :]], train[perm[: n - n_test]]
        test_rule = f"last {n_test} of numpy.random.default_rng({TEST_SPLIT_SEED}).permutation({n})"
    else:
        if not _fits(n, test_fraction=0.0):
            need = next(m for m in range(MIN_TRAIN, 100 * MIN_TRAIN) if _fits(m, test_fraction=0.0))
            raise DataError(
                f"{name}: {n} training images; the splits need at least {need} "
                f"({VAL_FRACTION:.1%} validation, {MIN_TRAIN} train)"
            )
        test_rule = f"all {len(test)} images of the test split ({facts['splits_from']})"
    labels = np.full(len(train), -1, dtype=np.int64)  # class folders are ignored: no labels
    split = carve_validation(
        train, labels, test, np.full(len(test), -1, dtype=np.int64), test_source=test_rule
    )
    split.info.update(facts)
    split.info["conversion"] = "contract.pixels.to_array(resize=True" + (
        ", invert=True): dark on light, inverted" if facts["inverted"] else "): white on black"
    )
    return split


def _fits(n: int, test_fraction: float = TEST_FRACTION) -> bool:
    """Whether ``n`` images leave at least one test (when carved), one validation and MIN_TRAIN train."""
    n_test = math.ceil(test_fraction * n)
    n_val = max(1, math.ceil(VAL_FRACTION * (n - n_test)))
    return (test_fraction == 0 or n_test >= 1) and n - n_test - n_val >= MIN_TRAIN
