"""Where a ``/denoise`` request's CPU time goes: py-spy on ``ae-serve`` under wrk load.

Samples the server process (every thread, on-CPU samples only) while wrk keeps ``--concurrency``
uploads in flight, then attributes each sample to a stage of the request path by the innermost
frame that belongs to a known package, and prints the share of samples per stage and per thread
(the event loop vs. the inference threads), plus the hottest functions. Optionally writes the
flame graph as SVG.

    .venv/bin/python -m bench.profile --concurrency 64 --seconds 15 --svg docs/benchmarks/flame.svg
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench._common import SERVICE_ARGV, command_line, digit_png, machine_state, serve, wrk
from bench.throughput import parse_env

PY_SPY = Path(sys.executable).parent / "py-spy"

# Innermost match wins: a frame in service/imaging.py under starlette counts as "decode image".
STAGES: list[tuple[str, re.Pattern[str]]] = [
    ("onnxruntime run", re.compile(r"onnxruntime/|service/inference\.py")),
    (
        "endpoint code (service/routes, state, deps)",
        re.compile(r"service/(routes/|state\.py|deps\.py|errors\.py)"),
    ),
    ("decode image (Pillow)", re.compile(r"PIL/|service/imaging\.py.*(open_image|to_array|_grey|decode)")),
    ("encode PNG reply", re.compile(r"service/imaging\.py.*(encode_png|to_uint8|_chunk)|zlib")),
    ("multipart parsing", re.compile(r"multipart/|starlette/formparsers\.py|python_multipart")),
    ("batching queue", re.compile(r"service/batching\.py")),
    ("logging", re.compile(r"logging/|service/logs\.py|json/encoder")),
    ("metrics", re.compile(r"prometheus_client/|service/metrics\.py")),
    ("service middleware", re.compile(r"service/middleware\.py")),
    ("FastAPI/Starlette routing", re.compile(r"fastapi/|starlette/")),
    ("uvicorn HTTP protocol", re.compile(r"uvicorn/|httptools")),
    ("asyncio event loop", re.compile(r"asyncio/|uvloop")),
    ("thread hand-off", re.compile(r"concurrent/futures|threading\.py|queue\.py")),
]


def stage_of(frames: list[str]) -> tuple[str, str]:
    """(stage, the innermost frame that placed the sample in it)."""
    for frame in reversed(frames):
        for name, pattern in STAGES:
            if pattern.search(frame):
                return name, frame
    return "other", frames[-1] if frames else "?"


def thread_kind(root: str) -> str:
    if "MainThread" in root:
        return "event loop thread"
    if "ae-infer" in root:
        return "inference threads"
    return "other threads"


def parse_raw(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) format: ``frame;frame;... count`` per line."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--model", default="mnist-denoise")
    parser.add_argument("--env", nargs="*", default=[], help="AE_* settings for the service")
    parser.add_argument("--svg", type=Path, help="also write a flame graph here")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    env = parse_env(args.env)

    print(f"command: {command_line('bench.profile')}")
    print(f"machine before: {machine_state()}", flush=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve("service", SERVICE_ARGV, {"AE_LOG_LEVEL": "info", **env}) as server,
    ):
        image = digit_png(Path(tmp))
        raw = Path(tmp) / "profile.txt"
        result: dict[str, object] = {}
        load_seconds = args.seconds + (5 if args.svg else 0) + 2
        load = threading.Thread(
            target=lambda: result.update(
                r=wrk(f"{server.url}/denoise?model={args.model}", image, args.concurrency, load_seconds)
            )
        )
        load.start()
        record = [str(PY_SPY), "record", "--pid", str(server.proc.pid), "--rate", str(args.rate)]
        record += ["--threads", "--nonblocking"]
        window = ["--duration", str(args.seconds), "--format", "raw", "-o", str(raw)]
        subprocess.run([*record, *window], check=True, capture_output=True)
        if args.svg is not None:
            args.svg.parent.mkdir(parents=True, exist_ok=True)
            # A second, separate window: py-spy writes one format per run.
            subprocess.run([*record, "--duration", "3", "-o", str(args.svg)], check=True, capture_output=True)
        load.join()
        stacks = parse_raw(raw)
        if args.raw is not None:
            args.raw.write_text(raw.read_text())

    total = sum(n for _, n in stacks)
    by_stage: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    by_stage_frame: Counter[tuple[str, str]] = Counter()
    for frames, n in stacks:
        stage, frame = stage_of(frames[1:])
        by_stage[stage] += n
        by_stage_frame[(stage, frame)] += n
        by_thread[thread_kind(frames[0])] += n
        by_function[frames[-1]] += n
    print(f"\nwrk during the profile: {result.get('r')}")
    print(f"{total} on-CPU samples at {args.rate} Hz over {args.seconds} s\n")
    print("| thread | share of samples |\n|---|---|")
    for name, n in by_thread.most_common():
        print(f"| {name} | {n / total:.1%} |")
    print("\n| stage (innermost matching frame) | share of samples |\n|---|---|")
    for name, n in by_stage.most_common():
        print(f"| {name} | {n / total:.1%} |")
    print("\n| stage | where (innermost frame of the stage, with what it calls) | share |\n|---|---|---|")
    for (stage, frame), n in by_stage_frame.most_common(15):
        print(f"| {stage} | `{frame}` | {n / total:.1%} |")
    print("\n| hottest function (self time) | share |\n|---|---|")
    for name, n in by_function.most_common(15):
        print(f"| `{name}` | {n / total:.1%} |")
    print(f"\nmachine after: {machine_state()}")


if __name__ == "__main__":
    main()
