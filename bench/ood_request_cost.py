"""CPU a ``/denoise`` request costs with the out-of-distribution score on and off, in one process.

    python -m bench.ood_request_cost [--requests 500] [--rounds 7] [--model mnist-s2d]

Two apps (``AE_OOD_SCORES`` true and false) are started in this process and driven straight
through ASGI (no client, no socket), round by round, interleaved. Per request it reports the
process CPU, and inside the inference thread the CPU of the batch function and of the scored
graph's run against the plain graph's (``time.thread_time`` around them). Where an end-to-end run
(``bench.compare``) says what the score costs, this says where (docs/benchmarks.md, "Where the
c = 1 cost goes").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import command_line, digit_png, machine_state
from service import inference, state
from service.config import Settings
from service.main import create_app

BOUNDARY = "bench"
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
        run, finish = functions(self, model, role)
        label = f"batch function, {role}, scores {'on' if self.settings.ood_scores else 'off'}"
        return _timed(lambda rows: label, run), finish

    state.ServiceState._batch_functions = batch_functions  # type: ignore[method-assign]


def _request(png: bytes, model: str) -> tuple[dict[str, Any], bytes]:
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/denoise",
        "raw_path": b"/denoise",
        "query_string": f"model={model}".encode(),
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    return scope, body


async def _one(app: Any, scope: dict[str, Any], body: bytes) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(dict(scope), receive, send)
    if status != [200]:
        raise SystemExit(f"/denoise answered {status}")


async def run(args: argparse.Namespace) -> None:
    png = digit_png(Path(tempfile.mkdtemp(prefix="ae-bench-"))).read_bytes()
    scope, body = _request(png, args.model)
    apps = {}
    for label, on in (("on", True), ("off", False)):
        app = create_app(Settings(ood_scores=on, log_level="warning"))
        await app.state.service.start()
        apps[label] = app
        for _ in range(100):  # warm-up, not counted
            await _one(app, scope, body)
    CPU.clear()
    CALLS.clear()
    process: dict[str, list[float]] = {label: [] for label in apps}
    for _ in range(args.rounds):
        for label, app in apps.items():
            start = time.process_time()
            for _ in range(args.requests):
                await _one(app, scope, body)
            process[label].append((time.process_time() - start) / args.requests * 1e6)
    for app in apps.values():
        await app.state.service.stop()
    print(f"command: {command_line('bench.ood_request_cost')}\n{machine_state()}\n")
    print("| process CPU per request, µs | median | range |\n|---|---|---|")
    for label, values in process.items():
        ordered = sorted(values)
        print(f"| score {label} | {ordered[len(ordered) // 2]:.0f} | {ordered[0]:.0f}–{ordered[-1]:.0f} |")
    print("\n| inference thread, CPU per call, µs | calls | µs |\n|---|---|---|")
    for name in sorted(CPU):
        print(f"| {name} | {CALLS[name]} | {CPU[name] / CALLS[name] * 1e6:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_request_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=500, help="requests per variant and round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", default="mnist-s2d")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    _instrument()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
