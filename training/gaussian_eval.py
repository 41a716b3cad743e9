"""The Gaussian evaluation of docs/evaluation/README.md: each model against the baselines, its report.

Every model is run as it ships: its ``autoencoder.onnx`` through onnxruntime on the CPU
(training/score.py). For each noise level s the test images get ``clip(x + s * N, 0, 1)`` with N
from a fresh ``default_rng(TEST_NOISE_SEED)`` (one draw over the whole evaluated array;
training/protocol.py); PSNR and SSIM are per image, then averaged. The classical baselines come
from the per-dataset cache that `training.baselines` writes; the lesson's own single-level denoiser
(``docs/evaluation/lesson-<dataset>/autoencoder.onnx``) is scored by the same code as any model and
cached beside them. :func:`gaussian_report` says what the report holds, training/report.py's one
writer writes it; the card's metrics go through contract/card.py.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contract import card as cards
from training import report
from training.baselines import BM3D_TEST_IMAGES, compute_baselines, write_json
from training.data import load_dataset
from training.protocol import TEST_LIMIT, TEST_NOISE_SEED
from training.score import evaluate_onnx
from training.splits import Split

log = logging.getLogger(__name__)

EVALUATION_DIR = Path("docs/evaluation")
LESSON_LABEL = "lesson conv AE (trained at s=0.5)"


class EvaluationError(Exception):
    """A model directory, card or baseline cache cannot be used for this evaluation."""


# ---------------------------------------------------------------------------------------------
# Inputs: cards, data, the baseline cache.


def read_card(model_dir: Path) -> dict[str, Any]:
    """The model's card and graphs, as the service would accept them (contract/card.py)."""
    try:
        return cards.check_model_dir(model_dir, served=False)
    except cards.CardError as exc:
        raise EvaluationError(f"{exc}; is {model_dir} an exported model directory?") from exc


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
        limit = self.test_limit if self.test_limit is not None else TEST_LIMIT
        return _load(dataset, self.data_dir).test_x[:limit]

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
        digest = cards.sha256(onnx_path)
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
    report.write_report(out / "README.md", gaussian_report(card, rows, cache, targets, command, sources))
    report.plot_curves(
        out / "psnr_vs_noise.png",
        card["id"],
        [
            report.Panel(f"{card['id']}: {name}", "noise level s", unit, levels, rows, metric)
            for metric, name, unit in (("psnr", "PSNR", "PSNR (dB)"), ("ssim", "SSIM", "SSIM"))
        ],
    )
    report.plot_examples(
        out / "examples.png", card["id"], _example_panels(ctx.test_images(dataset), examples)
    )
    cards.update_card(
        model_dir,
        metrics={
            "noise_levels": levels,
            "psnr": [round(v, 4) for v in own["psnr"]],
            "ssim": [round(v, 4) for v in own["ssim"]],
            "test_images": own["test_images"],
            "noise_seed": TEST_NOISE_SEED,
            "protocol": "docs/evaluation/README.md's protocol; report/README.md has the baselines",
            "command": command,
        },
    )
    log.info("%s: PSNR %s", card["id"], " ".join(f"{v:.2f}" for v in own["psnr"]))
    return {"card": read_card(model_dir), "rows": rows, "targets": targets, "baselines": cache}


def _example_panels(
    clean: np.ndarray, examples: dict[float, tuple[np.ndarray, np.ndarray]]
) -> list[tuple[str, np.ndarray]]:
    """Clean, then noisy and denoised at a few levels."""
    shown = [s for s in (0.1, 0.3, 0.5) if s in examples] or list(examples)[:3]
    n = min(len(clean), *(len(examples[s][0]) for s in shown))
    panels = [("clean", clean[:n])]
    for s in shown:
        noisy, out = examples[s]
        panels += [(f"noisy s={s:g}", noisy[:n]), (f"denoised s={s:g}", out[:n])]
    return panels


def _dataset_words(card: dict[str, Any]) -> str:
    names = {"mnist5k": "MNIST-5k", "mnist": "MNIST", "fashion": "Fashion-MNIST"}
    return (
        f"{names.get(card['dataset'], card['dataset'])} test split ({card.get('split', {}).get('test', '')})"
    )


def _versions(cache: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in cache.get("versions", {}).items())


# The report's paragraphs (markdown, wrapped as they read in the file).
_DATA = """\
Data: {data}; the first **{n}** test images are scored. Noise: for every
level s, `clip(x + s·N, 0, 1)` with N from a fresh `numpy.random.default_rng(1234)` drawn over the
whole {n}-image array. PSNR (data range 1) and SSIM (`skimage`, 7×7 window, data_range=1.0) are per
image, then averaged. Every network is scored through its exported `autoencoder.onnx` in
onnxruntime (CPU); outputs are scored as they are."""
_TUNING = """\
Every classical parameter is tuned per level on the **validation split**, never on test or training
images ({protocol}). BM3D costs about 0.5 s per image here, so it is
tuned on the first {bm3d_tune} validation images and scored on the **first {subset}
test images** only; the second table puts every method on those same images and the same noise, for
a paired comparison."""
_WHOSE_TARGETS = """\
Issue 4's "Done when" sets the targets of mnist-denoise, fashion-denoise and the two unet models,
issue 12 those of the s2d models (the default `/denoise`); for the other autoencoders the design asks
that they beat the lesson's denoiser. Comparisons with BM3D use the paired table."""
_BASELINES = """\
The baselines come from `{cache}`, written by

    {command}

(versions: {versions}; BM3D ran in {workers} worker process(es), one thread
each). The lesson's denoiser is `{lesson}autoencoder.onnx`, scored by the same code as this model."""


def gaussian_report(
    card: dict[str, Any],
    rows: report.Rows,
    cache: dict[str, Any],
    targets: Sequence[report.Target],
    command: str,
    sources: tuple[str, str] = (
        "docs/evaluation/baselines-<dataset>.json",
        "docs/evaluation/lesson-<dataset>/",
    ),
) -> report.Report:
    """The model's report: both tables, the targets, the tuned parameters, the plots, the commands.

    ``sources`` names the baseline cache and the lesson model's directory, for the reader.
    """
    levels = cache["noise_levels"]
    n, subset = cache["test_images"], cache["subset_images"]
    bm3d = cache["methods"].get("bm3d", {})
    ref = report.reference_table(card["id"], rows[card["id"]], levels)
    data = _DATA.format(data=_dataset_words(card), n=n)
    protocol = cache.get("protocol", {}).get("tuning", "")
    tuning = _TUNING.format(protocol=protocol, bm3d_tune=bm3d.get("tune_images", "?"), subset=subset)
    baselines = _BASELINES.format(
        cache=sources[0],
        command=cache.get("command", "python -m training.baselines"),
        versions=_versions(cache),
        workers=cache.get("workers", 1),
        lesson=sources[1],
    )
    return report.Report(
        title=f"{card['id']}: evaluation",
        intro=[card.get("description", ""), data, tuning],
        sections=[
            report.Section(f"PSNR (dB) / SSIM, first {n} test images", [report.table(rows, levels)]),
            report.Section(
                f"PSNR (dB) / SSIM, first {subset} test images (every method, paired with BM3D)",
                [report.table(rows, levels, subset=subset)],
            ),
            report.Section(
                "Targets",
                [
                    report.targets_md(targets),
                    "Against the U-Net as it stood at 883b244 (issue 12's bar):" if ref else "",
                    ref,
                    _WHOSE_TARGETS,
                ],
            ),
            report.Section(
                "Classical parameters, tuned per level by mean PSNR on the validation split",
                [
                    "Noise for tuning: a fresh `default_rng(999)` per level. The test set is never used "
                    "for tuning.",
                    report.params_table(cache),
                ],
            ),
        ],
        plots=[
            ("PSNR and SSIM against the noise level", "psnr_vs_noise.png"),
            ("clean, noisy and denoised test images", "examples.png"),
        ],
        command=command,
        notes=[baselines],
    )


def _data_args(ctx: Context) -> list[str]:
    args = ["--data-dir", ctx.data_dir] if ctx.data_dir else []
    return args + (["--test-limit", str(ctx.test_limit)] if ctx.test_limit is not None else [])
