"""onnxruntime alone: images per second of each shipped graph, by batch size and intra-op threads.

No HTTP, no decoding, no queue: the ceiling that inference sets on the service. Sessions are built
with the service's own options (service.inference.session_options), on the CPU provider.

    .venv/bin/python -m bench.ort_alone                      # the full table
    .venv/bin/python -m bench.ort_alone --threads 0 --batches 1 16 32 64 128 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench._common import ROOT, command_line, machine_state, median, write_json
from service.inference import CPU, session_options

MODELS = ROOT / "models"
GRAPHS = (
    "mnist-denoise/encoder",
    "mnist-denoise/decoder",
    "mnist-denoise/autoencoder",
    "mnist-unet/autoencoder",
)


def open_session(graph: str, threads: int) -> ort.InferenceSession:
    """``graph`` is ``<model id>/<role>``; ``threads`` 0 is onnxruntime's default (the service's)."""
    model_id, role = graph.split("/")
    path = MODELS / model_id / f"{role}.onnx"
    return ort.InferenceSession(str(path), sess_options=session_options(threads, 0), providers=[CPU])


def _feed(session: ort.InferenceSession, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    (arg,) = session.get_inputs()
    dims = [d if isinstance(d, int) else batch for d in arg.shape]
    return {arg.name: rng.random(dims, dtype=np.float32)}


def rate_and_cpu(session: ort.InferenceSession, batch: int, seconds: float) -> tuple[float, float]:
    """(images/s, CPU ms per image over all threads) in one timed window of at least ``seconds``."""
    feed = _feed(session, batch, np.random.default_rng(0))
    session.run(None, feed)  # warm-up: allocations for this batch size
    runs, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while True:
        session.run(None, feed)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 3:
            break
    cpu = time.process_time() - cpu_started
    return runs * batch / elapsed, cpu * 1000 / (runs * batch)


def images_per_second(session: ort.InferenceSession, batch: int, seconds: float, repeats: int) -> float:
    """Median over ``repeats`` timed windows of at least ``seconds`` each."""
    return median([rate_and_cpu(session, batch, seconds)[0] for _ in range(repeats)])


def best_batch(
    graph: str, threads: int, batches: tuple[int, ...], seconds: float, repeats: int
) -> tuple[int, float, dict[int, float]]:
    """(best batch size, its images/s, images/s of every batch size) for one graph."""
    session = open_session(graph, threads)
    rates = {b: images_per_second(session, b, seconds, repeats) for b in batches}
    best = max(rates, key=lambda b: rates[b])
    return best, rates[best], rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--graphs", nargs="+", default=list(GRAPHS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64, 256])
    parser.add_argument(
        "--threads", nargs="+", type=int, default=[1, 2], help="intra-op threads; 0 = default"
    )
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one timed window")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per cell (median)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    print(f"command: {command_line('bench.ort_alone')}")
    print(f"onnxruntime {ort.__version__}; machine before: {machine_state()}")
    results: dict[str, dict[str, dict[str, float]]] = {}
    header = "| graph | threads | " + " | ".join(f"batch {b}" for b in args.batches) + " |"
    print("\nimages/s (median of windows)\n")
    print(header)
    print("|" + "---|" * (2 + len(args.batches)))
    for graph in args.graphs:
        for threads in args.threads:
            _, _, rates = best_batch(graph, threads, tuple(args.batches), args.seconds, args.repeats)
            results.setdefault(graph, {})[str(threads)] = {str(b): round(r, 1) for b, r in rates.items()}
            cells = " | ".join(f"{rates[b]:,.0f}" for b in args.batches)
            print(f"| {graph} | {threads} | {cells} |", flush=True)
    print(f"\nmachine after: {machine_state()}")
    write_json(
        args.json,
        {"command": command_line("bench.ort_alone"), "onnxruntime": ort.__version__, "images_per_s": results},
    )
    if args.json is None:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
