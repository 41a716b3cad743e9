"""Quality against speed: each shipped denoiser's test PSNR beside its onnxruntime images/s.

    .venv/bin/python -m bench.denoisers --models mnist-unet mnist-s2d mnist-s2d-int8 mnist-denoise \\
        fashion-unet fashion-s2d fashion-s2d-int8 fashion-denoise --json docs/evaluation/frontier.json
    .venv/bin/python -m bench.frontier docs/evaluation/frontier.json --out docs/evaluation/frontier.png

The speeds are one ``bench.denoisers`` run (interleaved rounds, one thread; its JSON); the quality
is each card's ``metrics`` (the test split, the protocol's noise): the mean PSNR over the seven
levels (plotted, one panel per data set), and the PSNR at s = 0.5 (printed; "–" for a model
scored at other levels). A model is on the frontier when no other model of its data set is both
faster and better. Graphs without a card in ``models/`` (a reference read from git) are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench._common import ROOT

MODELS = ROOT / "models"
LEVEL = 0.5


def points(results: dict[str, dict[str, float]], batch: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Per data set, one point per model with a card: id, images/s, mean PSNR, PSNR at ``LEVEL``."""
    panels: dict[str, list[dict[str, Any]]] = {}
    for model, figures in results.items():
        card_path = MODELS / model / "card.json"
        if "/" in model or not card_path.is_file():
            continue
        card = json.loads(card_path.read_text())
        metrics = card.get("metrics") or {}
        if "psnr" not in metrics:
            continue
        psnr, levels = metrics["psnr"], metrics["noise_levels"]
        panels.setdefault(card["dataset"], []).append(
            {
                "id": model,
                "images_per_s": figures[f"batch{batch}"],
                "mean_psnr": sum(psnr) / len(psnr),
                "psnr_at_level": psnr[levels.index(LEVEL)] if LEVEL in levels else None,
            }
        )
    return panels


def frontier(rows: list[dict[str, Any]], key: str) -> list[str]:
    """The ids no other row beats on both speed and ``key`` (fastest first)."""
    ordered = sorted(rows, key=lambda r: (-r["images_per_s"], -r[key]))
    best, out = float("-inf"), []
    for row in ordered:
        if row[key] > best:
            out.append(row["id"])
            best = row[key]
    return out


def plot(panels: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """One panel per data set: mean test PSNR against images/s, the frontier drawn through."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (dataset, rows) in zip(axes[0], sorted(panels.items()), strict=True):
        ax.scatter([r["images_per_s"] for r in rows], [r["mean_psnr"] for r in rows])
        on = {r["id"]: r for r in rows}
        best = [on[i] for i in frontier(rows, "mean_psnr")]
        ax.plot([r["images_per_s"] for r in best], [r["mean_psnr"] for r in best], lw=0.8, alpha=0.6)
        # labels above and below in turn, fastest first: neighbours on the frontier do not overlap
        for i, r in enumerate(sorted(rows, key=lambda r: -r["images_per_s"])):
            ax.annotate(
                r["id"],
                (r["images_per_s"], r["mean_psnr"]),
                fontsize=8,
                ha="center",
                xytext=(0, 8 if i % 2 == 0 else -14),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.margins(x=0.15, y=0.15)
        ax.set_xlabel("images/s, batch 1, one onnxruntime thread")
        ax.set_ylabel("test PSNR, dB, mean over s = 0.05 … 0.6")
        ax.set_title(dataset)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, help="a bench.denoisers --json file")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    panels = points(data["results"], args.batch)
    if not panels:
        raise SystemExit(f"{args.results}: no model with a card and test metrics")
    plot(panels, args.out)
    for dataset, rows in sorted(panels.items()):
        print(f"\n{dataset} (batch {args.batch}):\n")
        print(f"| model | img/s | mean PSNR | PSNR at s = {LEVEL} |\n|---|---|---|---|")
        for r in sorted(rows, key=lambda r: -r["images_per_s"]):
            at = "–" if r["psnr_at_level"] is None else f"{r['psnr_at_level']:.2f}"
            print(f"| {r['id']} | {r['images_per_s']:,.0f} | {r['mean_psnr']:.2f} | {at} |")
        print(f"\non the frontier (mean PSNR): {', '.join(frontier(rows, 'mean_psnr'))}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
