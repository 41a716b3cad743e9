"""What an out-of-distribution score costs per request: onnxruntime graphs and the numpy scoring.

    python -m bench.ood_cost [--rounds 7]

One thread, batch 1 and 32, interleaved rounds (each round times every candidate once, so a load
change on the machine hits all alike); median per-image microseconds. The candidates: each shipped
model's denoising graph (what /denoise runs anyway), the encoders (a side graph a codeless denoiser
could borrow for a code distance; what an autoencoder's /denoise runs in addition for its code),
contract.ood's numpy scoring of a batch through the shipped cards, and the scored graphs
(``scored.onnx``: the autoencoder graph with the whole score as an extra output) beside their
autoencoder graphs: the difference is what the score costs the service now.

``--graphs PATH …`` times those graphs instead, and no numpy scoring: scored graphs of two
versions side by side, e.g. a worktree's beside this tree's.

``--flush BYTES`` copies that many bytes (untimed) before every timed call, so that each call
finds the core's caches full of other data, as a request does in the service between its
batches at low concurrency (2 MB: this machine's L2 per core). There a scored graph's extra
nodes and constants cost about twice what they cost warm (docs/benchmarks.md, "Cold caches").
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract import ood
from contract.card import read_card

GRAPHS = (
    "models/mnist-s2d/autoencoder.onnx",
    "models/mnist-s2d/scored.onnx",
    "models/fashion-s2d-mixed/autoencoder.onnx",
    "models/fashion-s2d-mixed/scored.onnx",
    "models/mnist-unet/autoencoder.onnx",
    "models/mnist-denoise/autoencoder.onnx",
    "models/mnist-denoise/encoder.onnx",
    "models/mnist-conv/encoder.onnx",
    "models/mnist-dense/encoder.onnx",
    "models/fashion-s2d/autoencoder.onnx",
    "models/fashion-denoise/encoder.onnx",
)
SCORED = (
    ("mnist-s2d", "denoise"),
    ("fashion-s2d-mixed", "denoise"),
    ("mnist-denoise", "denoise"),
    ("mnist-denoise", "encode"),
)


def _session(path: str) -> Callable[[np.ndarray], object]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _scorer(model: str, view: str) -> Callable[[np.ndarray], object]:
    """contract.ood's numpy work for one batch: the graphs' outputs are given (what a request has)."""
    model_dir = Path("models") / model
    card = read_card(model_dir, served=False)
    calibration = ood.load(model_dir, card)
    assert calibration is not None, f"{model}: not calibrated (python -m training.calibrate {model_dir})"
    code_size = int(np.prod(card["code_shape"] or [1]))

    def score(x: np.ndarray) -> object:
        codes = np.zeros((len(x), code_size), np.float32) if "code" in calibration.needs(view) else None
        return calibration.score(view, x, outputs=x, codes=codes)

    return score


def _time(fn: Callable[[np.ndarray], object], x: np.ndarray, seconds: float, flush: int = 0) -> float:
    fn(x)
    if flush:
        source = np.ones(flush // 4, np.float32)
        target = np.empty_like(source)
        n, spent, start = 0, 0.0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            np.copyto(target, source)
            began = time.perf_counter()
            fn(x)
            spent += time.perf_counter() - began
            n += 1
        return spent / n / len(x) * 1e6
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(x)
        n += 1
    return (time.perf_counter() - start) / n / len(x) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_cost")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="per candidate per round")
    parser.add_argument("--graphs", nargs="+", help="time these graphs alone (no numpy scoring)")
    parser.add_argument("--flush", type=int, default=0, metavar="BYTES", help="copied before each call")
    args = parser.parse_args()
    candidates: dict[str, Callable[[np.ndarray], object]] = {g: _session(g) for g in args.graphs or GRAPHS}
    for model, view in () if args.graphs else SCORED:
        candidates[f"contract.ood scoring, numpy only ({model}, {view} view)"] = _scorer(model, view)
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.rounds):
            for name, fn in candidates.items():
                times[name].append(_time(fn, x, args.seconds, args.flush))
        caches = f", {args.flush:,} bytes copied before each call" if args.flush else ""
        print(f"\n| batch {batch}, 1 thread{caches} | µs per image (median of {args.rounds}) |\n|---|---|")
        for name, ts in times.items():
            print(f"| {name} | {statistics.median(ts):.1f} |")


if __name__ == "__main__":
    main()
