"""Score exported models with the evaluation protocol and write their reports.

    python -m training.evaluate --model models/mnist-denoise
    python -m training.evaluate --all --summary docs/evaluation.md

Every model is run as it ships: its ``autoencoder.onnx`` through onnxruntime on the CPU. For each
noise level s the test images get ``clip(x + s * N, 0, 1)`` with N from a fresh ``default_rng(1234)``
(one draw over the whole evaluated array); PSNR and SSIM are per image, then averaged. The classical
baselines come from the per-dataset cache that `training.baselines` writes; the lesson's own
single-level denoiser (``docs/evaluation/lesson-<dataset>/autoencoder.onnx``) is scored by the same
code as any model and cached beside them.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training import noise_report, report
from training.baselines import (
    BM3D_TEST_IMAGES,
    DEFAULT_TEST_LIMIT,
    EVAL_SEED,
    compute_baselines,
    mean_scores,
    protocol_noisy,
    write_json,
)
from training.data import NOISE_LEVELS, DataError, Split, load_dataset

log = logging.getLogger(__name__)

EVALUATION_DIR = Path("docs/evaluation")
MODELS_DIR = Path("models")
LESSON_LABEL = "lesson conv AE (trained at s=0.5)"
EXAMPLE_LEVELS = (0.1, 0.3, 0.5)
EXAMPLE_IMAGES = 8
BATCH = 500


class EvaluationError(Exception):
    """A model directory, card or baseline cache cannot be used for this evaluation."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    test: np.ndarray,
    subset: int,
    levels: Sequence[float] = NOISE_LEVELS,
    seed: int = EVAL_SEED,
) -> tuple[dict[str, Any], dict[float, tuple[np.ndarray, np.ndarray]]]:
    """Mean PSNR/SSIM per level (all images and the first ``subset``), and a few outputs for plots.

    ``seed`` seeds each level's noise: the test protocol's by default; training.validate passes
    validation's own.
    """
    row: dict[str, Any] = {"psnr": [], "ssim": [], "subset_psnr": [], "subset_ssim": []}
    examples = {}
    for s in levels:
        noisy = protocol_noisy(test, s, seed)
        out = run_onnx(path, noisy)
        for key, value in mean_scores(test, out, subset).items():
            row[key].append(value)
        examples[s] = (noisy[:EXAMPLE_IMAGES], out[:EXAMPLE_IMAGES])
    row["test_images"] = len(test)
    return row, examples


# ---------------------------------------------------------------------------------------------
# Inputs: cards, data, the baseline cache.


def read_card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "card.json"
    try:
        card: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise EvaluationError(f"{path}: not found; is {model_dir} an exported model directory?") from None
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{path}: not valid JSON ({exc})") from exc
    if not (model_dir / "autoencoder.onnx").is_file():
        raise EvaluationError(f"{model_dir / 'autoencoder.onnx'}: not found")
    return card


def update_card_metrics(model_dir: Path, metrics: dict[str, Any]) -> None:
    """Replace the card's ``metrics`` atomically; the graphs (and their sha256) are untouched."""
    path = model_dir / "card.json"
    card = json.loads(path.read_text())
    card["metrics"] = metrics
    fd, tmp = tempfile.mkstemp(prefix=".card.", suffix=".tmp", dir=model_dir)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(card, indent=2) + "\n")
    os.chmod(tmp, 0o644)  # readable by a service running as another user
    os.replace(tmp, path)


@functools.cache
def _load(dataset: str, data_dir: str | None) -> Split:
    return load_dataset(dataset, data_dir)


class Context:
    """What every model of one evaluation run shares: data, the baseline cache, scored models."""

    def __init__(
        self,
        evaluation_dir: Path = EVALUATION_DIR,
        data_dir: str | None = None,
        test_limit: int | None = None,
        recompute_baselines: bool = False,
        workers: int = 2,
    ) -> None:
        self.evaluation_dir = evaluation_dir
        self.data_dir = data_dir
        self.test_limit = test_limit
        self.recompute = recompute_baselines
        self.workers = workers
        self._baselines: dict[str, dict[str, Any]] = {}
        self._scored: dict[tuple[str, str], tuple[dict[str, Any], dict[float, Any]]] = {}

    def test_images(self, dataset: str) -> np.ndarray:
        limit = self.test_limit if self.test_limit is not None else DEFAULT_TEST_LIMIT.get(dataset)
        test = _load(dataset, self.data_dir).test_x
        return test[:limit] if limit else test

    def baselines(self, dataset: str) -> dict[str, Any]:
        """The cached table for ``dataset``, rebuilt when asked or absent; its lesson rows kept current."""
        if dataset in self._baselines:
            return self._baselines[dataset]
        path = self.evaluation_dir / f"baselines-{dataset}.json"
        n = len(self.test_images(dataset))
        if self.recompute or not path.exists():
            log.info("computing the baselines for %s into %s (BM3D takes a while)", dataset, path)
            cache = compute_baselines(
                dataset,
                self.data_dir,
                test_limit=n,
                bm3d_test_images=min(BM3D_TEST_IMAGES, n),
                workers=self.workers,
            )
            cache["command"] = shlex.join(["python", "-m", "training.evaluate", *sys.argv[1:]])
            self.recompute = False  # once per dataset and run
        else:
            cache = json.loads(path.read_text())
            if cache["test_images"] != n:
                raise EvaluationError(
                    f"{path}: computed on {cache['test_images']} test images, this evaluation uses {n}; "
                    "pass --recompute-baselines or a matching --test-limit"
                )
        if self._refresh_lesson(dataset, cache) or not path.exists():
            write_json(path, cache)
        self._baselines[dataset] = cache
        return cache

    def _refresh_lesson(self, dataset: str, cache: dict[str, Any]) -> bool:
        """Score the lesson's denoiser into the cache unless the cached rows are for this very file."""
        onnx_path = self.evaluation_dir / f"lesson-{dataset}" / "autoencoder.onnx"
        models = cache.setdefault("models", {})
        if not onnx_path.is_file():
            return models.pop("lesson", None) is not None
        digest = _sha256(onnx_path)
        cached = models.get("lesson")
        if cached and cached.get("sha256") == digest and cached.get("test_images") == cache["test_images"]:
            return False  # the cache is rebuilt whole when its images change, so the subset matches too
        row, _ = self.score(onnx_path, dataset, cache["subset_images"])
        models["lesson"] = {"label": LESSON_LABEL, "path": str(onnx_path), "sha256": digest, **row}
        return True

    def score(
        self, onnx_path: Path, dataset: str, subset: int
    ) -> tuple[dict[str, Any], dict[float, tuple[np.ndarray, np.ndarray]]]:
        """Rows for one graph (each graph is scored once per run) and its example outputs."""
        key = (str(onnx_path.resolve()), dataset)
        if key not in self._scored:
            log.info("scoring %s on %s", onnx_path, dataset)
            self._scored[key] = evaluate_onnx(onnx_path, self.test_images(dataset), subset)
        return self._scored[key]


# ---------------------------------------------------------------------------------------------
# One model, and the whole models/ directory.


def collect_rows(ctx: Context, model_dir: Path, card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rows keyed by name, this model first: shipped models of the same data set, lesson, baselines."""
    dataset = card["dataset"]
    cache = ctx.baselines(dataset)
    rows: dict[str, dict[str, Any]] = {}
    subset = cache["subset_images"]
    own, _ = ctx.score(model_dir / "autoencoder.onnx", dataset, subset)
    rows[card["id"]] = {
        "label": f"**{card['id']}** (this model)",
        "kind": "model",
        "arch": card["arch"],
        **own,
    }
    for other_dir in sorted(model_dir.parent.iterdir()):
        if other_dir == model_dir or not (other_dir / "card.json").is_file():
            continue
        other = read_card(other_dir)
        if other.get("dataset") != dataset:
            continue
        row, _ = ctx.score(other_dir / "autoencoder.onnx", dataset, subset)
        rows[other["id"]] = {"label": other["id"], "kind": "model", "arch": other["arch"], **row}
    if "lesson" in cache.get("models", {}):
        rows["lesson"] = {"kind": "lesson", **cache["models"]["lesson"]}
    for key, entry in cache["methods"].items():
        rows[key] = {"kind": "classical", **entry}
    return rows


def evaluate_model(ctx: Context, model_dir: Path) -> dict[str, Any]:
    """Score one model, write ``<model_dir>/report/`` and the card's metrics; return what was written."""
    card = read_card(model_dir)
    dataset = card["dataset"]
    rows = collect_rows(ctx, model_dir, card)
    cache = ctx.baselines(dataset)
    _, examples = ctx.score(model_dir / "autoencoder.onnx", dataset, cache["subset_images"])
    own = rows[card["id"]]
    targets = report.check_targets(card["id"], rows)
    command = shlex.join(["python", "-m", "training.evaluate", "--model", str(model_dir), *_data_args(ctx)])
    out = model_dir / "report"
    out.mkdir(exist_ok=True)
    levels = cache["noise_levels"]
    sources = (
        str(ctx.evaluation_dir / f"baselines-{dataset}.json"),
        str(ctx.evaluation_dir / f"lesson-{dataset}") + "/",
    )
    report.write_markdown(out / "README.md", card, rows, cache, targets, command, sources)
    report.plot_psnr(out / "psnr_vs_noise.png", card["id"], rows, levels)
    report.plot_examples(out / "examples.png", card["id"], ctx.test_images(dataset), examples)
    update_card_metrics(
        model_dir,
        {
            "noise_levels": levels,
            "psnr": [round(v, 4) for v in own["psnr"]],
            "ssim": [round(v, 4) for v in own["ssim"]],
            "test_images": own["test_images"],
            "noise_seed": EVAL_SEED,
            "protocol": "docs/evaluation/README.md's protocol; report/README.md has the baselines",
            "command": command,
        },
    )
    log.info("%s: PSNR %s", card["id"], " ".join(f"{v:.2f}" for v in own["psnr"]))
    return {"card": read_card(model_dir), "rows": rows, "targets": targets, "baselines": cache}


def _data_args(ctx: Context) -> list[str]:
    args = ["--data-dir", ctx.data_dir] if ctx.data_dir else []
    return args + (["--test-limit", str(ctx.test_limit)] if ctx.test_limit is not None else [])


def model_dirs(models_dir: Path) -> list[Path]:
    return sorted(p.parent for p in models_dir.glob("*/card.json"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
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
        help="score the first N test images (default: all of mnist5k, the first 2000 of fashion/mnist)",
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
        default=noise_report.TUNE_IMAGES,
        help="other noises and own data: validation images the classical methods are tuned on",
    )
    parser.add_argument("--recompute-baselines", action="store_true", help="rebuild the baseline cache")
    parser.add_argument("--workers", type=int, default=2, choices=(1, 2), help="processes for BM3D")
    parser.add_argument("--summary", type=Path, help="also write a summary over every model (markdown)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ctx = Context(args.evaluation_dir, args.data_dir, args.test_limit, args.recompute_baselines, args.workers)
    dirs = model_dirs(args.models_dir) if args.all else list(args.model)
    if not dirs:
        raise SystemExit(f"no model directories with a card.json under {args.models_dir}")
    try:
        results = []
        for d in dirs:
            card = read_card(d)
            if noise_report.uses_noise_report(card):
                # Other noises and own data: scored per noise kind (training/noise_report.py); these
                # models are left out of the Gaussian-only --summary.
                noise_report.evaluate_noise_model(
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
        cli_args = list(argv) if argv is not None else sys.argv[1:]
        command = shlex.join(["python", "-m", "training.evaluate", *cli_args])
        report.write_summary(args.summary, results, command)
        log.info("wrote %s", args.summary)


if __name__ == "__main__":
    main()
