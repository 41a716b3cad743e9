"""What a small numpy step costs right after an onnxruntime run in the same thread.

    python -m bench.after_run [--rounds 300] [--graph models/mnist-s2d/scored.onnx]

The service's scored graph returns each batch's percentiles; flagging and counting them is a few
numpy calls per batch. Where those calls run matters: in the inference thread, straight after the
graph's run, the first of them cost many times what it costs on a warm thread (the run has just
filled the core's caches with its own data). This times, per batch size, the service's own step for a batch
(its model's ``Calibration.percentile_scores`` and the ``ae_ood_percentile`` observer, as
service/state.py calls them) right after a run, a second time after that, and on its own with no
run before. Median microseconds over ``--rounds``; docs/benchmarks.md,
"The score's Python, per batch".
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench._common import command_line, machine_state
from contract import ood
from contract.card import read_card
from service.metrics import Metrics


def _timed(step: Callable[[np.ndarray], object], percentile: np.ndarray) -> float:
    start = time.perf_counter()
    step(percentile)
    return (time.perf_counter() - start) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.after_run", description=__doc__)
    parser.add_argument("--graph", default="models/mnist-s2d/scored.onnx")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.graph, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    model_dir = Path(args.graph).parent
    calibration = ood.load(model_dir, read_card(model_dir, served=False))
    if calibration is None:
        raise SystemExit(f"{model_dir}: no out-of-distribution calibration in its card")
    observe = Metrics().ood_observer(model_dir.name, "denoise")

    def step(percentile: np.ndarray) -> None:
        """What the service does with a batch's percentiles: flag them, count them."""
        observe(calibration.percentile_scores("denoise", percentile).percentile)

    print(f"command: {command_line('bench.after_run')}\n{machine_state()}\n")
    print("| batch | step right after a run, µs | the same step again, µs | the step alone, no run, µs |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        percentile = session.run(None, {name: x})[-1]
        first, again, alone = [], [], []
        for _ in range(args.rounds):
            percentile = session.run(None, {name: x})[-1]
            first.append(_timed(step, percentile))
            again.append(_timed(step, percentile))
        for _ in range(args.rounds):
            alone.append(_timed(step, percentile))
        medians = [statistics.median(v) for v in (first, again, alone)]
        print(f"| {batch} | " + " | ".join(f"{m:.1f}" for m in medians) + " |")


if __name__ == "__main__":
    main()
