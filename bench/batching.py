"""Micro-batching on vs off: ``/denoise`` at concurrency 64 with the default batch size and with 1.

Two ``ae-serve`` processes run side by side (an idle one costs nothing); rounds alternate between them
so that background load hits both alike; each figure is the median round. Targets: at least 2× the
throughput of batch size 1, and a p99 no worse than 2× its p99.

    .venv/bin/python -m bench.batching
    .venv/bin/python -m bench.batching --env AE_MAX_WAIT_MS=2 --concurrency 64 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench._common import (
    command_line,
    interleaved_runs,
    machine_state,
    median_result,
    write_json,
)
from bench.throughput import parse_env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[64])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="mnist-denoise")
    parser.add_argument("--env", nargs="*", default=[], help="AE_* settings for both services")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    env = parse_env(args.env)
    variants = {
        "batched": {**env},
        "batch size 1": {**env, "AE_MAX_BATCH_SIZE": "1"},
    }

    print(f"command: {command_line('bench.batching')}")
    print(f"machine before: {machine_state()}", flush=True)
    runs = interleaved_runs(
        variants, f"/denoise?model={args.model}", args.concurrency, args.seconds, args.rounds
    )

    print("\n| concurrency | variant | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    rows = []
    for c in args.concurrency:
        on, off = median_result(runs[("batched", c)]), median_result(runs[("batch size 1", c)])
        for name, r in (("batched", on), ("batch size 1", off)):
            print(f"| {c} | {name} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} |")
        speedup, p99_ratio = on.rps / off.rps, on.p99_ms / off.p99_ms
        print(f"| {c} | **ratio** | **{speedup:.2f}×** (target ≥ 2) | | **{p99_ratio:.2f}×** (target ≤ 2) |")
        rows.append(
            {
                "concurrency": c,
                "batched": on.row(),
                "unbatched": off.row(),
                "speedup": speedup,
                "p99_ratio": p99_ratio,
            }
        )
    print(f"\nmachine after: {machine_state()}")
    write_json(args.json, {"command": command_line("bench.batching"), "env": env, "rows": rows})


if __name__ == "__main__":
    main()
