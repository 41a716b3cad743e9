"""Evaluation reports: the targets of issue 4, markdown tables, and the two plots.

Rows are dicts with ``label``, ``kind`` (``model``, ``lesson`` or ``classical``), ``test_images`` and
per-level lists ``psnr``, ``ssim``, ``subset_psnr``, ``subset_ssim`` (the means over the first
images of the test set, where BM3D is scored). A comparison with a row scored on fewer images uses
the other side's subset means, so it is always paired: the same images, the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.protocol import NOISE_LEVELS

CLASSICAL = ("noisy", "gaussian", "median", "median_tuned", "nl_means", "bm3d")
# Denoisers without a code (no bottleneck): "every autoencoder" in a target means every model but these.
NO_CODE_ARCHS = ("unet", "s2d")
Rows = dict[str, dict[str, Any]]

# Issue 12's bar for the cheap default denoisers: PSNR within 0.3 dB of the U-Nets as they stood at
# commit 883b244 (docs/evaluation.md there; first 1,000 mnist5k / 2,000 Fashion test images,
# s = 0.05 … 0.6).
UNET_883B244: dict[str, tuple[str, tuple[float, ...]]] = {
    "mnist-s2d": ("mnist-unet at 883b244", (35.08, 30.49, 26.40, 23.94, 21.99, 20.35, 18.91)),
    "fashion-s2d": ("fashion-unet at 883b244", (31.55, 27.56, 23.95, 21.96, 20.57, 19.46, 18.51)),
}
NEAR_UNET_DB = 0.3


@dataclass(frozen=True)
class Target:
    text: str
    met: bool
    detail: str
    source: str = "issue 4"


def _paired(model: dict[str, Any], other: dict[str, Any], metric: str) -> tuple[list[float], list[float]]:
    if other["test_images"] < model["test_images"]:
        return model[f"subset_{metric}"], other[metric]
    return model[metric], other[metric]


def _unit(metric: str) -> str:
    return " dB" if metric == "psnr" else ""


def _above(
    rows: Rows,
    model_key: str,
    others: Sequence[str],
    metric: str,
    levels: Sequence[float],
    min_s: float = 0.0,
) -> tuple[bool, str]:
    """Strictly above every row in ``others`` at every level ≥ min_s; detail names the closest call."""
    worst: tuple[float, str, float] | None = None
    model = rows[model_key]
    for key in others:
        mine, theirs = _paired(model, rows[key], metric)
        for s, a, b in zip(levels, mine, theirs, strict=True):
            if s >= min_s - 1e-9 and (worst is None or a - b < worst[0]):
                worst = (a - b, rows[key]["label"], s)
    if worst is None:
        return False, "nothing to compare with"
    margin, label, s = worst
    fmt = ".2f" if metric == "psnr" else ".3f"
    return margin > 0, f"closest: {margin:+{fmt}}{_unit(metric)} vs {label} at s={s:g}"


def _lesson_margin(rows: Rows, model_key: str, margin: float, levels: Sequence[float]) -> tuple[bool, str]:
    if "lesson" not in rows:
        return False, "the lesson's denoiser has not been scored (docs/evaluation/lesson-<dataset>/ missing)"
    gains = [a - b for a, b in zip(*_paired(rows[model_key], rows["lesson"], "psnr"), strict=True)]
    i = int(np.argmin(gains))
    return min(gains) >= margin, f"smallest gain {gains[i]:+.2f} dB at s={levels[i]:g}"


def _floor(rows: Rows, model_key: str, s: float, floor: float, levels: Sequence[float]) -> tuple[bool, str]:
    value = rows[model_key]["psnr"][list(levels).index(s)]
    return value >= floor, f"{value:.2f} dB"


Check = Callable[[Rows, str, Sequence[float]], tuple[bool, str]]


def _lesson(margin: float) -> tuple[str, Check]:
    bar = f"the lesson's denoiser + {margin:g} dB" if margin else "the lesson's denoiser"
    return (
        f"PSNR ≥ {bar} at every level",
        lambda r, k, lv: _lesson_margin(r, k, margin, lv),
    )


def _classical(metric: str, min_s: float) -> tuple[str, Check]:
    where = "every level" if min_s == 0 else f"s ≥ {min_s:g}"
    return (
        f"{metric.upper()} above every classical baseline at {where}",
        lambda r, k, lv: _above(r, k, [c for c in CLASSICAL if c in r], metric, lv, min_s),
    )


def _psnr_floor(s: float, floor: float) -> tuple[str, Check]:
    return f"PSNR ≥ {floor:g} dB at s = {s:g}", lambda r, k, lv: _floor(r, k, s, floor, lv)


def _everything(metric: str) -> tuple[str, Check]:
    def others(rows: Rows, key: str) -> list[str]:
        return [
            k
            for k, r in rows.items()
            if k != key and (r["kind"] != "model" or r.get("arch") not in NO_CODE_ARCHS)
        ]

    return (
        f"{metric.upper()} above every baseline and autoencoder at every level",
        lambda r, k, lv: _above(r, k, others(r, k), metric, lv),
    )


def reference_gaps(model_key: str, row: dict[str, Any]) -> list[float] | None:
    """This model's PSNR minus the 883b244 U-Net's, per level (None: no reference for this id)."""
    if model_key not in UNET_883B244:
        return None
    _, ref = UNET_883B244[model_key]
    return [a - b for a, b in zip(row["psnr"], ref, strict=True)]


def _near_unet(margin: float = NEAR_UNET_DB) -> tuple[str, Check]:
    def check(rows: Rows, key: str, levels: Sequence[float]) -> tuple[bool, str]:
        gaps = reference_gaps(key, rows[key])
        if gaps is None:
            return False, "no reference figures for this model id"
        i = int(np.argmin(gaps))
        return min(gaps) >= -margin, f"smallest difference {gaps[i]:+.2f} dB at s={levels[i]:g}"

    return (
        f"PSNR within {margin:g} dB of the U-Net at 883b244 (docs/evaluation.md there) at every level",
        check,
    )


# Issue 4's "Done when", per shipped model id; issue 12's for the cheap default denoisers.
TARGETS: dict[str, list[tuple[str, Check]]] = {
    "mnist-denoise": [_lesson(1.5), _classical("ssim", 0.0), _classical("psnr", 0.2), _psnr_floor(0.5, 19.5)],
    "fashion-denoise": [_lesson(1.0), _classical("psnr", 0.3), _psnr_floor(0.5, 18.5)],
    "mnist-unet": [_everything("psnr"), _everything("ssim")],
    "fashion-unet": [_everything("psnr"), _everything("ssim")],
    "mnist-s2d": [_everything("psnr"), _everything("ssim"), _near_unet()],
    "fashion-s2d": [_everything("psnr"), _everything("ssim"), _near_unet()],
}
TARGET_SOURCE = {"mnist-s2d": "issue 12", "fashion-s2d": "issue 12"}
# The design's aim for the other autoencoders ("beat the lesson's denoiser at every noise level").
DEFAULT_TARGETS = [_lesson(0.0)]


def check_targets(model_key: str, rows: Rows, levels: Sequence[float] = NOISE_LEVELS) -> list[Target]:
    if model_key in TARGETS:
        source = TARGET_SOURCE.get(model_key, "issue 4")
        return [
            Target(text, *check(rows, model_key, levels), source=source) for text, check in TARGETS[model_key]
        ]
    return [
        Target(text, *check(rows, model_key, levels), source="design target")
        for text, check in DEFAULT_TARGETS
    ]


# ---------------------------------------------------------------------------------------------
# Markdown.


def _cells(row: dict[str, Any], subset: bool = False) -> list[str]:
    p, q = (
        (row["subset_psnr"], row["subset_ssim"])
        if subset and "subset_psnr" in row
        else (row["psnr"], row["ssim"])
    )
    return [f"{a:.2f} / {b:.3f}" for a, b in zip(p, q, strict=True)]


def table(rows: Rows, levels: Sequence[float], subset: int | None = None, label_key: str = "label") -> str:
    """PSNR / SSIM per level; with ``subset``, every row's means over the first ``subset`` images."""
    lines = [
        "| method | " + " | ".join(f"s={s:g}" for s in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for row in rows.values():
        label = row[label_key]
        if subset is None and row["test_images"] != max(r["test_images"] for r in rows.values()):
            label += f" (first {row['test_images']} images)"
        lines.append(f"| {label} | " + " | ".join(_cells(row, subset is not None)) + " |")
    return "\n".join(lines)


def validation_table(rows: Rows, levels: Sequence[float]) -> str:
    """PSNR / SSIM per level of each model on the validation split (``evaluate validate``)."""
    lines = [
        "| model | " + " | ".join(f"s={s:g}" for s in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for name, row in rows.items():
        cells = (f"{p:.2f} / {q:.3f}" for p, q in zip(row["psnr"], row["ssim"], strict=True))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(v: float) -> str:
    return f"{v:.4g}"


def _param_cell(axis: dict[str, Any], tuning: dict[str, Any]) -> str:
    """``chosen (below, above)``: the optimum and its nearest searched values on either side."""
    name = axis["name"]
    value = tuning["params"][name]
    sides = tuning["neighbours"][name]
    if axis.get("factor_of_s"):
        factor = tuning["grid_point"][name]
        near = ", ".join("bound" if sides[k] is None else f"{_num(sides[k][0])}·s" for k in ("low", "high"))
        return f"{_num(value)} = {_num(factor)}·s ({near})"
    near = ", ".join("bound" if sides[k] is None else _num(sides[k][0]) for k in ("low", "high"))
    return f"{_num(value)} ({near})"


def _params_table(cache: dict[str, Any]) -> str:
    """One row per tuned parameter: where each level's optimum fell, between which searched values."""
    levels = cache["noise_levels"]
    lines = ["| method | parameter | " + " | ".join(f"s={s:g}" for s in levels) + " | tuned on |"]
    lines.append("|---|---|" + "---|" * len(levels) + "---|")
    bounds: list[str] = []
    for entry in cache["methods"].values():
        if "params" not in entry:
            continue
        split = entry.get("tune_split", "train")
        tuned_on = f"first {entry['tune_images']} {split} images"
        if "tuning" not in entry:  # a cache from before the validation split: one number per level
            values = " | ".join(_num(v) for v in entry["params"])
            lines.append(f"| {entry['label']} | {entry['param_name']} | {values} | {tuned_on} |")
            continue
        for axis in entry["axes"]:
            cells = " | ".join(_param_cell(axis, tuning) for tuning in entry["tuning"])
            lines.append(f"| {entry['label']} | {axis['name']} | {cells} | {tuned_on} |")
            at = [f"s={tu['s']:g}" for tu in entry["tuning"] if axis["name"] in tu["at_method_bound"]]
            if at:
                reason = next(
                    tu["at_method_bound"][axis["name"]]
                    for tu in entry["tuning"]
                    if axis["name"] in tu["at_method_bound"]
                )
                bounds.append(f"{entry['label']}, {axis['name']} at {', '.join(at)}: {reason}")
    tuned = [e for e in cache["methods"].values() if "tuning" in e]
    if not tuned:
        return "\n".join(lines)
    edges = [
        f"{e['label']} s={tu['s']:g}" for e in tuned for tu in e["tuning"] if tu.get("on_grid_edge", True)
    ]
    lines += [
        "",
        "Each cell: the chosen value, then the nearest searched values below and above it along that "
        "parameter (the other parameters at their chosen values); the search extends any parameter "
        "whose optimum lands on an end of its grid, so "
        + (
            "**no optimum sits on a grid edge**."
            if not edges
            else f"**these sit on a grid edge: {'; '.join(edges)}**."
        ),
    ]
    if bounds:
        lines += [
            "",
            "'bound': the optimum is at a declared limit of that parameter (of the method itself, or a "
            "cost cap), not at an edge of a grid the search could have extended:",
            "",
        ]
        lines += [f"- {b}" for b in bounds]
    return "\n".join(lines)


def reference_table(model_key: str, row: dict[str, Any], levels: Sequence[float]) -> str:
    """This model's PSNR against the 883b244 U-Net's, level by level ('' without a reference)."""
    gaps = reference_gaps(model_key, row)
    if gaps is None:
        return ""
    label, ref = UNET_883B244[model_key]
    head = "| PSNR (dB) | " + " | ".join(f"s={s:g}" for s in levels) + " |"
    return "\n".join(
        [
            head,
            "|---|" + "---|" * len(levels),
            f"| {model_key} | " + " | ".join(f"{v:.2f}" for v in row["psnr"]) + " |",
            f"| {label} | " + " | ".join(f"{v:.2f}" for v in ref) + " |",
            "| difference | " + " | ".join(f"{g:+.2f}" for g in gaps) + " |",
            f"| within {NEAR_UNET_DB:g} dB | "
            + " | ".join("yes" if g >= -NEAR_UNET_DB else "**no**" for g in gaps)
            + " |",
        ]
    )


def _targets_md(targets: Sequence[Target]) -> str:
    return "\n".join(
        f"- {'**met**' if t.met else '**NOT met**'}: {t.text} ({t.detail}) [{t.source}]" for t in targets
    )


def _dataset_words(card: dict[str, Any], cache: dict[str, Any]) -> str:
    names = {"mnist5k": "MNIST-5k", "mnist": "MNIST", "fashion": "Fashion-MNIST"}
    return (
        f"{names.get(card['dataset'], card['dataset'])} test split ({card.get('split', {}).get('test', '')})"
    )


def write_markdown(
    path: Path,
    card: dict[str, Any],
    rows: Rows,
    cache: dict[str, Any],
    targets: Sequence[Target],
    command: str,
    sources: tuple[str, str] = (
        "docs/evaluation/baselines-<dataset>.json",
        "docs/evaluation/lesson-<dataset>/",
    ),
) -> None:
    """The model's report: both tables, the targets, the tuned parameters, the plots, the commands.

    ``sources`` names the baseline cache and the lesson model's directory, for the reader.
    """
    levels = cache["noise_levels"]
    n, subset = cache["test_images"], cache["subset_images"]
    bm3d = cache["methods"].get("bm3d", {})
    ref = reference_table(card["id"], rows[card["id"]], levels)
    reference_md = f"\nAgainst the U-Net as it stood at 883b244 (issue 12's bar):\n\n{ref}\n" if ref else ""
    text = f"""# {card["id"]}: evaluation

{card.get("description", "")}

Data: {_dataset_words(card, cache)}; the first **{n}** test images are scored. Noise: for every
level s, `clip(x + s·N, 0, 1)` with N from a fresh `numpy.random.default_rng(1234)` drawn over the
whole {n}-image array. PSNR (data range 1) and SSIM (`skimage`, 7×7 window, data_range=1.0) are per
image, then averaged. Every network is scored through its exported `autoencoder.onnx` in
onnxruntime (CPU); outputs are scored as they are.

Every classical parameter is tuned per level on the **validation split**, never on test or training
images ({cache.get("protocol", {}).get("tuning", "")}). BM3D costs about 0.5 s per image here, so it is
tuned on the first {bm3d.get("tune_images", "?")} validation images and scored on the **first {subset}
test images** only; the second table puts every method on those same images and the same noise, for
a paired comparison.

## PSNR (dB) / SSIM, first {n} test images

{table(rows, levels)}

## PSNR (dB) / SSIM, first {subset} test images (every method, paired with BM3D)

{table(rows, levels, subset=subset)}

## Targets

{_targets_md(targets)}
{reference_md}
Issue 4's "Done when" sets the targets of mnist-denoise, fashion-denoise and the two unet models,
issue 12 those of the s2d models (the default `/denoise`); for the other autoencoders the design asks
that they beat the lesson's denoiser. Comparisons with BM3D use the paired table.

## Classical parameters, tuned per level by mean PSNR on the validation split

Noise for tuning: a fresh `default_rng(999)` per level. The test set is never used for tuning.

{_params_table(cache)}

## Plots

![PSNR and SSIM against the noise level](psnr_vs_noise.png)

![clean, noisy and denoised test images](examples.png)

## Reproduce

    {command}

The baselines come from `{sources[0]}`, written by

    {cache.get("command", "python -m training.baselines")}

(versions: {_versions(cache)}; BM3D ran in {cache.get("workers", 1)} worker process(es), one thread
each). The lesson's denoiser is `{sources[1]}autoencoder.onnx`, scored by the same code as this model.
"""
    path.write_text(text)


def _versions(cache: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in cache.get("versions", {}).items())


def write_summary(path: Path, results: Sequence[dict[str, Any]], command: str) -> None:
    """One table per data set with every model and baseline, then every model's targets."""
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_dataset.setdefault(result["card"]["dataset"], []).append(result)
    parts = [
        "# Evaluation summary",
        "",
        "Every shipped model against the classical baselines and the lesson's single-level denoiser,",
        "with the protocol of docs/evaluation/README.md (noise from a fresh `default_rng(1234)` per level;",
        "PSNR in dB /",
        "SSIM, means over images). Each model's own report (`models/<id>/report/README.md`) has the",
        "paired BM3D table and the plots; `docs/evaluation/README.md` says how the baselines were",
        "computed (BM3D on a subset). Every classical parameter is tuned per level on the validation",
        "split (noise from a fresh `default_rng(999)` per level), never on test or training images;",
        "each data set's section says where every optimum fell.",
        "Generated by",
        "",
        f"    {command}",
        "",
        "## Targets at a glance",
        "",
    ]
    for result in results:
        targets = result["targets"]
        met = sum(t.met for t in targets)
        missed = "; ".join(f"{t.text} ({t.detail})" for t in targets if not t.met)
        verdict = (
            f"all {len(targets)} met"
            if met == len(targets)
            else f"{met} of {len(targets)} met; NOT met: {missed}"
        )
        parts.append(f"- {result['card']['id']} [{targets[0].source if targets else '-'}]: {verdict}")
    for dataset, results_ in by_dataset.items():
        cache = results_[0]["baselines"]
        rows: Rows = {}
        for result in results_:
            card = result["card"]
            rows[card["id"]] = {**result["rows"][card["id"]], "label": f"{card['id']} ({card['arch']})"}
        for key, row in results_[0]["rows"].items():
            if row["kind"] != "model":
                rows[key] = row
        parts += [
            "",
            f"## {dataset}: first {cache['test_images']} test images (BM3D: first {cache['subset_images']})",
            "",
            table(rows, cache["noise_levels"]),
            "",
            f"Paired, every method on the first {cache['subset_images']} test images:",
            "",
            table(rows, cache["noise_levels"], subset=cache["subset_images"]),
            "",
            "### Targets",
            "",
        ]
        for result in results_:
            parts += [f"{result['card']['id']}:", "", _targets_md(result["targets"]), ""]
            card_id = result["card"]["id"]
            ref = reference_table(card_id, result["rows"][card_id], cache["noise_levels"])
            if ref:
                parts += ["Against the U-Net as it stood at 883b244 (issue 12's bar):", "", ref, ""]
        parts += [
            f"### Classical parameters ({dataset}), tuned per level on the validation split",
            "",
            f"{cache.get('protocol', {}).get('tuning', '')}.",
            "",
            _params_table(cache),
            "",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    # The out-of-distribution section (training.ood_eval writes its table) is not this summary's:
    # keep it, from its heading to the end, as it stands.
    kept = ""
    if path.exists():
        old = path.read_text()
        if (at := old.find(OOD_SECTION)) >= 0:
            kept = "\n" + old[at:]
    path.write_text("\n".join(parts).rstrip() + "\n" + kept)


OOD_SECTION = "## Out-of-distribution scores"


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg: no display here).


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_psnr(path: Path, model_key: str, rows: Rows, levels: Sequence[float]) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    for key, row in rows.items():
        style: dict[str, Any] = {"lw": 2.6, "color": "black"} if key == model_key else {"lw": 1.3}
        if row["kind"] == "classical":
            style["ls"] = "--"
        label = row["label"].replace("**", "")
        if row["test_images"] < rows[model_key]["test_images"]:
            label += f" (first {row['test_images']})"
        for ax, metric in zip(axes, ("psnr", "ssim"), strict=True):
            ax.plot(levels, row[metric], marker="o", ms=3, label=label, **style)
    axes[0].set(xlabel="noise level s", ylabel="PSNR (dB)", title=f"{model_key}: PSNR")
    axes[1].set(xlabel="noise level s", ylabel="SSIM", title=f"{model_key}: SSIM")
    for ax in axes:
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * ((len(labels) + 2) // 3), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(
    path: Path, model_key: str, clean: np.ndarray, examples: dict[float, tuple[np.ndarray, np.ndarray]]
) -> None:
    """Rows: clean, then noisy and denoised at a few levels; columns: the first test images."""
    plt = _pyplot()
    shown = [s for s in (0.1, 0.3, 0.5) if s in examples] or list(examples)[:3]
    n = min(len(clean), *(len(examples[s][0]) for s in shown))
    panels = [("clean", clean[:n])]
    for s in shown:
        noisy, out = examples[s]
        panels += [(f"noisy s={s:g}", noisy[:n]), (f"denoised s={s:g}", out[:n])]
    fig, axes = plt.subplots(len(panels), n, figsize=(1.1 * n + 1.2, 1.1 * len(panels)), squeeze=False)
    for r, (name, images) in enumerate(panels):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(np.clip(images[c], 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"{model_key}: first {n} test images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Other noises and own data (training/noise_eval.py): one table per noise kind.


def _kind_table(result: dict[str, Any], subset: bool = False) -> str:
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


def write_noise_markdown(
    path: Path,
    card: dict[str, Any],
    results: Sequence[dict[str, Any]],
    test_source: str,
    n: int,
    command: str,
) -> None:
    """The report of a model scored per noise kind: one table per kind, the tuned parameters, plots."""
    noise = (card.get("noise") or {}).get("description", "gaussian")
    parts = [
        f"# {card['id']}: evaluation under the noise it was made for",
        "",
        card.get("description", ""),
        "",
        f"Trained for: {noise}. Data: `{card['dataset']}`; the first **{n}** test images "
        f"({test_source}) are scored.",
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
                _kind_table(result),
                "",
                f"Paired, every method on the first {result['subset_images']} test images:",
                "",
                _kind_table(result, subset=True),
                "",
            ]
        else:
            parts += [_kind_table(result), "", _tuned(result)]
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


def plot_noise_psnr(path: Path, model_id: str, results: Sequence[dict[str, Any]]) -> None:
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


def plot_noise_examples(
    path: Path, model_id: str, clean: np.ndarray, results: Sequence[dict[str, Any]]
) -> None:
    """Rows: clean, then noisy and this model's output at a middle level of each kind."""
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
