"""`python -m training.seeds`: models compared under several noise seeds, not only the protocol's.

    python -m training.seeds --data fashion --split test --reference 883b244:models/fashion-unet \\
        models/fashion-s2d models/fashion-unet

A difference of a tenth of a dB between two denoisers can come from the one noise draw the
protocol uses. Here every model is scored at every protocol level under each of several seeds
(each seed a fresh ``default_rng(seed)`` per level, as the protocol draws its noise), on the same
images; the table gives each model's mean PSNR over the seeds and, against the reference, the mean
difference and the worst seed's difference. Choices are made with ``--split validation``; the test
split is for the final report.

A model is a model directory, an ``autoencoder.onnx`` file, or ``REV:PATH`` for a model directory as
git revision REV holds it (``883b244:models/fashion-unet``), read with ``git show``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training import protocol
from training.data import DATASETS, DataError, load_dataset
from training.protocol import NOISE_LEVELS, TEST_LIMIT, TEST_NOISE_SEED, VAL_NOISE_SEED, psnr
from training.score import run_onnx

EXTRA_SEEDS = (1, 2, 3, 4)
REPO = Path(__file__).resolve().parents[1]


def resolve_graph(spec: str, workdir: Path) -> Path:
    """The autoencoder.onnx a model argument names, extracted from git for ``REV:PATH``."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        return path / "autoencoder.onnx"
    rev, sep, inner = spec.partition(":")
    if not sep or not inner:
        raise SystemExit(f"error: {spec}: no such model directory or graph")
    out = workdir / f"{rev}-{inner.replace('/', '-')}.onnx"
    try:
        data = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:{inner.rstrip('/')}/autoencoder.onnx"],
            check=True,
            capture_output=True,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"error: {spec}: {exc.stderr.decode().strip()}") from None
    out.write_bytes(data)
    return out


def psnr_table(graph: Path, clean: np.ndarray, seeds: Sequence[int], levels: Sequence[float]) -> np.ndarray:
    """Mean PSNR [seed, level] of one graph over `clean`."""
    return np.array(
        [
            [float(psnr(clean, run_onnx(graph, protocol.noisy(clean, s, seed))).mean()) for s in levels]
            for seed in seeds
        ]
    )


def markdown(
    scores: dict[str, np.ndarray], reference: str | None, seeds: Sequence[int], levels: Sequence[float]
) -> str:
    head = "| model | " + " | ".join(f"s={s:g}" for s in levels) + " |"
    lines = [head, "|---|" + "---|" * len(levels)]
    for name, table in scores.items():
        lines.append(
            f"| {name} (mean of {len(seeds)} seeds) | "
            + " | ".join(f"{v:.2f}" for v in table.mean(axis=0))
            + " |"
        )
        if reference is not None and name != reference:
            diff = table - scores[reference]  # paired: same images, same noise
            cells = (f"{m:+.2f} ({w:+.2f})" for m, w in zip(diff.mean(axis=0), diff.min(axis=0), strict=True))
            lines.append(f"| difference to {reference}: mean (worst seed) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="+", help="model directories, autoencoder.onnx files or REV:PATH")
    parser.add_argument("--data", choices=DATASETS, default="mnist5k")
    parser.add_argument("--data-dir", type=Path, help="IDX directory (mnist; fashion has a default)")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help=f"noise seeds (default: the split's own, {VAL_NOISE_SEED} or {TEST_NOISE_SEED}, "
        f"and {list(EXTRA_SEEDS)})",
    )
    parser.add_argument(
        "--limit", type=int, help="first N images (default: the evaluation's test limit; 2000 of validation)"
    )
    parser.add_argument("--reference", help="the model the differences are taken to (added to the models)")
    parser.add_argument("--json", type=Path, help="also write every [seed, level] score here")
    args = parser.parse_args(argv)
    try:
        split = load_dataset(args.data, args.data_dir)
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if args.split == "test":
        clean, own_seed = split.test_x, TEST_NOISE_SEED
        limit = args.limit or TEST_LIMIT
    else:
        clean, own_seed = split.val_x, VAL_NOISE_SEED
        limit = args.limit or 2000
    clean = clean[:limit] if limit else clean
    seeds = args.seeds or [own_seed, *EXTRA_SEEDS]
    names = ([args.reference] if args.reference else []) + [m for m in args.models if m != args.reference]
    with tempfile.TemporaryDirectory(prefix="seeds-") as tmp:
        graphs = {name: resolve_graph(name, Path(tmp)) for name in names}
        scores = {name: psnr_table(graph, clean, seeds, NOISE_LEVELS) for name, graph in graphs.items()}
    sys.stdout.write(
        f"{args.data} {args.split} split, {len(clean)} images, noise seeds {seeds} "
        f"(a fresh default_rng(seed) per level); PSNR dB\n\n"
    )
    sys.stdout.write(markdown(scores, args.reference, seeds, NOISE_LEVELS))
    if args.json:
        payload = {
            "data": args.data,
            "split": args.split,
            "images": len(clean),
            "seeds": seeds,
            "levels": list(NOISE_LEVELS),
            "psnr": {name: table.round(4).tolist() for name, table in scores.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
