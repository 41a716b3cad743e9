"""Evaluation under the noise a model was made for: each kind of its card, against the classical baselines.

`training.evaluate` hands a model here when its card names a noise other than plain Gaussian, or
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

The report (``report/README.md``, ``psnr_vs_noise.png``, ``examples.png``) has one table per kind;
the card's ``metrics.by_noise`` holds the model's own figures.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training import noise as noise_models
from training.baselines import METHODS_BY_KEY, Method, Params, Runner, mean_scores, tune
from training.data import DATASETS, TEST_NOISE_SEED, VAL_NOISE_SEED, Split, load_dataset
from training.sources import is_source

log = logging.getLogger(__name__)

TUNE_IMAGES = 200
DEFAULT_TEST_LIMIT = 2000
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
    from training.evaluate import run_onnx  # evaluate imports this module

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
        other_card = json.loads(other.read_text())
        if other_card.get("dataset") == card["dataset"] and (other.parent / "autoencoder.onnx").is_file():
            graphs[other_card["id"]] = other.parent / "autoencoder.onnx"
    return graphs


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
    from training.evaluate import update_card_metrics

    split = load_split(card, data, data_dir)
    limit = test_limit if test_limit is not None else DEFAULT_TEST_LIMIT
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
    write_markdown(out / "README.md", card, results, split, len(test), command)
    plot_psnr(out / "psnr_vs_noise.png", card["id"], results)
    plot_examples(out / "examples.png", card["id"], test[:EXAMPLES], results)
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
        "protocol": "training/noise_report.py; report/README.md has the baselines",
        "command": command,
    }
    gaussian = metrics["by_noise"].get("gaussian")
    if gaussian:  # the same keys as a Gaussian-only model's card
        metrics.update(noise_levels=gaussian["levels"], psnr=gaussian["psnr"], ssim=gaussian["ssim"])
    update_card_metrics(model_dir, metrics)
    mean = {r["kind"]: float(np.mean(r["rows"][card["id"]]["psnr"])) for r in results}
    log.info("%s: mean PSNR per noise %s", card["id"], {k: round(v, 2) for k, v in mean.items()})
    return {"card": card, "results": results, "metrics": metrics}


# ---------------------------------------------------------------------------------------------
# The report.


def _table(result: dict[str, Any], subset: bool = False) -> str:
    name = result["level_name"]
    levels = result["levels"]
    lines = [
        "| method | " + " | ".join(f"{name}={v:g}" for v in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    n = max(r["test_images"] for r in result["rows"].values())
    for key, row in result["rows"].items():
        p, q = (row["subset_psnr"], row["subset_ssim"]) if subset else (row["psnr"], row["ssim"])
        label = f"**{row['label']}**" if key == next(iter(result["rows"])) else row["label"]
        if not subset and row["test_images"] != n:
            label += f" (first {row['test_images']} images)"
        lines.append(
            f"| {label} | " + " | ".join(f"{a:.2f} / {b:.3f}" for a, b in zip(p, q, strict=True)) + " |"
        )
    return "\n".join(lines)


def _tuned(result: dict[str, Any]) -> str:
    if not result["tuned"]:
        return ""
    name = result["level_name"]
    head = "| method | " + " | ".join(f"{name}={v:g}" for v in result["levels"]) + " |"
    lines = [head, "|---|" + "---|" * len(result["levels"])]
    for key, params in result["tuned"].items():
        cells = (
            ", ".join(f"{k} {v:.3g}" for k, v in p.items()) if isinstance(p, dict) else f"{p:.3g}"
            for p in params
        )
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return (
        "Tuned parameters (Gaussian blur: σ in pixels; median: window size; NL-means: h, patch size "
        "and distance), each on the validation split:\n\n" + "\n".join(lines) + "\n"
    )


def write_markdown(
    path: Path, card: dict[str, Any], results: Sequence[dict[str, Any]], split: Split, n: int, command: str
) -> None:
    noise = (card.get("noise") or {}).get("description", "gaussian")
    parts = [
        f"# {card['id']}: evaluation under the noise it was made for",
        "",
        card.get("description", ""),
        "",
        f"Trained for: {noise}. Data: `{card['dataset']}`; the first **{n}** test images "
        f"({split.info.get('test_source', 'test split')}) are scored.",
        "",
        "For each kind and level the test images get the noise from a fresh "
        "`numpy.random.default_rng(1234)` drawn over the whole array (training/noise.py defines each "
        "kind). PSNR (data range 1) and SSIM (skimage, 7×7 window) are per image, then averaged; every "
        "network runs as exported (`autoencoder.onnx`, onnxruntime CPU). Classical methods are tuned "
        "per level by mean PSNR on the first validation images (noise from a fresh `default_rng(999)`); "
        "the test set is never used for tuning.",
        "",
    ]
    for result in results:
        parts += [f"## {result['kind']} ({result['level_name']})", ""]
        if result["baselines_from"] == "cache":
            parts += [
                f"Classical rows from `docs/evaluation/baselines-{card['dataset']}.json` (same protocol, "
                f"same images; BM3D on the first {result['subset_images']}).",
                "",
                _table(result),
                "",
                f"Paired, every method on the first {result['subset_images']} test images:",
                "",
                _table(result, subset=True),
                "",
            ]
        else:
            parts += [_table(result), "", _tuned(result)]
    parts += [
        "## Plots",
        "",
        "![PSNR against the noise level, per kind](psnr_vs_noise.png)",
        "",
        "![clean, noisy and denoised test images](examples.png)",
        "",
        "## Reproduce",
        "",
        f"    {command}",
        "",
    ]
    path.write_text("\n".join(parts).rstrip() + "\n")


def plot_psnr(path: Path, model_id: str, results: Sequence[dict[str, Any]]) -> None:
    from training.report import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.4), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        x = np.arange(len(result["levels"]))
        for key, row in result["rows"].items():
            style: dict[str, Any] = {"lw": 2.6, "color": "black"} if key == model_id else {"lw": 1.2}
            if row["kind"] == "classical":
                style["ls"] = "--"
            ax.plot(x, row["psnr"], marker="o", ms=3, label=row["label"], **style)
        ax.set_xticks(x, [f"{v:g}" for v in result["levels"]])
        ax.set(xlabel=f"{result['level_name']} (noisier →)", ylabel="PSNR (dB)", title=result["kind"])
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 * ((len(labels) + 3) // 4), 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_examples(path: Path, model_id: str, clean: np.ndarray, results: Sequence[dict[str, Any]]) -> None:
    """Rows: clean, then noisy and this model's output at a middle level of each kind."""
    from training.report import _pyplot

    plt = _pyplot()
    panels: list[tuple[str, np.ndarray]] = [("clean", clean)]
    for result in results:
        level = result["levels"][len(result["levels"]) // 2]
        shown = result["examples"][level]
        tag = f"{result['kind']} {result['level_name']}={level:g}"
        panels += [(f"noisy\n{tag}", shown["noisy"]), (f"denoised\n{tag}", shown[model_id])]
    n = len(clean)
    fig, axes = plt.subplots(len(panels), n, figsize=(1.1 * n + 1.8, 1.1 * len(panels)), squeeze=False)
    for r, (name, images) in enumerate(panels):
        for c in range(n):
            axes[r][c].imshow(np.clip(images[c], 0, 1), cmap="gray", vmin=0, vmax=1)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        axes[r][0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{model_id}: first {n} test images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
