"""`python -m training.evaluate`: score exported models, the one command line of the evaluation.

    python -m training.evaluate --model models/mnist-denoise          # same as: evaluate --model ...
    python -m training.evaluate --all --summary docs/evaluation.md
    python -m training.evaluate validate --data mnist5k runs/out/a models/mnist-unet

``evaluate`` (the default) scores models on the test split and writes ``models/<id>/report/`` and
the card's metrics: Gaussian-only models through training/gaussian_eval.py, other noises and own
data through training/noise_eval.py. ``validate`` compares models on the validation split (with
validation's own noise), where every choice between recipes and runs is made.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from contract.card import model_dirs
from training import noise_eval, report
from training.data import DATASETS, load_dataset
from training.gaussian_eval import (
    EVALUATION_DIR,
    Context,
    EvaluationError,
    evaluate_model,
    read_card,
)
from training.protocol import NOISE_LEVELS, TEST_LIMIT, TUNE_IMAGES, VAL_NOISE_SEED
from training.score import validation_scores
from training.splits import DataError

log = logging.getLogger(__name__)

MODELS_DIR = Path("models")
COMMANDS = ("evaluate", "validate")


def _evaluate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="score models on the test split; write their reports and card metrics (the default)",
        description="Score exported models (autoencoder.onnx, onnxruntime CPU) against the classical "
        "baselines and the lesson's denoiser at every noise level; write models/<id>/report/ and "
        "the card's metrics.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, action="append", help="a model directory (repeatable)")
    which.add_argument("--all", action="store_true", help="every models/<id>/ with a card.json")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where --all looks")
    parser.add_argument("--data-dir", help="IDX directory for the mnist data set (fashion has a default)")
    parser.add_argument(
        "--data",
        help="own images (folder:, npz:, npy:): where they are now, when not where the card says",
    )
    parser.add_argument(
        "--test-limit",
        type=int,
        help=f"score the first N test images (default {TEST_LIMIT}: all of mnist5k's 1000)",
    )
    parser.add_argument(
        "--evaluation-dir",
        type=Path,
        default=EVALUATION_DIR,
        help="holds baselines-<dataset>.json and lesson-<dataset>/autoencoder.onnx",
    )
    parser.add_argument(
        "--tune-images",
        type=int,
        default=TUNE_IMAGES,
        help="other noises and own data: validation images the classical methods are tuned on",
    )
    parser.add_argument("--recompute-baselines", action="store_true", help="rebuild the baseline cache")
    parser.add_argument("--workers", type=int, default=2, choices=(1, 2), help="processes for BM3D")
    parser.add_argument(
        "--summary",
        type=Path,
        help="also write a summary over every model (markdown; with --all only: it is rewritten whole)",
    )


def _validate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "validate",
        help="compare models on the validation split (validation's noise seed)",
        description="Mean PSNR (dB) / SSIM per protocol level through each autoencoder.onnx, on the "
        f"validation split with validation's own noise (a fresh default_rng({VAL_NOISE_SEED}) per "
        "level). Comparisons of recipes and runs are made here; the test split is for the final "
        "report only.",
    )
    parser.add_argument("models", nargs="+", type=Path, help="model directories (or autoencoder.onnx files)")
    parser.add_argument("--data", choices=DATASETS, default="mnist5k")
    parser.add_argument("--data-dir", type=Path, help="IDX directory (mnist; fashion has a default)")
    parser.add_argument("--limit", type=int, default=2000, help="score the first N validation images")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _evaluate_parser(sub)
    _validate_parser(sub)
    args = list(argv)
    if not args or args[0] not in (*COMMANDS, "-h", "--help"):
        args = ["evaluate", *args]  # `evaluate` is the default command
    return parser.parse_args(args)


def run_evaluate(args: argparse.Namespace, cli_args: Sequence[str]) -> None:
    if args.summary and not args.all:
        # The summary is rewritten from this run's results: from --model alone it would drop every
        # other model's section (and docs/evaluation.md would lose them).
        raise SystemExit(
            "error: --summary writes the summary of every model and needs --all "
            "(--models-dir picks where they are); drop --summary to evaluate single models"
        )
    ctx = Context(args.evaluation_dir, args.data_dir, args.test_limit, args.recompute_baselines, args.workers)
    dirs = model_dirs(args.models_dir) if args.all else list(args.model)
    if not dirs:
        raise SystemExit(f"no model directories with a card.json under {args.models_dir}")
    try:
        results = []
        for d in dirs:
            card = read_card(d)
            if noise_eval.uses_noise_report(card):
                # Other noises and own data: scored per noise kind; these models are left out of
                # the Gaussian-only --summary.
                noise_eval.evaluate_noise_model(
                    d,
                    card,
                    data=args.data,
                    data_dir=args.data_dir,
                    test_limit=args.test_limit,
                    evaluation_dir=args.evaluation_dir,
                    tune_images=args.tune_images,
                )
            else:
                results.append(evaluate_model(ctx, d))
    except (EvaluationError, DataError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if args.summary:
        command = shlex.join(["python", "-m", "training.evaluate", *cli_args])
        report.write_summary(args.summary, results, command)
        log.info("wrote %s", args.summary)


def run_validate(args: argparse.Namespace) -> None:
    try:
        val_x = load_dataset(args.data, args.data_dir).val_x[: args.limit]
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from exc
    graphs = [m / "autoencoder.onnx" if m.is_dir() else m for m in args.models]
    missing = [str(g) for g in graphs if not g.is_file()]
    if missing:
        raise SystemExit(f"error: no such graph: {', '.join(missing)}")
    rows = {
        str(model): validation_scores(graph, val_x) for model, graph in zip(args.models, graphs, strict=True)
    }
    header = (
        f"validation split of {args.data}: {len(val_x)} images, noise default_rng({VAL_NOISE_SEED}) per level"
    )
    sys.stdout.write(header + "\n" + report.validation_table(rows, NOISE_LEVELS) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    cli_args = list(argv) if argv is not None else sys.argv[1:]
    args = parse_args(cli_args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "validate":
        run_validate(args)
    else:
        run_evaluate(args, cli_args)


if __name__ == "__main__":
    main()
