"""Plots for docs/benchmarks.md from the JSON the benchmark scripts write (``--json``).

.venv/bin/python -m bench.plots docs/benchmarks
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _load(directory: Path, name: str) -> dict[str, Any] | None:
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _save(fig: Any, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_throughput(data: dict[str, Any], out: Path) -> None:
    rows = data["rows"]
    labels = [f"c={r['concurrency']}" for r in rows]
    x = range(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.27
    series = [
        ("echo (HTTP only)", [r["echo"]["rps"] for r in rows]),
        ("ideal: 1/(1/echo + 1/ort)", [r["ideal_rps"] for r in rows]),
        ("/denoise", [r["denoise"]["rps"] for r in rows]),
    ]
    for i, (name, values) in enumerate(series):
        ax1.bar([j + (i - 1) * width for j in x], values, width, label=name)
    for j, r in enumerate(rows):
        ax1.annotate(f"{r['efficiency']:.2f}", (j + width, r["denoise"]["rps"]), ha="center", va="bottom")
    ax1.axhline(data["ort"]["images_per_s"], color="grey", ls="--", lw=1, label="onnxruntime alone (img/s)")
    ax1.set_xticks(list(x), labels)
    ax1.set_ylabel("requests / s")
    ax1.set_title("throughput (number: serving efficiency)")
    ax1.legend(fontsize=8)
    for name, key, style in (("echo", "echo", "o--"), ("/denoise", "denoise", "s-")):
        ax2.plot(labels, [r[key]["p50_ms"] for r in rows], style, label=f"{name} p50")
        ax2.plot(labels, [r[key]["p99_ms"] for r in rows], style, alpha=0.5, label=f"{name} p99")
    ax2.set_yscale("log")
    ax2.set_ylabel("latency, ms")
    ax2.set_title("latency")
    ax2.legend(fontsize=8)
    _save(fig, out)


def plot_batching(data: dict[str, Any], out: Path) -> None:
    rows = data["rows"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.5))
    labels = [f"c={r['concurrency']}" for r in rows]
    x = range(len(rows))
    for i, (name, key) in enumerate((("batched", "batched"), ("batch size 1", "unbatched"))):
        ax1.bar([j + (i - 0.5) * 0.4 for j in x], [r[key]["rps"] for r in rows], 0.4, label=name)
        ax2.bar([j + (i - 0.5) * 0.4 for j in x], [r[key]["p99_ms"] for r in rows], 0.4, label=name)
    ax1.set_xticks(list(x), labels)
    ax2.set_xticks(list(x), labels)
    ax1.set_ylabel("requests / s")
    ax2.set_ylabel("p99 latency, ms")
    ax1.set_title("micro-batching: throughput")
    ax2.set_title("micro-batching: p99")
    ax1.legend(fontsize=8)
    _save(fig, out)


def plot_ort(data: dict[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for graph, by_threads in data["images_per_s"].items():
        for threads, by_batch in by_threads.items():
            batches = [int(b) for b in by_batch]
            ax.plot(
                batches,
                list(by_batch.values()),
                "o-" if threads == "1" else "s--",
                label=f"{graph}, {threads}t",
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_title("onnxruntime alone (CPU)")
    ax.legend(fontsize=7)
    _save(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path, help="where the JSON results are; plots go there too")
    args = parser.parse_args()
    for name, plot in (("throughput", plot_throughput), ("batching", plot_batching), ("ort_alone", plot_ort)):
        data = _load(args.directory, name)
        if data is not None:
            out = args.directory / f"{name}.png"
            plot(data, out)
            print(f"wrote {out}")


if __name__ == "__main__":
    main()
