"""``/denoise`` throughput and latency beside its two ceilings, and the serving efficiency.

In one run, on the same machine and the same PNG upload (a real MNIST test digit with noise 0.3):

- ``echo``: bench/echo_app.py, the same server stack taking the same multipart upload and returning it;
- ``ort``: onnxruntime alone running the same autoencoder graph at its best batch size and thread count;
- ``denoise``: ``ae-serve`` answering ``POST /denoise`` with the denoised PNG.

Serving efficiency = denoise req/s ÷ (1 / (1/echo req/s + 1/ort img/s)): the share of what a server
that did nothing but parse, infer and answer, one after the other, could reach. Rounds alternate
the three so that a change in background load hits all of them alike; each figure is the median round.

    .venv/bin/python -m bench.throughput                          # c = 1, 8, 64; 3 rounds of 10 s
    .venv/bin/python -m bench.throughput --env AE_MAX_WAIT_MS=2    # try a service setting
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench._common import (
    ECHO_ARGV,
    SERVICE_ARGV,
    WrkResult,
    command_line,
    digit_png,
    load_test,
    machine_state,
    median,
    median_result,
    serve,
    write_json,
)
from bench.ort_alone import best_batch, open_session, rate_and_cpu

ORT_BATCHES = (1, 8, 16, 32, 64, 128, 256)
ORT_THREADS = (1, 2)


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        # PYTHONPATH=<checkout> serves another checkout of the service: an A/B of code, not settings.
        if not sep or not (key.startswith("AE_") or key == "PYTHONPATH"):
            raise SystemExit(f"settings are AE_NAME=value (or PYTHONPATH=<checkout>), not {pair!r}")
        env[key] = value
    return env


def efficiency(denoise_rps: float, echo_rps: float, ort_ips: float) -> tuple[float, float]:
    """(ideal req/s of a strictly sequential parse → infer → answer server, denoise's share of it)."""
    ideal = 1.0 / (1.0 / echo_rps + 1.0 / ort_ips)
    return ideal, denoise_rps / ideal


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="mnist-denoise")
    parser.add_argument("--env", nargs="*", default=[], help="AE_* settings for the service")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    env = parse_env(args.env)
    graph = f"{args.model}/autoencoder"

    print(f"command: {command_line('bench.throughput')}")
    print(f"machine before: {machine_state()}", flush=True)
    # The ceiling is onnxruntime at its best: best batch size and best thread count, whatever the
    # service itself is set to.
    scans = {t: best_batch(graph, t, ORT_BATCHES, seconds=0.5, repeats=3) for t in ORT_THREADS}
    threads = max(scans, key=lambda t: scans[t][1])
    batch, _, scan = scans[threads]
    for t, (_, _, rates) in scans.items():
        print(
            f"onnxruntime alone, {t} thread(s), images/s by batch: "
            + ", ".join(f"{b}: {r:,.0f}" for b, r in rates.items())
        )
    session = open_session(graph, threads)

    ort_rounds: list[tuple[float, float]] = []  # (images/s, CPU ms per image) per round
    echo_runs: dict[int, list[WrkResult]] = {c: [] for c in args.concurrency}
    denoise_runs: dict[int, list[WrkResult]] = {c: [] for c in args.concurrency}
    with tempfile.TemporaryDirectory() as tmp:
        image = digit_png(Path(tmp))
        with (
            serve("echo", ECHO_ARGV, env, ready_path="/healthz") as echo,
            serve("service", SERVICE_ARGV, env) as service,
        ):
            for round_ in range(args.rounds):
                ort_rounds.append(rate_and_cpu(session, batch, seconds=2.0))
                for c in args.concurrency:
                    e = load_test(echo, "/echo", image, c, args.seconds)
                    d = load_test(service, f"/denoise?model={args.model}", image, c, args.seconds)
                    echo_runs[c].append(e)
                    denoise_runs[c].append(d)
                    print(
                        f"round {round_ + 1} c={c}: echo {e.rps:,.0f} req/s, denoise {d.rps:,.0f} req/s "
                        f"(non-2xx {e.non_2xx}/{d.non_2xx}, errors {e.errors}/{d.errors})",
                        flush=True,
                    )
    ort_ips = median([rate for rate, _ in ort_rounds])
    ort_cpu_ms = median([cpu for _, cpu in ort_rounds])

    print(
        f"\nonnxruntime alone: {ort_ips:,.0f} images/s, {ort_cpu_ms:.3f} CPU ms per image "
        f"({graph}, batch {batch}, intra-op threads {threads})"
    )
    print(
        "\n| concurrency | echo req/s | echo p50 / p99 ms | ideal req/s | /denoise req/s | "
        "/denoise p50 / p99 ms | **efficiency** | server CPU ms/req: echo, /denoise | CPU efficiency |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for c in args.concurrency:
        e, d = median_result(echo_runs[c]), median_result(denoise_runs[c])
        ideal, eff = efficiency(d.rps, e.rps, ort_ips)
        # The same question in CPU time: (echo + onnxruntime) CPU per request ÷ /denoise CPU per request.
        echo_cpu, denoise_cpu = e.server_cpu_ms or 0.0, d.server_cpu_ms or float("nan")
        cpu_eff = (echo_cpu + ort_cpu_ms) / denoise_cpu
        print(
            f"| {c} | {e.rps:,.0f} | {e.p50_ms:.2f} / {e.p99_ms:.2f} | {ideal:,.0f} | {d.rps:,.0f} | "
            f"{d.p50_ms:.2f} / {d.p99_ms:.2f} | **{eff:.2f}** | {echo_cpu:.2f}, {denoise_cpu:.2f} | "
            f"{cpu_eff:.2f} |"
        )
        rows.append(
            {
                "concurrency": c,
                "echo": e.row(),
                "denoise": d.row(),
                "ideal_rps": ideal,
                "efficiency": eff,
                "cpu_efficiency": cpu_eff,
            }
        )
    failures = sum(
        r.non_2xx + r.errors for runs in (echo_runs, denoise_runs) for rs in runs.values() for r in rs
    )
    print(f"\nnon-2xx responses and socket errors over all runs: {failures}")
    print(f"machine after: {machine_state()}")
    ort = {"graph": graph, "batch": batch, "threads": threads, "images_per_s": ort_ips}
    ort |= {"cpu_ms_per_image": ort_cpu_ms, "scan": scan}
    write_json(
        args.json,
        {
            "command": command_line("bench.throughput"),
            "env": env,
            "ort": ort,
            "rows": rows,
            "failures": failures,
        },
    )


if __name__ == "__main__":
    main()
