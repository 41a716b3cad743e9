"""What an out-of-distribution score costs per request: onnxruntime graphs and the numpy scoring.

    python -m bench.ood_cost [--rounds 7]

One thread, batch 1 and 32, interleaved rounds (each round times every candidate once, so a load
change on the machine hits all alike); median per-image microseconds. The candidates: each shipped
model's denoising graph (what /denoise runs anyway), the side encoders a codeless denoiser could
borrow for a code distance, and contract.ood's scoring of a batch from the calibrated cards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract import ood

GRAPHS = (
    "models/mnist-s2d/autoencoder.onnx",
    "models/mnist-unet/autoencoder.onnx",
    "models/mnist-denoise/autoencoder.onnx",
    "models/mnist-denoise/encoder.onnx",
    "models/mnist-conv/encoder.onnx",
    "models/mnist-dense/encoder.onnx",
    "models/fashion-s2d/autoencoder.onnx",
    "models/fashion-denoise/encoder.onnx",
)
SCORED = ("mnist-s2d", "mnist-denoise")


def _session(path: str) -> Callable[[np.ndarray], object]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _scorer(model: str) -> Callable[[np.ndarray], object] | None:
    model_dir = Path("models") / model
    calibration = ood.load(model_dir, json.loads((model_dir / "card.json").read_text()))
    if calibration is None:
        return None
    view = "denoise"
    needs = calibration.needs(view)
    code_graph = calibration.block["views"][view].get("code_graph")
    encoder = _session(str(model_dir / code_graph)) if code_graph else None

    def score(x: np.ndarray) -> object:
        codes = np.asarray(encoder(x)[0]) if encoder is not None else None  # type: ignore[index]
        outputs = x if "output" in needs else None  # the scoring's own cost: any array of the shape
        return calibration.score(view, x, outputs=outputs, codes=codes)

    return score


def _time(fn: Callable[[np.ndarray], object], x: np.ndarray, seconds: float) -> float:
    fn(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(x)
        n += 1
    return (time.perf_counter() - start) / n / len(x) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_cost")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="per candidate per round")
    args = parser.parse_args()
    candidates: dict[str, Callable[[np.ndarray], object]] = {g: _session(g) for g in GRAPHS}
    for model in SCORED:
        scorer = _scorer(model)
        if scorer is not None:
            candidates[f"contract.ood score ({model}, denoise view, incl. its code graph)"] = scorer
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.rounds):
            for name, fn in candidates.items():
                times[name].append(_time(fn, x, args.seconds))
        print(f"\n| batch {batch}, 1 thread | µs per image (median of {args.rounds}) |\n|---|---|")
        for name, ts in times.items():
            print(f"| {name} | {statistics.median(ts):.1f} |")


if __name__ == "__main__":
    main()
