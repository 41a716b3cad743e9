"""What a small numpy step costs right after an onnxruntime run in the same thread.

    python -m bench.after_run [--rounds 300] [--graph models/mnist-s2d/scored.onnx]

The service's scored graph returns each batch's percentiles; flagging and counting them is a few
numpy calls per batch. Where those calls run matters: in the inference thread, straight after the
graph's run, the first of them cost many times what it costs on a warm thread (the run has just
filled the core's caches with its own data). This times, per batch size, the same two calls (a
comparison and a sum over the batch's percentiles) right after a run, a second time after that,
and on their own with no run before. Median microseconds over ``--rounds``; docs/benchmarks.md,
"The score's Python, per batch".
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from bench._common import command_line, machine_state


def _step(percentile: np.ndarray) -> None:
    """What the service does with a batch's percentiles: flag them and count them."""
    _ = percentile <= 99.5
    _ = np.searchsorted(np.array([50.0, 99.0, 99.5, 99.9]), percentile)


def _timed(percentile: np.ndarray) -> float:
    start = time.perf_counter()
    _step(percentile)
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
            first.append(_timed(percentile))
            again.append(_timed(percentile))
        for _ in range(args.rounds):
            alone.append(_timed(percentile))
        medians = [statistics.median(v) for v in (first, again, alone)]
        print(f"| {batch} | " + " | ".join(f"{m:.1f}" for m in medians) + " |")


if __name__ == "__main__":
    main()
