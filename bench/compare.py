"""A/B of service settings: several ``ae-serve`` variants side by side, rounds alternating between them.

Used for tuning: each ``--variant`` is a label and ``AE_*`` settings; every variant serves the
same upload at the same concurrencies, in interleaved rounds, so background load hits all alike.
Each figure is the median round; the last columns are relative to the first variant.

    .venv/bin/python -m bench.compare --variant default --variant threads1 AE_INTRA_OP_THREADS=1
    .venv/bin/python -m bench.compare --concurrency 8 64 --variant info --variant quiet AE_LOG_LEVEL=warning

A variant may also serve another checkout (``git worktree add /tmp/base HEAD~1``), to compare code:

    .venv/bin/python -m bench.compare --variant before PYTHONPATH=/tmp/base --variant after
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
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        required=True,
        metavar="LABEL [AE_X=v ...]",
        help="a label, then the AE_* settings that make this variant",
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[64])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--path", default="/denoise?model=mnist-denoise")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    variants = {label: parse_env(settings) for label, *settings in args.variant}

    print(f"command: {command_line('bench.compare')}")
    print(f"machine before: {machine_state()}", flush=True)
    runs = interleaved_runs(variants, args.path, args.concurrency, args.seconds, args.rounds)

    base = next(iter(variants))
    head = "| concurrency | variant | req/s | p50 ms | p99 ms | server CPU ms/req | req/s vs first | p99 vs first |"  # noqa: E501
    print(f"\n{head}")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for c in args.concurrency:
        first = median_result(runs[(base, c)])
        for label in variants:
            r = median_result(runs[(label, c)])
            print(
                f"| {c} | {label} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.server_cpu_ms:.2f} | "
                f"{r.rps / first.rps:.2f}× | {r.p99_ms / first.p99_ms:.2f}× |"
            )
            rows.append({"concurrency": c, "variant": label, "env": variants[label], **r.row()})
    print(f"\nmachine after: {machine_state()}")
    write_json(args.json, {"command": command_line("bench.compare"), "rows": rows})


if __name__ == "__main__":
    main()
