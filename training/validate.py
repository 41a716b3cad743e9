"""`python -m training.validate`: score exported models on the validation split, to choose between them.

    python -m training.validate --data mnist5k runs/out/a runs/out/b models/mnist-unet

Mean PSNR (dB) / SSIM per protocol level through each `autoencoder.onnx`, on the validation split with
validation's own noise (a fresh ``default_rng(VAL_NOISE_SEED)`` per level). Comparisons of recipes
and runs are made here; the test split is `training.evaluate`'s, for the final report only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.data import DATASETS, NOISE_LEVELS, VAL_NOISE_SEED, DataError, load_dataset
from training.evaluate import evaluate_onnx


def validation_scores(
    graph: Path, val_x: np.ndarray, levels: Sequence[float] = NOISE_LEVELS
) -> dict[str, Any]:
    """Mean validation PSNR and SSIM of one graph at each level (training.evaluate's scoring)."""
    row, _ = evaluate_onnx(graph, val_x, subset=len(val_x), levels=levels, seed=VAL_NOISE_SEED)
    return row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.validate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="+", type=Path, help="model directories (or autoencoder.onnx files)")
    parser.add_argument("--data", choices=DATASETS, default="mnist5k")
    parser.add_argument("--data-dir", type=Path, help="IDX directory (mnist; fashion has a default)")
    parser.add_argument("--limit", type=int, default=2000, help="score the first N validation images")
    args = parser.parse_args(argv)
    try:
        val_x = load_dataset(args.data, args.data_dir).val_x[: args.limit]
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from exc
    graphs = [m / "autoencoder.onnx" if m.is_dir() else m for m in args.models]
    missing = [str(g) for g in graphs if not g.is_file()]
    if missing:
        raise SystemExit(f"error: no such graph: {', '.join(missing)}")
    lines = [
        f"validation split of {args.data}: {len(val_x)} images, "
        f"noise default_rng({VAL_NOISE_SEED}) per level",
        "| model | " + " | ".join(f"s={s:g}" for s in NOISE_LEVELS) + " |",
        "|---|" + "---|" * len(NOISE_LEVELS),
    ]
    for model, graph in zip(args.models, graphs, strict=True):
        row = validation_scores(graph, val_x)
        cells = (f"{p:.2f} / {q:.3f}" for p, q in zip(row["psnr"], row["ssim"], strict=True))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
