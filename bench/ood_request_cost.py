"""CPU a ``/denoise`` request costs with the out-of-distribution score on and off, in one process.

    python -m bench.ood_request_cost [--requests 100] [--rounds 40] [--model mnist-s2d] [--concurrency 1]

Two apps (``AE_OOD_SCORES`` true and false) are started in this process and driven straight
through ASGI (no client, no socket), round by round, interleaved; ``--concurrency`` requests in
flight at a time (above 1 the batcher batches them, as under load). Per request it reports the
process CPU, and inside the inference thread the CPU of the batch function and of the scored
graph's run against the plain graph's (``time.thread_time`` around them). Where an end-to-end run
(``bench.compare``) says what the score costs, this says where (docs/benchmarks.md, "Where the
c = 1 cost goes").

``--graph-only`` adds a third app: the scored graph runs in every batch and its percentiles are
dropped, nothing else of the score runs (no flags, histogram, ``Outcome`` or headers). Against
"off" it is what the graph's run costs the process; against "on", what the score's Python costs
(docs/benchmarks.md, "What is left at c = 1").
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
        if finish is not None and getattr(self, GRAPH_ONLY, False):
            graph = model.graphs[role]
            label = f"batch function, {role}, graph only"
            return _timed(lambda rows: label, lambda rows: graph.run_all(rows)[0]), None, False
        label = f"batch function, {role}, scores {'on' if self.settings.ood_scores else 'off'}"
        return _timed(lambda rows: label, run), finish, inline

    state.ServiceState._batch_functions = batch_functions  # type: ignore[method-assign]


GRAPH_ONLY = "_bench_graph_only"  # marks the ServiceState of the --graph-only app


async def _start(label: str) -> Any:
    """An app for a variant: "on", "off", or "graph only" (the scored graph's batches, then the
    score turned off for the rest of each request: ``ood.score`` reads the setting per request)."""
    app = create_app(Settings(ood_scores=label != "off", log_level="warning"))
    service = app.state.service
    if label == "graph only":
        setattr(service, GRAPH_ONLY, True)
    await service.start()
    if label == "graph only":
        service.settings = service.settings.model_copy(update={"ood_scores": False})
    return app


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
    for label in ("on", "off", "graph only") if args.graph_only else ("on", "off"):
        app = await _start(label)
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
    paired = {
        "on − off": ("on", "off"),
        "graph only − off": ("graph only", "off"),
        "on − graph only": ("on", "graph only"),
    }
    for name, (a, b) in paired.items():
        if a in process and b in process:
            process[f"{name}, paired by round"] = [x - y for x, y in zip(process[a], process[b], strict=True)]
    for label, values in process.items():
        q1, q2, q3 = statistics.quantiles(values, n=4)
        name = label if "paired" in label else f"score {label}"
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
    parser.add_argument(
        "--graph-only", action="store_true", help="a third app: the scored graph, its percentiles dropped"
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    _instrument()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
