"""CPU cost of each stage of a ``/denoise`` request, measured in process, one request at a time.

Load-independent where wrk figures are not: each stage runs alone, timed in CPU time (all threads
of this process), median of several windows. The ASGI rows call the apps directly with an in-memory
request (no sockets, no uvicorn), so the difference between ``/denoise`` and the echo app is the
service's own work; the socket and HTTP parsing cost that both share shows in the wrk figures.

    .venv/bin/python -m bench.stages
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from bench._common import BOUNDARY, asgi_post, command_line, digit_png, machine_state, multipart_body
from bench.echo_app import create_echo_app
from service import imaging
from service.batching import Batcher
from service.config import Settings
from service.intake import parse_multipart
from service.main import create_app
from service.registry import load_model


def _cpu_us(fn: Callable[[], object], seconds: float, windows: int) -> float:
    """Median CPU microseconds per call of ``fn`` over ``windows`` windows of about ``seconds``."""
    fn()
    per_call = []
    for _ in range(windows):
        calls, wall, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - wall < seconds or calls < 20:
            fn()
            calls += 1
        per_call.append((time.process_time() - cpu) / calls * 1e6)
    return float(statistics.median(per_call))


async def _acpu_us(fn: Callable[[], Awaitable[object]], seconds: float, windows: int) -> float:
    await fn()
    per_call = []
    for _ in range(windows):
        calls, wall, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - wall < seconds or calls < 20:
            await fn()
            calls += 1
        per_call.append((time.process_time() - cpu) / calls * 1e6)
    return float(statistics.median(per_call))


async def _asgi_rows(png: bytes, seconds: float, windows: int) -> dict[str, float]:
    settings = Settings(log_level="warning")
    body = multipart_body(png)
    echo = create_echo_app(settings)
    service = create_app(settings)
    rows: dict[str, float] = {}
    async with service.router.lifespan_context(service):
        rows["echo app, whole request (ASGI, no socket)"] = await _acpu_us(
            asgi_post(echo, "/echo", body), seconds, windows
        )
        rows["/denoise, whole request (ASGI, no socket), log level warning"] = await _acpu_us(
            asgi_post(service, "/denoise", body), seconds, windows
        )
    settings = Settings(log_level="info")
    service = create_app(settings)
    async with service.router.lifespan_context(service):
        rows["/denoise, whole request (ASGI, no socket), log level info"] = await _acpu_us(
            asgi_post(service, "/denoise", body), seconds, windows
        )
    return rows


async def _batcher_round_trip(seconds: float, windows: int) -> float:
    defaults = Settings()
    batcher = Batcher(
        lambda rows: rows,
        name="trip",
        max_batch_size=defaults.max_batch_size,
        max_wait_s=defaults.max_wait_ms / 1000,
        max_queue=defaults.max_queue,
    )
    batcher.start()
    rows = np.zeros((1, 1, 28, 28), dtype=np.float32)
    try:
        return await _acpu_us(lambda: batcher.submit(rows), seconds, windows)
    finally:
        await batcher.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--windows", type=int, default=5)
    args = parser.parse_args()
    s, w = args.seconds, args.windows

    print(f"command: {command_line('bench.stages')}")
    print(f"machine before: {machine_state()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        png = digit_png(Path(tmp)).read_bytes()
    settings = Settings()
    model = load_model(
        settings.models_dir / settings.default_denoise_model,
        "cpu",
        settings.intra_op_threads,
        scored=settings.ood_scores,
    )
    graph = model.graphs["autoencoder"]
    image = imaging.decode_image(png, max_pixels=settings.max_pixels)[None, None]
    batch32 = np.repeat(image, 32, axis=0)
    output = graph.run(image)[0, 0]

    body = multipart_body(png)
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    rows = {
        "parse the multipart body (multipart.PushMultipartParser)": _cpu_us(
            lambda: parse_multipart(body, content_type, 17), s, w
        ),
        "decode the upload, usual path (libspng through pyspng)": _cpu_us(
            lambda: imaging.decode_common(png), s, w
        ),
        "decode the upload, Pillow path (open + grey float array)": _cpu_us(
            lambda: imaging.to_array(imaging.open_image(png, settings.max_pixels)), s, w
        ),
        "encode the reply (PNG, zlib level 1)": _cpu_us(lambda: imaging.encode_png(output), s, w),
        f"onnxruntime, autoencoder, batch 1 ({settings.intra_op_threads} thread)": _cpu_us(
            lambda: graph.run(image), s, w
        ),
        "onnxruntime, autoencoder, batch 32, per image": _cpu_us(lambda: graph.run(batch32), s, w) / 32,
        "batcher round trip, identity function (queue, wait, thread hop, result)": asyncio.run(
            _batcher_round_trip(s, w)
        ),
    }
    rows |= asyncio.run(_asgi_rows(png, s, w))

    print("\n| stage | CPU µs per request (median) |\n|---|---|")
    for name, us in rows.items():
        print(f"| {name} | {us:,.0f} |")
    print(f"\nmachine after: {machine_state()}")


if __name__ == "__main__":
    main()
