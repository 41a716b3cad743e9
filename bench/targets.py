"""The request path's targets, each a ratio measured side by side in one run (docs/benchmarks.md).

Every round loads each contender in turn with wrk (one thread, ``--concurrency`` connections, the
same real MNIST test digit with noise 0.3), so that a change in background load hits them alike;
each figure is the median round. onnxruntime alone (the same graph, two intra-op threads, batch
32) is timed in every round too. The contenders:

- ``echo``: a raw ASGI app (bench/echo_app.py) that reads the same multipart upload and returns it;
- ``denoise``: ``ae-serve``'s ``POST /denoise?model=…`` with the PNG upload;
- ``v2``: ``ae-serve``'s ``POST /v2/models/…/infer`` with the binary tensor extension (the same
  image as float32);
- ``base`` / ``base-v2``: the same two on another checkout (``--base``, e.g. the commit before the
  request core: ``git worktree add /tmp/base 06215d7``);
- ``granian-echo`` / ``granian``: with ``--granian``, the raw echo and ``ae-serve``'s app under
  granian (Rust, hyper) instead of uvicorn, to choose the HTTP server by measurement;
- ``litserve``: LitServe serving the same ONNX file with its own batching (bench/peers/), when
  ``--litserve-python`` names a Python that has ``litserve`` (``make bench`` makes one).

Then, at ``--tail-concurrency`` (64), p99 ÷ p50 of ``denoise``.

    .venv/bin/python -m bench.targets --base /tmp/base --litserve-python .venv-peers/bin/python
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from PIL import Image

from bench._common import (
    BIN,
    BODY_LUA,
    ECHO_ARGV,
    LUA,
    ROOT,
    SERVICE_ARGV,
    Server,
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
from bench.ort_alone import open_session, rate_and_cpu

ORT_THREADS = 2
# One worker process, one Python thread, uvloop: ae-serve's shape under granian.
GRANIAN = (
    "exec {bin}/granian --interface asgi --factory --workers 1 --loop uvloop --no-ws --log-level warning "
    '--host "$AE_HOST" --port "$AE_PORT" {target}'
)
ORT_BATCH = 32


def v2_body(image: Path, directory: Path) -> tuple[Path, str]:
    """The image as a v2 binary-tensor request body; (file, Inference-Header-Content-Length header)."""
    pixels = np.asarray(Image.open(image), dtype="<f4").reshape(1, 1, 28, 28) / 255.0
    raw = pixels.astype("<f4").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 1, 28, 28],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "denoised", "parameters": {"binary_data": True}}],
        }
    ).encode()
    path = directory / "v2.bin"
    path.write_bytes(head + raw)
    return path, f"Inference-Header-Content-Length: {len(head)}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mnist-s2d")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tail-concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", type=Path, help="another checkout to serve as 'base' (PYTHONPATH)")
    parser.add_argument("--litserve-python", type=Path, help="a Python with litserve installed")
    parser.add_argument("--granian", action="store_true", help="also serve both apps with granian")
    parser.add_argument("--env", nargs="*", default=[], help="AE_* settings for ae-serve")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    env = dict(pair.split("=", 1) for pair in args.env)
    model, c = args.model, args.concurrency

    print(f"command: {command_line('bench.targets')}")
    print(f"machine before: {machine_state()}", flush=True)
    session = open_session(f"{model}/autoencoder", ORT_THREADS)
    runs: dict[str, list[WrkResult]] = {}
    ort_rounds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        image = digit_png(Path(tmp))
        tensor, length_header = v2_body(image, Path(tmp))
        servers: dict[str, tuple[Server, str, Path, tuple[str, ...]]] = {}
        v2 = ("application/octet-stream", length_header)
        echo = stack.enter_context(serve("echo", ECHO_ARGV, env, ready_path="/healthz"))
        service = stack.enter_context(serve("service", SERVICE_ARGV, env))
        servers["echo"] = (echo, "/echo", image, ())
        servers["denoise"] = (service, f"/denoise?model={model}", image, ())
        servers["v2"] = (service, f"/v2/models/{model}/infer", tensor, v2)
        if args.base is not None:
            base_env = {**env, "PYTHONPATH": str(args.base.resolve())}
            base = stack.enter_context(serve("base", SERVICE_ARGV, base_env))
            servers["base"] = (base, f"/denoise?model={model}", image, ())
            servers["base-v2"] = (base, f"/v2/models/{model}/infer", tensor, v2)
        if args.granian:
            for label, target, ready in (
                ("granian-echo", "bench.echo_app:echo_app", "/healthz"),
                ("granian", "service.main:create_app", "/readyz"),
            ):
                argv = ["sh", "-c", GRANIAN.format(bin=BIN, target=target)]
                server = stack.enter_context(serve(label, argv, env, ready_path=ready))
                path, body, extra = servers["echo" if label == "granian-echo" else "denoise"][1:]
                servers[label] = (server, path, body, extra)
        peer_argv = [str(args.litserve_python), str(ROOT / "bench" / "peers" / "litserve_app.py")]
        peer_env = {"PEER_MODEL": str(ROOT / "models" / model / "autoencoder.onnx")}
        for round_ in range(args.rounds):
            ort_rounds.append(rate_and_cpu(session, ORT_BATCH, seconds=2.0)[0])
            measured = list(servers.items())
            if args.litserve_python is not None:
                measured.append(("litserve", (None, "/predict", image, ())))  # type: ignore[arg-type]
            for label, (server, path, body, extra) in measured:
                script = BODY_LUA if extra else LUA
                if label == "litserve":
                    # Its inference workers poll their queues even when idle: it is up only while
                    # it is measured, so that it takes nothing from the others.
                    with serve("litserve", peer_argv, peer_env, ready_path="/health") as peer:
                        r = load_test(peer, path, body, c, args.seconds)
                else:
                    r = load_test(server, path, body, c, args.seconds, script=script, script_args=extra)
                runs.setdefault(label, []).append(r)
                print(
                    f"round {round_ + 1} {label}: {r.rps:,.0f} req/s, p50 {r.p50_ms:.1f} ms, "
                    f"p99 {r.p99_ms:.1f} ms, server CPU {r.server_cpu_ms:.3f} ms/req "
                    f"(non-2xx {r.non_2xx}, errors {r.errors})",
                    flush=True,
                )
        tail = [
            load_test(service, f"/denoise?model={model}", image, args.tail_concurrency, args.seconds)
            for _ in range(args.rounds)
        ]
        rss = service.rss_mib()
        served = sum(r.requests for label in ("denoise", "v2") for r in runs[label]) + sum(
            r.requests for r in tail
        )
    ort_ips = median(ort_rounds)
    best = {label: median_result(results) for label, results in runs.items()}
    ideal = 1.0 / (1.0 / best["echo"].rps + 1.0 / ort_ips)
    tail_best = median_result(tail)

    print(f"\nonnxruntime alone ({model}, batch {ORT_BATCH}, {ORT_THREADS} threads): {ort_ips:,.0f} images/s")
    print("\n| contender | req/s | p50 ms | p99 ms | server CPU ms/req |")
    print("|---|---|---|---|---|")
    for label, r in best.items():
        print(f"| {label} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.server_cpu_ms:.3f} |")
    ratios: dict[str, float] = {
        "efficiency (denoise ÷ ideal)": best["denoise"].rps / ideal,
        "v2 binary ÷ denoise PNG": best["v2"].rps / best["denoise"].rps,
        f"p99 ÷ p50 at c={args.tail_concurrency}": tail_best.p99_ms / tail_best.p50_ms,
    }
    if "base" in best:
        ratios["denoise ÷ base denoise"] = best["denoise"].rps / best["base"].rps
        ratios["v2 ÷ base v2"] = best["v2"].rps / best["base-v2"].rps
    if "granian" in best:
        ratios["granian ÷ uvicorn, echo"] = best["granian-echo"].rps / best["echo"].rps
        ratios["granian ÷ uvicorn, denoise"] = best["granian"].rps / best["denoise"].rps
    if "litserve" in best:
        ratios["denoise ÷ LitServe"] = best["denoise"].rps / best["litserve"].rps
    print(f"\nideal req/s = 1 / (1/echo + 1/onnxruntime) = {ideal:,.0f}")
    print("\n| ratio | value |")
    print("|---|---|")
    for name, value in ratios.items():
        print(f"| {name} | {value:.2f} |")
    print(f"\nresident memory of ae-serve after {served:,} requests: {rss:.1f} MiB")
    print(f"machine after: {machine_state()}")
    write_json(
        args.json,
        {
            "command": command_line("bench.targets"),
            "onnxruntime_images_per_s": ort_ips,
            "ideal_rps": ideal,
            "runs": {label: [r.row() for r in results] for label, results in runs.items()},
            "tail": [r.row() for r in tail],
            "ratios": ratios,
            "rss_mib": rss,
            "requests_served": served,
        },
    )


if __name__ == "__main__":
    main()
