"""Evaluation under the noise a model was made for: each kind of its card, against the classical baselines.

`python -m training.evaluate` hands a model here when its card names a noise other than plain Gaussian, or
data of the user's own (``folder:``, ``npz:``, ``npy:``). For every kind the model was trained for
(training/noise.py; ``mixed``: all four) and every evaluation level of that kind:

- the test images get the noise from a fresh ``default_rng(1234)``, one draw over the whole array
  (for Gaussian: exactly the protocol of docs/evaluation/README.md);
- the model runs as it ships (``autoencoder.onnx``, onnxruntime CPU); so do the other models in
  the same models folder that were trained on the same data, for comparison;
- the classical baselines are tuned per level by mean PSNR on the validation split (noise from a
  fresh ``default_rng(999)``) and scored on the same noisy test images. Methods whose parameter
  scales with the noise (NL-means) scale it with the noise's measured standard deviation. BM3D is
  slow: it appears only for Gaussian noise on a built-in data set, taken from the cached table
  (docs/evaluation/baselines-<dataset>.json), which follows the same protocol on the same images.

The report (``report/README.md``, ``psnr_vs_noise.png``, ``examples.png``) has one section per kind
(:func:`noise_report`, written by training/report.py's one writer, as the Gaussian report is); the
card's ``metrics.by_noise`` holds the model's own figures.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contract import card as cards
from training import noise as noise_models
from training import report
from training.baselines import METHODS_BY_KEY, Method, Params, Runner, tune
from training.data import DATASETS, load_dataset
from training.protocol import TEST_LIMIT, TEST_NOISE_SEED, TUNE_IMAGES, VAL_NOISE_SEED, mean_scores
from training.score import run_onnx
from training.sources import is_source
from training.splits import Split

log = logging.getLogger(__name__)

EXAMPLES = 6


# The cheap classical methods, with the size-tuned median beside the 3x3 (salt-and-pepper at high
# density leaves whole 3x3 windows corrupted).
CHEAP_METHODS: tuple[Method, ...] = (
    METHODS_BY_KEY["noisy"],
    METHODS_BY_KEY["gaussian"],
    METHODS_BY_KEY["median"],
    METHODS_BY_KEY["median_tuned"],
    METHODS_BY_KEY["nl_means"],
)


def trained_kinds(card: dict[str, Any]) -> tuple[noise_models.Kind, ...]:
    noise = card.get("noise") or {}
    return noise_models.kinds_of(noise.get("kind", "gaussian"))


def uses_noise_report(card: dict[str, Any]) -> bool:
    """Models that the classic Gaussian-only evaluation cannot score."""
    return trained_kinds(card) != ("gaussian",) or card.get("dataset") not in DATASETS


def load_split(card: dict[str, Any], data: str | None, data_dir: str | None) -> Split:
    """The data the model was trained on (``data`` overrides the card's, e.g. a moved folder)."""
    train = (card.get("config") or {}).get("train") or {}
    name = data or card["dataset"]
    options: dict[str, Any] = {}
    if is_source(name):
        options = {"skip_bad": bool(train.get("skip_bad", False)), "invert": train.get("invert", "auto")}
    return load_dataset(name, data_dir, **options)


def _tune(method: Method, clean: np.ndarray, noisy: np.ndarray, runner: Runner) -> Params:
    """The tuner of training/baselines.py (never on a grid edge) on this noise; per-s axes scale
    with the noise's measured standard deviation."""
    if not method.axes:
        return {}
    sigma = max(float(np.sqrt(np.mean((noisy.astype(np.float64) - clean) ** 2))), 1e-3)
    return tune(method, clean, sigma, runner, noisy=noisy, strict=False).params


def _cached_gaussian(dataset: str, n_test: int, evaluation_dir: Path) -> dict[str, Any] | None:
    path = evaluation_dir / f"baselines-{dataset}.json"
    if dataset not in DATASETS or not path.is_file():
        return None
    cache: dict[str, Any] = json.loads(path.read_text())
    if cache.get("test_images") != n_test or list(cache["noise_levels"]) != list(
        noise_models.SPECS["gaussian"].eval_levels
    ):
        return None
    return cache


def score_kind(
    kind: noise_models.Kind,
    split: Split,
    test: np.ndarray,
    graphs: dict[str, Path],
    runner: Runner,
    cached: dict[str, Any] | None,
    tune_images: int = TUNE_IMAGES,
) -> dict[str, Any]:
    """Rows (models, then baselines) for one kind at its evaluation levels, and example images."""
    spec = noise_models.SPECS[kind]
    subset = cached["subset_images"] if cached else len(test)
    rows: dict[str, dict[str, Any]] = {}

    def add(key: str, label: str, kind_: str, n: int, scores: dict[str, float]) -> None:
        row = rows.setdefault(
            key,
            {"label": label, "kind": kind_, "test_images": n, **{k: [] for k in scores}},
        )
        for k, v in scores.items():
            row[k].append(round(v, 4))

    examples: dict[float, dict[str, np.ndarray]] = {}
    tuned: dict[str, list[Params]] = {}
    val = split.val_x[:tune_images]
    for level in spec.eval_levels:
        noisy = noise_models.noisy_numpy(kind, test, level, TEST_NOISE_SEED)
        examples[level] = {"noisy": noisy[:EXAMPLES]}
        for key, path in graphs.items():
            out = run_onnx(path, noisy)
            add(key, key, "model", len(test), mean_scores(test, out, subset))
            examples[level][key] = out[:EXAMPLES]
        if cached is not None:
            continue
        val_noisy = noise_models.noisy_numpy(kind, val, level, VAL_NOISE_SEED)
        for method in CHEAP_METHODS:
            param = _tune(method, val, val_noisy, runner)
            if method.axes:
                tuned.setdefault(method.key, []).append(param)
            (out,) = runner.apply_many(method, [(noisy, param)])
            add(method.key, method.label, "classical", len(test), mean_scores(test, out, subset))
    if cached is not None:
        for key, entry in cached["methods"].items():
            rows[key] = {
                "kind": "classical",
                **{k: entry[k] for k in ("label", "test_images", "psnr", "ssim")},
            }
            rows[key].update(subset_psnr=entry["subset_psnr"], subset_ssim=entry["subset_ssim"])
            if "params" in entry:
                tuned[key] = entry["params"]
    return {
        "kind": kind,
        "level_name": spec.level_name,
        "levels": list(spec.eval_levels),
        "rows": rows,
        "subset_images": subset,
        "tuned": tuned,
        "baselines_from": "cache" if cached is not None else "tuned on validation",
        "examples": examples,
    }


def _peers(model_dir: Path, card: dict[str, Any]) -> dict[str, Path]:
    """This model first, then every other model beside it trained on the same data."""
    graphs = {card["id"]: model_dir / "autoencoder.onnx"}
    for other in sorted(model_dir.parent.glob("*/card.json")):
        if other.parent == model_dir:
            continue
        other_card = cards.read_card(other.parent, served=False)
        if other_card.get("dataset") == card["dataset"] and (other.parent / "autoencoder.onnx").is_file():
            graphs[other_card["id"]] = other.parent / "autoencoder.onnx"
    return graphs


def _kind_section(card: dict[str, Any], result: dict[str, Any]) -> report.Section:
    """One noise kind: its table (and the paired one where BM3D comes from the cache), or its table
    and the parameters the classical methods were tuned to."""
    name, levels, rows = result["level_name"], result["levels"], result["rows"]
    heading = f"{result['kind']} ({name})"
    if result["baselines_from"] == "cache":
        subset = result["subset_images"]
        return report.Section(
            heading,
            [
                f"Classical rows from `docs/evaluation/baselines-{card['dataset']}.json` (same protocol, "
                f"same images; BM3D on the first {subset}).",
                report.table(rows, levels, level_name=name, bold_first=True),
                f"Paired, every method on the first {subset} test images:",
                report.table(rows, levels, subset=subset, level_name=name, bold_first=True),
            ],
        )
    tuned = report.tuned_table(name, levels, result["tuned"])
    return report.Section(
        heading,
        [
            report.table(rows, levels, level_name=name, bold_first=True),
            "Tuned parameters (Gaussian blur: σ in pixels; median: window size; NL-means: h, patch size "
            "and distance), each on the validation split:"
            if tuned
            else "",
            tuned,
        ],
    )


def noise_report(
    card: dict[str, Any], results: Sequence[dict[str, Any]], test_source: str, n: int, command: str
) -> report.Report:
    """The report of a model scored per noise kind: one section per kind, the plots, the command."""
    noise = (card.get("noise") or {}).get("description", "gaussian")
    return report.Report(
        title=f"{card['id']}: evaluation under the noise it was made for",
        intro=[
            card.get("description", ""),
            f"Trained for: {noise}. Data: `{card['dataset']}`; the first **{n}** test images "
            f"({test_source}) are scored.",
            "For each kind and level the test images get the noise from a fresh "
            f"`numpy.random.default_rng({TEST_NOISE_SEED})` drawn over the whole array (training/noise.py "
            "defines each kind). PSNR (data range 1) and SSIM (skimage, 7×7 window) are per image, then "
            "averaged; every network runs as exported (`autoencoder.onnx`, onnxruntime CPU). Classical "
            "methods are tuned per level by mean PSNR on the first validation images (noise from a fresh "
            f"`default_rng({VAL_NOISE_SEED})`); the test set is never used for tuning.",
        ],
        sections=[_kind_section(card, r) for r in results],
        plots=[
            ("PSNR against the noise level, per kind", "psnr_vs_noise.png"),
            ("clean, noisy and denoised test images", "examples.png"),
        ],
        command=command,
    )


def _example_panels(
    model_id: str, clean: np.ndarray, results: Sequence[dict[str, Any]]
) -> list[tuple[str, np.ndarray]]:
    """Clean, then noisy and this model's output at a middle level of each kind."""
    panels: list[tuple[str, np.ndarray]] = [("clean", clean)]
    for result in results:
        level = result["levels"][len(result["levels"]) // 2]
        shown = result["examples"][level]
        tag = f"{result['kind']} {result['level_name']}={level:g}"
        panels += [(f"noisy\n{tag}", shown["noisy"]), (f"denoised\n{tag}", shown[model_id])]
    return panels


def evaluate_noise_model(
    model_dir: Path,
    card: dict[str, Any],
    *,
    data: str | None = None,
    data_dir: str | None = None,
    test_limit: int | None = None,
    evaluation_dir: Path = Path("docs/evaluation"),
    compare: bool = True,
    workers: int = 1,
    tune_images: int = TUNE_IMAGES,
) -> dict[str, Any]:
    """Score ``model_dir`` under each noise kind it was trained for; write its report and metrics."""
    split = load_split(card, data, data_dir)
    limit = test_limit if test_limit is not None else TEST_LIMIT
    test = split.test_x[:limit]
    graphs = _peers(model_dir, card) if compare else {card["id"]: model_dir / "autoencoder.onnx"}
    results = []
    with Runner(workers) as runner:
        for kind in trained_kinds(card):
            cached = (
                _cached_gaussian(card["dataset"], len(test), evaluation_dir) if kind == "gaussian" else None
            )
            log.info("%s: scoring under %s noise on %d test images", card["id"], kind, len(test))
            results.append(score_kind(kind, split, test, graphs, runner, cached, tune_images))
    args = ["--model", str(model_dir)]
    if data:
        args += ["--data", data]
    if test_limit is not None:
        args += ["--test-limit", str(test_limit)]
    if tune_images != TUNE_IMAGES:
        args += ["--tune-images", str(tune_images)]
    command = shlex.join(["python", "-m", "training.evaluate", *args])
    out = model_dir / "report"
    out.mkdir(exist_ok=True)
    test_source = split.info.get("test_source", "test split")
    report.write_report(out / "README.md", noise_report(card, results, test_source, len(test), command))
    report.plot_curves(
        out / "psnr_vs_noise.png",
        card["id"],
        [
            report.Panel(
                r["kind"],
                f"{r['level_name']} (noisier →)",
                "PSNR (dB)",
                r["levels"],
                r["rows"],
                even_spacing=True,
            )
            for r in results
        ],
    )
    report.plot_examples(
        out / "examples.png", card["id"], _example_panels(card["id"], test[:EXAMPLES], results)
    )
    metrics: dict[str, Any] = {
        "by_noise": {
            r["kind"]: {
                "level_name": r["level_name"],
                "levels": r["levels"],
                "psnr": r["rows"][card["id"]]["psnr"],
                "ssim": r["rows"][card["id"]]["ssim"],
            }
            for r in results
        },
        "test_images": len(test),
        "noise_seed": TEST_NOISE_SEED,
        "protocol": "training/noise_eval.py; report/README.md has the baselines",
        "command": command,
    }
    gaussian = metrics["by_noise"].get("gaussian")
    if gaussian:  # the same keys as a Gaussian-only model's card
        metrics.update(noise_levels=gaussian["levels"], psnr=gaussian["psnr"], ssim=gaussian["ssim"])
    cards.update_card(model_dir, metrics=metrics)
    mean = {r["kind"]: float(np.mean(r["rows"][card["id"]]["psnr"])) for r in results}
    log.info("%s: mean PSNR per noise %s", card["id"], {k: round(v, 2) for k, v in mean.items()})
    return {"card": card, "results": results, "metrics": metrics}
