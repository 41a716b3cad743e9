"""The three splits every data set is cut into (docs/evaluation.md, "Splits").

The test split is fixed by the data set (MNIST-5k: the last 1,000 of a seeded permutation; IDX sets:
the t10k files; own images: their test/ folder or a seeded carve-out) and is read only by the final
evaluation. The validation split, carved out of the training images here by a seeded permutation,
makes every choice: recipe, epochs, checkpoint, baseline parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.protocol import TEST_NOISE_SEED, VAL_NOISE_SEED

# The validation split: this fraction of the training images (at least one), chosen by
# default_rng(VAL_SPLIT_SEED).permutation over the training split; the rest stay for training.
VAL_FRACTION = 0.125
VAL_SPLIT_SEED = 1


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
