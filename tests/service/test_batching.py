"""service.batching: batches form, every caller gets exactly its rows, the queue stays bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import Batcher, BatcherClosed, BatchSizeMismatch, BatchStats, QueueFull

pytestmark = pytest.mark.anyio


class Recorder:
    """A real function for the batcher to call: doubles its input, remembers each batch size."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.threads: set[int] = set()
        self.delay = delay

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.sizes.append(len(rows))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        return rows * 2.0


def _batcher(fn: Recorder, **overrides: object) -> Batcher:
    options: dict[str, object] = {"max_batch_size": 8, "max_wait_s": 0.01, "max_queue": 64}
    options.update(overrides)
    return Batcher(fn, name="test", **options)  # type: ignore[arg-type]


async def test_concurrent_requests_share_batches_and_get_their_own_rows() -> None:
    fn = Recorder()
    stats: list[BatchStats] = []
    batcher = _batcher(fn, on_batch=stats.append)
    batcher.start()
    try:
        inputs = [np.full((1, 3), float(i)) for i in range(32)]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
    finally:
        await batcher.stop()
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, x * 2.0)
    assert sum(fn.sizes) == 32
    assert max(fn.sizes) == 8 and len(fn.sizes) == 4  # full batches, not 32 calls
    assert [s.rows for s in stats] == fn.sizes
    assert all(w >= 0 for s in stats for w in s.queue_waits)


async def test_the_function_runs_off_the_event_loop_thread() -> None:
    fn = Recorder()
    batcher = _batcher(fn)
    batcher.start()
    try:
        await batcher.submit(np.zeros((1, 3)))
    finally:
        await batcher.stop()
    assert threading.get_ident() not in fn.threads


async def test_a_lone_request_waits_at_most_max_wait() -> None:
    batcher = _batcher(Recorder(), max_wait_s=0.05)
    batcher.start()
    try:
        started = time.perf_counter()
        await batcher.submit(np.zeros((1, 3)))
        elapsed = time.perf_counter() - started
    finally:
        await batcher.stop()
    assert elapsed < 0.5  # generous: the point is that it does not wait for a full batch


async def test_multi_row_requests_are_chunked_to_max_batch_size() -> None:
    fn = Recorder()
    batcher = _batcher(fn, max_batch_size=4)
    batcher.start()
    try:
        rows = np.arange(30, dtype=np.float64).reshape(10, 3)
        out = await batcher.submit(rows)
    finally:
        await batcher.stop()
    np.testing.assert_array_equal(out, rows * 2.0)
    assert max(fn.sizes) <= 4 and sum(fn.sizes) == 10


async def test_queue_full_is_refused_at_once() -> None:
    fn = Recorder(delay=0.2)
    batcher = _batcher(fn, max_batch_size=1, max_wait_s=0.0, max_queue=2)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(np.zeros((1, 3))))
        await asyncio.sleep(0.05)  # the worker has taken it and is busy for 0.2 s
        waiting = [asyncio.create_task(batcher.submit(np.zeros((1, 3)))) for _ in range(2)]
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(QueueFull) as refused:
            await batcher.submit(np.zeros((1, 3)))
        assert time.perf_counter() - started < 0.05
        assert refused.value.retry_after >= 1
        await asyncio.gather(first, *waiting)  # the accepted ones still complete
    finally:
        await batcher.stop()


async def test_a_function_returning_the_wrong_row_count_fails_the_batch() -> None:
    batcher = Batcher(lambda rows: rows[:-1], name="bad", max_batch_size=4, max_wait_s=0.0, max_queue=8)
    batcher.start()
    try:
        with pytest.raises(BatchSizeMismatch, match="returned 1 outputs for 2 inputs"):
            await batcher.submit(np.zeros((2, 3)))
    finally:
        await batcher.stop()


async def test_a_failing_function_fails_its_callers_and_the_batcher_keeps_working() -> None:
    calls = 0

    def flaky(rows: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return rows

    batcher = Batcher(flaky, name="flaky", max_batch_size=4, max_wait_s=0.0, max_queue=8)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(np.zeros((1, 3)))
        np.testing.assert_array_equal(await batcher.submit(np.ones((1, 3))), np.ones((1, 3)))
    finally:
        await batcher.stop()


async def test_stop_fails_waiting_requests_and_refuses_new_ones() -> None:
    batcher = _batcher(Recorder(delay=0.2), max_batch_size=1, max_wait_s=0.0)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(np.zeros((1, 3)))) for _ in range(3)]
    await asyncio.sleep(0.05)
    await batcher.stop()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, BatcherClosed) for r in results)
    with pytest.raises(BatcherClosed):
        await batcher.submit(np.zeros((1, 3)))


async def test_cancelled_requests_are_not_computed() -> None:
    fn = Recorder(delay=0.1)
    batcher = _batcher(fn, max_batch_size=1, max_wait_s=0.0)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(np.zeros((1, 3))))
        await asyncio.sleep(0.02)
        abandoned = asyncio.create_task(batcher.submit(np.ones((1, 3))))
        await asyncio.sleep(0)
        abandoned.cancel()
        await first
        np.testing.assert_array_equal(await batcher.submit(np.full((1, 3), 5.0)), np.full((1, 3), 10.0))
    finally:
        await batcher.stop()
    assert fn.sizes == [1, 1]  # the first and the last; the abandoned one never ran


async def test_a_function_of_several_outputs_gives_each_request_its_own_rows_of_each() -> None:
    def output_and_score(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rows * 2.0, rows[:, 0] + 0.5

    batcher = Batcher(output_and_score, name="scored", max_batch_size=4, max_wait_s=0.01, max_queue=64)
    batcher.start()
    try:
        inputs = [np.full((1 + i % 3, 2), float(i)) for i in range(12)]  # some larger than a batch
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        big = await batcher.submit(np.arange(18.0).reshape(9, 2))  # split into chunks of 4
    finally:
        await batcher.stop()
    for x, (doubled, score) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(doubled, x * 2.0)
        np.testing.assert_array_equal(score, x[:, 0] + 0.5)
    np.testing.assert_array_equal(big[0], np.arange(18.0).reshape(9, 2) * 2.0)
    np.testing.assert_array_equal(big[1], np.arange(0.0, 18.0, 2.0) + 0.5)


@pytest.mark.parametrize("inline", [False, True])
async def test_finish_runs_once_per_batch_on_the_event_loop_and_its_columns_are_sliced(inline: bool) -> None:
    fn = Recorder()
    finished: list[tuple[int, int]] = []  # (rows, thread)

    def finish(rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        finished.append((len(rows), threading.get_ident()))
        return outputs, rows[:, 0] - outputs[:, 0]

    batcher = _batcher(fn, finish=finish, finish_inline=inline)
    batcher.start()
    try:
        inputs = [np.full((1, 3), float(i)) for i in range(20)]
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
    finally:
        await batcher.stop()
    for x, (doubled, difference) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(doubled, x * 2.0)
        np.testing.assert_array_equal(difference, -x[:, 0])
    assert [n for n, _ in finished] == fn.sizes  # one finish per call of the function
    assert {thread for _, thread in finished} == {threading.get_ident()}
    assert threading.get_ident() not in fn.threads


@pytest.mark.parametrize("inline", [False, True])
async def test_a_failing_finish_fails_its_batch_and_the_batcher_keeps_working(inline: bool) -> None:
    calls = {"n": 0}

    def finish(rows: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("scoring failed")
        return outputs

    batcher = _batcher(Recorder(), finish=finish, finish_inline=inline)
    batcher.start()
    try:
        with pytest.raises(ValueError, match="scoring failed"):
            await batcher.submit(np.ones((1, 3)))
        np.testing.assert_array_equal(await batcher.submit(np.ones((1, 3))), np.full((1, 3), 2.0))
    finally:
        await batcher.stop()


async def test_the_next_batch_is_computing_while_a_finish_runs() -> None:
    # Two one-row batches are waiting. While the first one's finish hook runs (on the event loop),
    # the second must already be in the function: a finish waited for in line would leave the
    # inference thread idle for as long as the scores take.
    second_started = threading.Event()
    overlapped: list[bool] = []

    def fn(rows: np.ndarray) -> np.ndarray:
        if rows[0, 0] == 2.0:
            second_started.set()
        return rows

    def finish(rows: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        if rows[0, 0] == 1.0:
            overlapped.append(second_started.wait(timeout=2.0))
        return outputs

    batcher = Batcher(fn, name="test", max_batch_size=1, max_wait_s=0.0, max_queue=8, finish=finish)
    batcher.start()
    try:
        first, second = await asyncio.gather(
            batcher.submit(np.full((1, 1), 1.0)), batcher.submit(np.full((1, 1), 2.0))
        )
        assert overlapped == [True]
        assert float(first[0, 0]) == 1.0 and float(second[0, 0]) == 2.0
        assert batcher.idle
    finally:
        await batcher.stop()
