"""CPU a ``/denoise`` request costs with the out-of-distribution score on and off, in one process.

    python -m bench.ood_request_cost [--requests 100] [--rounds 40] [--model mnist-s2d] [--concurrency 1]

Two apps (``AE_OOD_SCORES`` true and false) are started in this process and driven straight
through ASGI (no client, no socket), round by round, interleaved; ``--concurrency`` requests in
flight at a time (above 1 the batcher batches them, as under load). Per request it reports the
process CPU, and inside the inference thread the CPU of the batch function and of the scored
graph's run against the plain graph's (``time.thread_time`` around them). Where an end-to-end run
(``bench.compare``) says what the score costs, this says where (docs/benchmarks.md, "Where the
c = 1 cost goes").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import asgi_post, command_line, digit_png, machine_state, multipart_body
from service import inference, state
from service.config import Settings
from service.main import create_app

CPU: dict[str, float] = defaultdict(float)  # label -> thread CPU seconds
CALLS: dict[str, int] = defaultdict(int)


def _timed(label: Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args)
        finally:
            name = label(*args)
            CPU[name] += time.thread_time() - start
            CALLS[name] += 1

    return wrapper


def _instrument() -> None:
    """Time the graph runs and each app's batch function (the inference thread's work)."""
    session = inference.GraphSession
    session.run = _timed(lambda s, b: f"run {s.path.name}", session.run)  # type: ignore[method-assign]
    session.run_all = _timed(lambda s, b: f"run_all {s.path.name}", session.run_all)  # type: ignore[method-assign]
    functions = state.ServiceState._batch_functions

    def batch_functions(self: state.ServiceState, model: Any, role: str) -> Any:
        run, finish, inline = functions(self, model, role)
        label = f"batch function, {role}, scores {'on' if self.settings.ood_scores else 'off'}"
        return _timed(lambda rows: label, run), finish, inline

    state.ServiceState._batch_functions = batch_functions  # type: ignore[method-assign]


async def _drive(call: Callable[[], Any], requests: int, concurrency: int) -> None:
    """``requests`` calls, ``concurrency`` of them in flight at a time."""
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def run(args: argparse.Namespace) -> None:
    body = multipart_body(digit_png(Path(tempfile.mkdtemp(prefix="ae-bench-"))).read_bytes())
    calls = {}
    apps = []
    for label, on in (("on", True), ("off", False)):
        app = create_app(Settings(ood_scores=on, log_level="warning"))
        await app.state.service.start()
        apps.append(app)
        calls[label] = asgi_post(app, f"/denoise?model={args.model}", body)
        await _drive(calls[label], 100, args.concurrency)  # warm-up, not counted
    CPU.clear()
    CALLS.clear()
    process: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(args.rounds):
        for label, call in calls.items():
            start = time.process_time()
            await _drive(call, args.requests, args.concurrency)
            process[label].append((time.process_time() - start) / args.requests * 1e6)
    for app in apps:
        await app.state.service.stop()
    print(f"command: {command_line('bench.ood_request_cost')}\n{machine_state()}\n")
    print("| process CPU per request, µs | median | quartiles | range |\n|---|---|---|---|")
    # Each round's own difference: a load change on the machine moves both variants of a round.
    process["on − off, paired by round"] = [a - b for a, b in zip(process["on"], process["off"], strict=True)]
    for label, values in process.items():
        q1, q2, q3 = statistics.quantiles(values, n=4)
        name = label if label.startswith("on −") else f"score {label}"
        print(f"| {name} | {q2:.0f} | {q1:.0f}–{q3:.0f} | {min(values):.0f}–{max(values):.0f} |")
    print("\n| inference thread, CPU per call, µs | calls | µs |\n|---|---|---|")
    for name in sorted(CPU):
        print(f"| {name} | {CALLS[name]} | {CPU[name] / CALLS[name] * 1e6:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_request_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=100, help="requests per variant and round")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--model", default="mnist-s2d")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at a time")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    _instrument()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
