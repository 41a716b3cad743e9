"""Overload: far more concurrent requests than the queue holds.

A running ``ae-serve`` with a tiny queue (2 waiting requests, batches of 2) gets hundreds of
simultaneous uploads. Every request must be answered, only with 200 or 503 + Retry-After; right
after the burst the service must be ready and serving; and repeated bursts must not grow its memory.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hardening.conftest import LiveServer, live_server

# Each test here bounds its own wait: a hang fails it within 180 s, not at the suite-wide 600 s.
pytestmark = pytest.mark.timeout(180)

BURST = 200


@pytest.fixture(scope="module")
def small_queue_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        models_dir,
        tmp_path_factory.mktemp("overload"),
        AE_MAX_QUEUE="2",
        AE_MAX_BATCH_SIZE="2",
        AE_MAX_WAIT_MS="2",
    ) as live:
        yield live


async def _burst(
    url: str, image: bytes, n: int, cancel_every: int = 0
) -> list[httpx.Response | BaseException]:
    """``n`` requests at once (half /denoise, half /encode); every ``cancel_every``-th is abandoned."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def one(i: int) -> httpx.Response:
            path = "/denoise" if i % 2 else "/encode"
            return await client.post(path, files={"file": ("d.png", image, "image/png")})

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        if cancel_every:
            await asyncio.sleep(0.05)
            for task in tasks[::cancel_every]:
                task.cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)


def _check_burst(results: list[httpx.Response | BaseException]) -> Counter[int]:
    statuses: Counter[int] = Counter()
    for result in results:
        assert isinstance(result, httpx.Response), f"a request got no answer: {result!r}"
        statuses[result.status_code] += 1
        if result.status_code == 503:
            assert result.headers.get("retry-after", "").isdigit(), result.headers
            assert "queue is full" in result.json()["detail"]
    assert set(statuses) <= {200, 503}, statuses
    return statuses


def _serves_at_once(server: LiveServer, image: bytes) -> None:
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    response = httpx.post(f"{server.url}/denoise", files={"file": ("d.png", image, "image/png")}, timeout=10)
    assert response.status_code == 200, response.text


def test_burst_gets_only_200_or_503_and_the_service_recovers_at_once(
    small_queue_server: LiveServer, digit_png: bytes
) -> None:
    statuses = _check_burst(asyncio.run(_burst(small_queue_server.url, digit_png, BURST)))
    assert statuses[503] > 0, f"the burst never filled the queue: {statuses}"
    assert statuses[200] > 0, f"nothing was served under overload: {statuses}"
    _serves_at_once(small_queue_server, digit_png)


def test_abandoned_requests_do_not_hurt_the_others(small_queue_server: LiveServer, digit_png: bytes) -> None:
    results = asyncio.run(_burst(small_queue_server.url, digit_png, BURST, cancel_every=3))
    answered = [r for r in results if not isinstance(r, asyncio.CancelledError)]
    _check_burst(answered)
    _serves_at_once(small_queue_server, digit_png)


def test_repeated_bursts_do_not_grow_memory(small_queue_server: LiveServer, digit_png: bytes) -> None:
    # A first burst reaches the steady state (buffers, connection objects); more must not add to it.
    _check_burst(asyncio.run(_burst(small_queue_server.url, digit_png, BURST)))
    settled = small_queue_server.rss_mib()
    for _ in range(3):
        _check_burst(asyncio.run(_burst(small_queue_server.url, digit_png, BURST)))
    after = small_queue_server.rss_mib()
    assert after - settled < 10, f"RSS grew from {settled:.1f} to {after:.1f} MiB over 3 bursts"
    _serves_at_once(small_queue_server, digit_png)
