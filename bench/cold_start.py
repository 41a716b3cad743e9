"""Cold start (process start to the first ``/readyz`` 200) and resident memory under use.

Starts ``ae-serve`` on the shipped models ``--starts`` times and reports the median time to ready;
then, on one of them, sends ``--requests`` ``/denoise`` uploads (wrk, bounded by count) and reads the
process's VmRSS before and after, and again after a second batch of the same size, so that steady
growth (a leak) would show as a difference between the two.

Then it profiles a start: a fresh interpreter times each stage of what ``ae-serve`` does before it
can answer (imports, model loading, warm-up, building the app), median of ``--starts`` runs.

    .venv/bin/python -m bench.cold_start
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import (
    ROOT,
    SERVICE_ARGV,
    command_line,
    digit_png,
    machine_state,
    median,
    serve,
    write_json,
    wrk,
)
from bench.throughput import parse_env

# Run in a fresh interpreter: each line is one stage of ae-serve's start, in the order it happens.
_STAGES = r"""
import json, sys, time
t = [("", time.perf_counter())]
def mark(name): t.append((name, time.perf_counter()))
import numpy; mark("import numpy")
import onnxruntime; mark("import onnxruntime")
import PIL.Image; mark("import Pillow")
import pydantic, pydantic_settings; mark("import pydantic, pydantic-settings")
import fastapi; mark("import fastapi (and starlette)")
import uvicorn, uvloop, uvicorn.protocols.http.httptools_impl; mark("import uvicorn, uvloop, httptools")
import prometheus_client; mark("import prometheus-client")
import service.main; mark("import the service's modules (routes built)")
from service.config import Settings
from service.metrics import Metrics
from service.state import ServiceState
settings = Settings()
state = ServiceState(settings, Metrics())
registry = state._load(); mark("load and check every model (onnxruntime sessions)")
state._warm_up(registry); mark("warm up every graph")
service.main.create_app(settings, registry); mark("create the app")
json.dump([(name, t[i][1] - t[i - 1][1]) for i, (name, _) in enumerate(t) if i], sys.stdout)
"""


def startup_profile(runs: int, env: dict[str, str]) -> list[tuple[str, float]]:
    """Median seconds of each stage of a start, over ``runs`` fresh interpreters."""
    samples, bare = [], []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
        bare.append(time.perf_counter() - started)
        out = subprocess.run(
            [sys.executable, "-c", _STAGES], capture_output=True, text=True, check=True, env=env
        )
        samples.append(json.loads(out.stdout))
    names = [name for name, _ in samples[0]]
    stages = [(name, median([run[i][1] for run in samples])) for i, name in enumerate(names)]
    return [("start and stop a bare interpreter (python -c pass)", median(bare)), *stages]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--env", nargs="*", default=[], help="AE_* settings for the service")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    env = parse_env(args.env)

    print(f"command: {command_line('bench.cold_start')}")
    print(f"machine before: {machine_state()}", flush=True)
    ready: list[float] = []
    cpu: list[float] = []  # CPU time the process used to get ready: what a quiet machine's wall time would be
    for _ in range(args.starts):
        with serve("service", SERVICE_ARGV, env) as server:
            ready.append(server.ready_seconds)
            cpu.append(server.cpu_seconds())
    print("start to ready, s: " + ", ".join(f"{s:.3f}" for s in ready))
    print("CPU time to ready, s: " + ", ".join(f"{s:.3f}" for s in cpu))

    with tempfile.TemporaryDirectory() as tmp, serve("service", SERVICE_ARGV, env) as server:
        image = digit_png(Path(tmp))
        rss_ready = server.rss_mib()
        sent, rss, failed = [], [], 0
        for _ in range(2):
            # wrk runs for a time, not a count: repeat short runs until the count is reached.
            count = 0
            while count < args.requests:
                r = wrk(f"{server.url}/denoise", image, args.concurrency, seconds=5)
                count += r.requests
                failed += r.non_2xx + r.errors
            sent.append(count)
            rss.append(server.rss_mib())
    print(
        f"\ncold start to ready: median {median(ready):.3f} s over {args.starts} starts (target < 1 s); "
        f"CPU time used by then: median {median(cpu):.3f} s"
    )
    print(f"RSS when ready: {rss_ready:.1f} MiB")
    total = 0
    for count, mib in zip(sent, rss, strict=True):
        total += count
        print(
            f"RSS after {total:,} /denoise requests (c={args.concurrency}): {mib:.1f} MiB (target < 150 MB)"
        )
    print(f"non-2xx responses and socket errors: {failed}")

    stages = startup_profile(args.starts, {**os.environ, "PYTHONPATH": str(ROOT), **env})
    start_seconds = sum(seconds for _, seconds in stages)
    print(
        f"\nwhere a start's time goes (fresh interpreter, median of {args.starts}; "
        f"{start_seconds:.3f} s in all):\n"
    )
    print("| stage | ms | share |\n|---|---|---|")
    for name, seconds in stages:
        print(f"| {name} | {seconds * 1000:.0f} | {seconds / start_seconds:.0%} |")
    print(f"machine after: {machine_state()}")
    write_json(
        args.json,
        {
            "command": command_line("bench.cold_start"),
            "env": env,
            "ready_seconds": ready,
            "ready_cpu_seconds": cpu,
            "rss_ready_mib": rss_ready,
            "rss_after_mib": rss,
            "requests": sent,
            "failures": failed,
            "startup_stages_seconds": dict(stages),
        },
    )


if __name__ == "__main__":
    main()
