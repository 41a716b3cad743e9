"""Scoring an exported graph: ``autoencoder.onnx`` through onnxruntime on the CPU, as it ships.

:func:`evaluate_onnx` is the protocol of training/protocol.py on any images: for each level, noise
from a fresh generator, the graph's output, PSNR and SSIM per image, then their means. The
evaluation runs it on the test split with the test seed; `validation_scores` on the validation
split with validation's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training import protocol

EXAMPLE_IMAGES = 8
BATCH = 500


def run_onnx(path: Path, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """Denoise ``[n, 28, 28]`` images with an exported ``autoencoder.onnx`` (input ``image``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the machine's cores are shared with training jobs
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    x = images.reshape(-1, 1, 28, 28).astype(np.float32)
    parts = [session.run([output], {"image": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(parts).reshape(images.shape)


def evaluate_onnx(
    path: Path,
    images: np.ndarray,
    subset: int,
    levels: Sequence[float] = protocol.NOISE_LEVELS,
    seed: int = protocol.TEST_NOISE_SEED,
) -> tuple[dict[str, Any], dict[float, tuple[np.ndarray, np.ndarray]]]:
    """Mean PSNR/SSIM per level (all images and the first ``subset``), and a few outputs for plots."""
    row: dict[str, Any] = {"psnr": [], "ssim": [], "subset_psnr": [], "subset_ssim": []}
    examples = {}
    for s in levels:
        noisy = protocol.noisy(images, s, seed)
        out = run_onnx(path, noisy)
        for key, value in protocol.mean_scores(images, out, subset).items():
            row[key].append(value)
        examples[s] = (noisy[:EXAMPLE_IMAGES], out[:EXAMPLE_IMAGES])
    row["test_images"] = len(images)
    return row, examples


def validation_scores(
    graph: Path, val_x: np.ndarray, levels: Sequence[float] = protocol.NOISE_LEVELS
) -> dict[str, Any]:
    """Mean validation PSNR and SSIM of one graph at each level, with validation's noise seed."""
    row, _ = evaluate_onnx(graph, val_x, subset=len(val_x), levels=levels, seed=protocol.VAL_NOISE_SEED)
    return row
