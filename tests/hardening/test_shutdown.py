"""Stopping the batchers (shutdown, or closing a generation after a reload) answers every request.

A request that a batcher has already taken off its queue, while it waits for more to fill the
batch, is invisible to the queue; stopping at that moment must still answer it (503), not leave
its caller waiting forever.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.batching import Batcher, BatcherClosed

# Each test here bounds its own wait: a hang fails it within 120 s, not at the suite-wide 600 s.
pytestmark = pytest.mark.timeout(120)


def test_stop_while_a_batch_is_gathering_answers_its_requests() -> None:
    async def scenario() -> None:
        batcher = Batcher(lambda rows: rows, name="gather", max_batch_size=8, max_wait_s=30.0, max_queue=8)
        batcher.start()
        waiting = [asyncio.ensure_future(batcher.submit(np.zeros((1, 3)))) for _ in range(2)]
        await asyncio.sleep(0.05)  # the worker took both and now waits 30 s for six more
        assert batcher.depth == 0 and not batcher.idle
        await asyncio.wait_for(batcher.stop(), 5)
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
        assert all(isinstance(r, BatcherClosed) for r in results), results

    asyncio.run(scenario())


def test_idle_only_once_every_request_has_its_answer() -> None:
    async def scenario() -> None:
        batcher = Batcher(lambda rows: rows, name="idle", max_batch_size=4, max_wait_s=0.05, max_queue=8)
        batcher.start()
        try:
            assert batcher.idle
            pending = asyncio.ensure_future(batcher.submit(np.ones((1, 2))))
            await asyncio.sleep(0)
            assert not batcher.idle  # queued
            await asyncio.sleep(0.01)
            assert not batcher.idle and not pending.done()  # gathering: off the queue, not answered
            np.testing.assert_array_equal(await pending, np.ones((1, 2)))
            assert batcher.idle
        finally:
            await batcher.stop()

    asyncio.run(scenario())
