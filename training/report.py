"""Evaluation reports: the one writer of ``models/<id>/report/``, its tables and plots, the targets.

Both evaluations write their reports here: the Gaussian one (training/gaussian_eval.py) and the one
under other noises and own data (training/noise_eval.py). Each builds a :class:`Report` (title,
opening paragraphs, sections of markdown blocks, plots, the command that reproduces it) from its own
results with the tables below; :func:`write_report` writes it, and :func:`plot_curves` and
:func:`plot_examples` draw its two figures. :func:`write_summary` writes docs/evaluation.md.

Rows are dicts with ``label``, ``kind`` (``model``, ``lesson`` or ``classical``), ``test_images`` and
per-level lists ``psnr``, ``ssim``, ``subset_psnr``, ``subset_ssim`` (the means over the first
images of the test set, where BM3D is scored). A comparison with a row scored on fewer images uses
the other side's subset means, so it is always paired: the same images, the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.protocol import NOISE_LEVELS

CLASSICAL = ("noisy", "gaussian", "median", "median_tuned", "nl_means", "bm3d")
# Denoisers without a code (no bottleneck): "every autoencoder" in a target means every model but these.
NO_CODE_ARCHS = ("unet", "s2d")
Rows = dict[str, dict[str, Any]]

# Issue 19's int8 variants (training/quantize.py), each with its float model: they keep the float
# model's bars, and may lose at most INT8_LOSS_DB of its PSNR at any level.
INT8_SOURCES = {"mnist-s2d-int8": "mnist-s2d", "fashion-s2d-int8": "fashion-s2d"}
INT8_LOSS_DB = 0.1
# Issue 12's bar for the cheap default denoisers (and their int8 variants): PSNR within 0.3 dB of
# the U-Nets as they stood at commit 883b244 (docs/evaluation.md there; first 1,000 mnist5k / 2,000
# Fashion test images, s = 0.05 … 0.6).
_UNETS = {
    "mnist-s2d": ("mnist-unet at 883b244", (35.08, 30.49, 26.40, 23.94, 21.99, 20.35, 18.91)),
    "fashion-s2d": ("fashion-unet at 883b244", (31.55, 27.56, 23.95, 21.96, 20.57, 19.46, 18.51)),
}
UNET_883B244: dict[str, tuple[str, tuple[float, ...]]] = {
    **_UNETS,
    **{int8: _UNETS[source] for int8, source in INT8_SOURCES.items()},
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


def _no_worse_than(gaps: Sequence[float], margin: float, levels: Sequence[float]) -> tuple[bool, str]:
    """Met when no level's PSNR difference falls below ``-margin``; the detail names the smallest."""
    i = int(np.argmin(gaps))
    return gaps[i] >= -margin, f"smallest difference {gaps[i]:+.2f} dB at s={levels[i]:g}"


def _near_unet(margin: float = NEAR_UNET_DB) -> tuple[str, Check]:
    def check(rows: Rows, key: str, levels: Sequence[float]) -> tuple[bool, str]:
        gaps = reference_gaps(key, rows[key])
        if gaps is None:
            return False, "no reference figures for this model id"
        return _no_worse_than(gaps, margin, levels)

    return (
        f"PSNR within {margin:g} dB of the U-Net at 883b244 (docs/evaluation.md there) at every level",
        check,
    )


def _near_float(margin: float = INT8_LOSS_DB) -> tuple[str, Check]:
    def check(rows: Rows, key: str, levels: Sequence[float]) -> tuple[bool, str]:
        source = INT8_SOURCES.get(key)
        if source is None or source not in rows:
            return False, f"{source or 'its float model'} was not scored beside it"
        gaps = [a - b for a, b in zip(rows[key]["psnr"], rows[source]["psnr"], strict=True)]
        return _no_worse_than(gaps, margin, levels)

    return (f"PSNR within {margin:g} dB of its float model at every level", check)


# Issue 4's "Done when", per shipped model id; issue 12's for the cheap default denoisers, and
# issue 19's for their int8 variants.
TARGETS: dict[str, list[tuple[str, Check]]] = {
    "mnist-denoise": [_lesson(1.5), _classical("ssim", 0.0), _classical("psnr", 0.2), _psnr_floor(0.5, 19.5)],
    "fashion-denoise": [_lesson(1.0), _classical("psnr", 0.3), _psnr_floor(0.5, 18.5)],
    "mnist-unet": [_everything("psnr"), _everything("ssim")],
    "fashion-unet": [_everything("psnr"), _everything("ssim")],
    "mnist-s2d": [_everything("psnr"), _everything("ssim"), _near_unet()],
    "fashion-s2d": [_everything("psnr"), _everything("ssim"), _near_unet()],
    **{
        int8: [_everything("psnr"), _everything("ssim"), _near_unet(), _near_float()] for int8 in INT8_SOURCES
    },
}
TARGET_SOURCE = {
    "mnist-s2d": "issue 12",
    "fashion-s2d": "issue 12",
    **dict.fromkeys(INT8_SOURCES, "issue 19"),
}
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


def table(
    rows: Rows,
    levels: Sequence[float],
    subset: int | None = None,
    label_key: str = "label",
    level_name: str = "s",
    bold_first: bool = False,
) -> str:
    """PSNR / SSIM per level; with ``subset``, every row's means over the first ``subset`` images.

    ``level_name`` heads the columns (``s``, ``p``, ``peak``...); ``bold_first`` sets the first
    row's label (the model the report is about) in bold.
    """
    lines = [
        "| method | " + " | ".join(f"{level_name}={s:g}" for s in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    most = max((r["test_images"] for r in rows.values()), default=0)
    for i, row in enumerate(rows.values()):
        label = f"**{row[label_key]}**" if bold_first and i == 0 else row[label_key]
        if subset is None and row["test_images"] != most:
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


def params_table(cache: dict[str, Any]) -> str:
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


def targets_md(targets: Sequence[Target]) -> str:
    return "\n".join(
        f"- {'**met**' if t.met else '**NOT met**'}: {t.text} ({t.detail}) [{t.source}]" for t in targets
    )


@dataclass(frozen=True)
class Section:
    """``## heading``, then its blocks (paragraphs, tables, lists), separated by blank lines."""

    heading: str
    blocks: Sequence[str]


@dataclass(frozen=True)
class Report:
    """A model's ``report/README.md``, as an evaluation provides it.

    Written in this order: ``# title``, the opening blocks, the sections, ``## Plots`` (one image
    per ``(alt text, file)``), ``## Reproduce`` (the command, indented, then ``notes``). Empty blocks
    are left out.
    """

    title: str
    intro: Sequence[str]
    sections: Sequence[Section]
    plots: Sequence[tuple[str, str]]
    command: str
    notes: Sequence[str] = field(default_factory=tuple)


def render(report: Report) -> str:
    sections = [
        *report.sections,
        Section("Plots", [f"![{alt}]({file})" for alt, file in report.plots]),
        Section("Reproduce", [f"    {report.command}", *report.notes]),
    ]
    blocks = [f"# {report.title}", *report.intro]
    for section in sections:
        blocks += [f"## {section.heading}", *section.blocks]
    return "\n\n".join(b.strip("\n") for b in blocks if b.strip()) + "\n"


def write_report(path: Path, report: Report) -> None:
    """The one writer of a model's report markdown (both evaluations call it)."""
    path.write_text(render(report))


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
            parts += [f"{result['card']['id']}:", "", targets_md(result["targets"]), ""]
            card_id = result["card"]["id"]
            ref = reference_table(card_id, result["rows"][card_id], cache["noise_levels"])
            if ref:
                parts += ["Against the U-Net as it stood at 883b244 (issue 12's bar):", "", ref, ""]
        parts += [
            f"### Classical parameters ({dataset}), tuned per level on the validation split",
            "",
            f"{cache.get('protocol', {}).get('tuning', '')}.",
            "",
            params_table(cache),
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


@dataclass(frozen=True)
class Panel:
    """One plot of :func:`plot_curves`: ``metric`` per level for every row."""

    title: str
    xlabel: str
    ylabel: str
    levels: Sequence[float]
    rows: Rows
    metric: str = "psnr"
    even_spacing: bool = False  # levels that are not a scale (Poisson peaks): one step apart


def plot_curves(path: Path, model_key: str, panels: Sequence[Panel]) -> None:
    """The report's ``psnr_vs_noise.png``: a curve per row in each panel, this model in bold black,
    classical methods dashed, rows scored on fewer images marked in the shared legend."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        x = np.arange(len(panel.levels)) if panel.even_spacing else np.asarray(panel.levels)
        most = max(r["test_images"] for r in panel.rows.values())
        for key, row in panel.rows.items():
            style: dict[str, Any] = {"lw": 2.6, "color": "black"} if key == model_key else {"lw": 1.3}
            if row["kind"] == "classical":
                style["ls"] = "--"
            label = row["label"].replace("**", "")
            if row["test_images"] < most:
                label += f" (first {row['test_images']})"
            ax.plot(x, row[panel.metric], marker="o", ms=3, label=label, **style)
        if panel.even_spacing:
            ax.set_xticks(x, [f"{v:g}" for v in panel.levels])
        ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = 3 if len(panels) <= 2 else 4
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * ((len(labels) + ncol - 1) // ncol), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(path: Path, title: str, panels: Sequence[tuple[str, np.ndarray]]) -> None:
    """The report's ``examples.png``: one row of images per ``(name, images)`` panel (clean, noisy,
    denoised...), the same images in every column."""
    plt = _pyplot()
    n = min(len(images) for _, images in panels)
    fig, axes = plt.subplots(len(panels), n, figsize=(1.1 * n + 1.8, 1.1 * len(panels)), squeeze=False)
    for r, (name, images) in enumerate(panels):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(np.clip(images[c], 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name, fontsize=7 if "\n" in name else 8, rotation=0, ha="right", va="center")
    fig.suptitle(f"{title}: first {n} test images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def tuned_table(level_name: str, levels: Sequence[float], tuned: dict[str, list[Any]]) -> str:
    """The parameters each classical method was tuned to per level ('' when none was tuned)."""
    if not tuned:
        return ""
    head = "| method | " + " | ".join(f"{level_name}={v:g}" for v in levels) + " |"
    lines = [head, "|---|" + "---|" * len(levels)]
    for key, params in tuned.items():
        cells = (
            ", ".join(f"{k} {v:.3g}" for k, v in p.items()) if isinstance(p, dict) else f"{p:.3g}"
            for p in params
        )
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
