"""Dynamic micro-batching: concurrent requests for one function share a call.

Knows neither HTTP nor ONNX. A :class:`Batcher` wraps a function ``f(rows) -> rows`` that maps an
array whose first axis is the batch to an array with as many rows (an ONNX graph, here), or to a
tuple of such arrays. An optional ``finish(rows, outputs)`` runs on the event loop once per batch
when ``f`` has returned (the out-of-distribution scores of a batch) and may return such a tuple; it
runs in a task of its own, so that the next batch is already in ``f`` meanwhile, or, with
``finish_inline`` (a step of microseconds, which a task would cost more than it overlaps), right
where ``f``'s result arrives. Callers
``await batcher.submit(rows)``; worker tasks collect pending requests until ``max_batch_size`` rows
or ``max_wait_s`` after the first one, call ``f`` once on the concatenation in an executor thread
(never on the event loop), and hand each caller exactly its own slice of the result. As in LitServe,
a function that returns a different number of rows than it was given fails the whole batch rather
than handing anyone a neighbour's answer.

The queue is bounded: :meth:`Batcher.submit` raises :class:`QueueFull` at once when ``max_queue``
requests are already waiting, so overload turns into fast rejections instead of unbounded latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher already holds ``max_queue`` waiting requests; retry after ``retry_after`` seconds."""

    # Retry-After has one-second resolution, and a full queue of tiny graphs drains well within that.
    def __init__(self, name: str, capacity: int, retry_after: int = 1) -> None:
        super().__init__(f"{name}: inference queue is full ({capacity} requests waiting); retry later")
        self.retry_after = retry_after


class BatcherClosed(Exception):
    """The batcher is not running (not started yet, or stopped while the request waited)."""


class BatchSizeMismatch(RuntimeError):
    """The wrapped function returned a different number of rows than it was given."""


@dataclass(frozen=True)
class BatchStats:
    """What one call of the wrapped function did, for metrics."""

    name: str
    rows: int
    requests: int
    queue_waits: tuple[float, ...]  # seconds each request waited before the call started
    run_seconds: float


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[Any]
    enqueued: float


@dataclass
class _Computed:
    """A batch ``fn`` has run: its inputs, outputs (the finish hook replaces them), and timing."""

    inputs: np.ndarray
    outputs: Any
    started: float
    run_seconds: float


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(exc)


class Batcher:
    """Collects concurrent :meth:`submit` calls into batches for ``fn``; see the module docstring."""

    def __init__(
        self,
        fn: Callable[[np.ndarray], Any],
        *,
        name: str,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        workers: int = 1,
        executor: Executor | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
        finish: Callable[[np.ndarray, Any], Any] | None = None,
        finish_inline: bool = False,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or workers < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size, max_queue and workers must be >= 1, max_wait_s >= 0")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._fn = fn
        self._workers = workers
        self._executor = executor
        self._on_batch = on_batch
        self._finish = finish
        self._finish_inline = finish_inline
        self._queue: deque[_Pending] = deque()
        self._not_empty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._finishing: set[asyncio.Task[None]] = set()  # batches computed, their finish hook not run
        self._running = False
        self._active = 0  # batches taken off the queue whose callers have not all been answered yet

    @property
    def depth(self) -> int:
        """Requests waiting to be batched."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing running: every request submitted so far has its answer."""
        return not self._queue and self._active == 0

    def start(self) -> None:
        """Start the worker tasks; call from the running event loop (the app's lifespan)."""
        if self._running:
            return
        self._running = True
        self._tasks = [
            asyncio.create_task(self._work(), name=f"batcher:{self.name}:{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        """Stop the workers; requests still waiting fail with :class:`BatcherClosed`."""
        self._running = False
        tasks = [*self._tasks, *self._finishing]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed(f"{self.name}: shutting down"))

    async def submit(self, rows: np.ndarray) -> Any:
        """Queue ``rows`` (first axis = batch, at least one row) and wait for exactly their outputs.

        Requests larger than ``max_batch_size`` are split into chunks that batch independently.
        """
        if not self._running:
            raise BatcherClosed(f"{self.name}: not running")
        if len(rows) == 0:
            raise ValueError("submit needs at least one row")
        size = self.max_batch_size
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        if len(self._queue) + len(chunks) > self.max_queue:
            raise QueueFull(self.name, self.max_queue)
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures = []
        for chunk in chunks:
            future: asyncio.Future[Any] = loop.create_future()
            self._queue.append(_Pending(chunk, future, now))
            futures.append(future)
        self._not_empty.set()
        if len(futures) == 1:
            return await futures[0]
        parts = await asyncio.gather(*futures)
        if isinstance(parts[0], tuple):
            return tuple(np.concatenate(column) for column in zip(*parts, strict=True))
        return np.concatenate(parts)

    async def _collect(self) -> list[_Pending]:
        """Wait for a first request, then take more until the batch is full or the wait is over."""
        while not self._queue:
            self._not_empty.clear()
            await self._not_empty.wait()
        loop = asyncio.get_running_loop()
        first = self._queue.popleft()
        self._active += 1  # from here until _work has answered it; _work takes it back
        batch, rows = [first], len(first.rows)
        deadline = loop.time() + self.max_wait_s
        try:
            while rows < self.max_batch_size:
                if self._queue:
                    if rows + len(self._queue[0].rows) > self.max_batch_size:
                        break
                    pending = self._queue.popleft()
                    batch.append(pending)
                    rows += len(pending.rows)
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._not_empty.clear()
                try:
                    await asyncio.wait_for(self._not_empty.wait(), remaining)
                except TimeoutError:
                    break
        except asyncio.CancelledError:
            # Stopped while gathering: these requests are off the queue, so stop() cannot see them;
            # answer them here, or their callers would wait forever.
            self._active -= 1
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(BatcherClosed(f"{self.name}: shutting down"))
            raise
        # A caller that gave up (client gone, timeout) no longer needs its rows computed.
        return [p for p in batch if not p.future.done()]

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            try:
                outputs = await self._compute(loop, batch)
            except BaseException:
                self._active -= 1
                raise
            if outputs is None or self._finish is None:
                self._active -= 1
                continue
            # The finish hook (a batch's scores) runs on the event loop while this worker collects
            # and starts the next batch: waited for here, it left the inference thread idle for
            # as long as it took (docs/benchmarks.md, "The score overlapped with the next batch").
            task = asyncio.create_task(self._complete(batch, outputs))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)

    async def _compute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> _Computed | None:
        """Run ``fn`` on one collected batch; without a finish hook to run in a task, answer its
        callers too.

        None when there is nothing more to do for the batch (empty, failed, or answered)."""
        if not batch:
            return None
        inputs = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._fn, inputs)
        except asyncio.CancelledError:
            _fail(batch, BatcherClosed(f"{self.name}: shutting down"))
            raise
        except Exception as exc:
            logger.exception("%s: batch of %d failed", self.name, len(inputs))
            _fail(batch, exc)
            return None
        computed = _Computed(inputs, outputs, started, time.perf_counter() - started)
        if self._finish is not None and not self._finish_inline:
            return computed
        try:
            if self._finish is not None:
                computed.outputs = self._finish(computed.inputs, computed.outputs)
            self._answer(batch, computed)
        except Exception as exc:
            logger.exception("%s: batch of %d failed", self.name, len(inputs))
            _fail(batch, exc)
        return None

    async def _complete(self, batch: list[_Pending], computed: _Computed) -> None:
        """Run the finish hook on a computed batch and answer its callers (a task of its own)."""
        try:
            assert self._finish is not None
            computed.outputs = self._finish(computed.inputs, computed.outputs)
            self._answer(batch, computed)
        except asyncio.CancelledError:
            _fail(batch, BatcherClosed(f"{self.name}: shutting down"))
            raise
        except Exception as exc:
            logger.exception("%s: batch of %d failed", self.name, len(computed.inputs))
            _fail(batch, exc)
        finally:
            self._active -= 1

    def _answer(self, batch: list[_Pending], computed: _Computed) -> None:
        """Hand each caller exactly its own rows, or fail them all if the row counts do not match."""
        inputs, outputs = computed.inputs, computed.outputs
        columns = outputs if isinstance(outputs, tuple) else (outputs,)
        for column in columns:
            if len(column) != len(inputs):
                raise BatchSizeMismatch(
                    f"{self.name}: returned {len(column)} outputs for {len(inputs)} inputs"
                )
        offset = 0
        for p in batch:
            n = len(p.rows)
            if not p.future.done():
                if isinstance(outputs, tuple):
                    p.future.set_result(tuple(column[offset : offset + n] for column in outputs))
                else:
                    p.future.set_result(outputs[offset : offset + n])
            offset += n
        if self._on_batch is not None:
            stats = BatchStats(
                name=self.name,
                rows=len(inputs),
                requests=len(batch),
                queue_waits=tuple(computed.started - p.enqueued for p in batch),
                run_seconds=computed.run_seconds,
            )
            self._on_batch(stats)
