"""End to end under concurrency: micro-batching over HTTP, and the bounded queue's 503."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service.conftest import png_bytes, read_png

pytestmark = pytest.mark.anyio
PNG = {"content-type": "image/png"}
# The smallest model: these tests are about batching and routing, not about the network's cost.
MODEL = "mnist-dense"


async def _post_all(
    app: Any, images: np.ndarray, path: str = f"/denoise?model={MODEL}"
) -> list[httpx.Response]:
    """POST every image at once through the ASGI app (lifespan running), as LitServe's tests do."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as c:
        return await asyncio.gather(*(c.post(path, content=png_bytes(x), headers=PNG) for x in images))


async def test_64_concurrent_requests_each_get_their_own_answer(
    app_factory: Callable[..., Any], digits: tuple[np.ndarray, np.ndarray]
) -> None:
    noisy = digits[1][:64]
    app = app_factory(max_batch_size=16, max_wait_ms=5)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            singles = [
                (await c.post(f"/encode?model={MODEL}", content=png_bytes(x), headers=PNG)).json()["code"]
                for x in noisy
            ]
        responses = await _post_all(app, noisy, f"/encode?model={MODEL}")
        registry = app.state.service.metrics.registry
        graph = {"graph": f"{MODEL}/encoder"}
        rows = registry.get_sample_value("ae_batch_size_sum", graph)
        calls = registry.get_sample_value("ae_batch_size_count", graph)
    assert [r.status_code for r in responses] == [200] * len(noisy)
    codes = [r.json()["code"] for r in responses]
    for single, code in zip(singles, codes, strict=True):
        # Its own answer: the code of the same image served alone…
        np.testing.assert_allclose(code, single, rtol=1e-5, atol=1e-5)
    # …and nobody else's: the 64 inputs have 64 different codes.
    assert len({tuple(np.round(c, 4)) for c in codes}) == len(noisy)
    assert rows == 2 * len(noisy)
    assert calls < len(noisy) + 20  # the concurrent round ran in batches, not one call each


async def test_64_concurrent_denoise_requests_match_single_requests(
    app_factory: Callable[..., Any], digits: tuple[np.ndarray, np.ndarray]
) -> None:
    noisy = digits[1][:64]
    app = app_factory(max_batch_size=32, max_wait_ms=2)
    async with app.router.lifespan_context(app):
        singles = [read_png(r.content) for r in [(await _post_all(app, x[None]))[0] for x in noisy]]
        responses = await _post_all(app, noisy)
    assert [r.status_code for r in responses] == [200] * len(noisy)
    for single, response in zip(singles, responses, strict=True):
        assert np.abs(read_png(response.content) - single).max() <= 1 / 255 + 1e-6


async def test_full_queue_answers_503_with_retry_after_at_once(
    app_factory: Callable[..., Any], digits: tuple[np.ndarray, np.ndarray]
) -> None:
    noisy = digits[1][:48]
    app = app_factory(max_batch_size=1, max_wait_ms=0, max_queue=2)
    async with app.router.lifespan_context(app):
        responses = await _post_all(app, noisy)
    statuses = [r.status_code for r in responses]
    # The queue holds 2, so at least 2 are accepted; the rest, arriving while it is full, are refused.
    assert set(statuses) <= {200, 503} and statuses.count(503) > 0 and statuses.count(200) >= 2
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert "queue is full" in r.json()["detail"]
