"""What the lifespan builds and the routes use: settings, metrics, the models, their batchers.

One :class:`ServiceState` per app, on ``app.state.service``. :meth:`ServiceState.start` loads and
checks every model, warms every graph up and starts one batcher per graph; only then is the
service ready. :meth:`ServiceState.stop` undoes that in reverse.

:meth:`ServiceState.reload` loads ``models/`` again while the old models keep serving, and swaps
only when every new model has passed the contract checks and its warm-up; a bad directory leaves
the old models in place. A request that picked its model before the swap still runs on that model:
the old generation of batchers keeps running until every request it accepted has its answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from threadpoolctl import threadpool_limits

from contract.ood import Scores
from service import imaging
from service.batching import Batcher, BatcherClosed
from service.config import Settings
from service.intake import Intake
from service.metrics import Metrics
from service.registry import AUTOENCODER, Model, ModelError, Registry, load_registry

logger = logging.getLogger(__name__)


class NonFiniteOutput(Exception):
    """A graph answered NaN or infinity for a request's input: never sent, refused as that input's fault."""


def batcher_name(model_id: str, graph: str) -> str:
    """The batcher (and metrics label) of one graph: ``<model id>/<graph role>``."""
    return f"{model_id}/{graph}"


# How often a retired generation checks whether its last request has been answered, and how long
# it waits at most: a request still queued after that gets 503 + Retry-After (never a lost answer).
_DRAIN_POLL_S = 0.005
_DRAIN_TIMEOUT_S = 30.0


@dataclass
class _Generation:
    """One loaded ``models/``: the registry, a batcher per graph and the threads that run them."""

    number: int
    registry: Registry
    batchers: dict[str, Batcher]
    executor: ThreadPoolExecutor
    closed: bool = False
    _models: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        self._models = frozenset(id(model) for model in self.registry)

    def owns(self, model: Model) -> bool:
        return id(model) in self._models

    @property
    def idle(self) -> bool:
        return all(batcher.idle for batcher in self.batchers.values())

    async def close(self) -> None:
        self.closed = True
        for batcher in self.batchers.values():
            await batcher.stop()
        await run_in_threadpool(self.executor.shutdown, True)


@dataclass(frozen=True)
class ReloadResult:
    generation: int
    models: list[str]
    seconds: float


class ServiceState:
    """Models, batchers and readiness of one app; see the module docstring."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.intake = Intake(settings)
        self.ready = False
        self._current: _Generation | None = None
        self._retiring: list[_Generation] = []
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()  # background reloads and drains, kept referenced

    @property
    def registry(self) -> Registry:
        if self._current is None:
            raise RuntimeError("the models are not loaded yet")
        return self._current.registry

    @property
    def batchers(self) -> dict[str, Batcher]:
        """The batchers of the models being served now, by ``<model id>/<graph role>``."""
        return self._current.batchers if self._current is not None else {}

    @property
    def retiring(self) -> int:
        """Replaced generations still answering the requests they took before a reload."""
        return len(self._retiring)

    @property
    def generation(self) -> int:
        """1 after start-up, one more after each successful reload."""
        return self._current.number if self._current is not None else 0

    def _load(self, strict: bool = False) -> Registry:
        """Start-up skips a bad model directory (logged); a reload (``strict``) refuses it whole."""
        s = self.settings
        return load_registry(
            s.models_dir,
            s.default_denoise_model,
            s.default_code_model,
            s.device,
            s.intra_op_threads,
            s.inter_op_threads,
            strict=strict,
            scored=s.ood_scores,
        )

    def _warm_up(self, registry: Registry) -> None:
        # Batch 1 initialises every kernel; a full batch as well would cost seconds of start-up on a
        # busy CPU for a one-off arena growth that the first large batch pays anyway.
        for model in registry:
            for graph in model.graphs.values():
                graph.warm_up((1,))

    def _start_generation(self, number: int, registry: Registry) -> _Generation:
        s = self.settings
        graphs = [(model, role) for model in registry for role in model.graphs]
        # One thread per batcher worker: a graph never waits for a thread while another one runs.
        executor = ThreadPoolExecutor(
            max_workers=len(graphs) * s.batch_workers, thread_name_prefix="ae-infer"
        )
        batchers = {}
        for model, role in graphs:
            name = batcher_name(model.id, role)
            run, finish, inline = self._batch_functions(model, role)
            batcher = Batcher(
                run,
                name=name,
                max_batch_size=s.max_batch_size,
                max_wait_s=s.max_wait_ms / 1000.0,
                max_queue=s.max_queue,
                workers=s.batch_workers,
                executor=executor,
                on_batch=self.metrics.observe_batch,
                finish=finish,
                finish_inline=inline,
            )
            batcher.start()
            batchers[name] = batcher
        return _Generation(number, registry, batchers, executor)

    def _batch_functions(
        self, model: Model, role: str
    ) -> tuple[Callable[[np.ndarray], Any], Callable[[np.ndarray, Any], Any] | None, bool]:
        """What a graph's batcher runs in the inference thread, its ``finish`` hook, and whether
        that runs inline.

        For an autoencoder whose ``denoise`` score reads only the input and the output, a batch is
        scored as a whole (one request at a time it cost a fifth of /denoise's throughput), and the
        batch's result is ``(outputs, percentiles, in_distribution)``. With a scored graph
        (``model.scored``) onnxruntime computes the percentiles in the same call as the images, and
        ``finish`` flags and counts them inline on the event loop; without one, the numpy score runs
        on the event loop in a task of its own when the graph's call returns: in the inference
        thread it lengthened the busiest thread's work (0.70-0.77x at concurrency 32). The flags and
        the histogram are one step each per batch, not per request, and never in the inference
        thread, where the first numpy call after a graph's run costs many times its usual time.
        docs/benchmarks.md, "The score inside the graph" and "The score's Python, per batch", has
        the measurements."""
        graph = model.graphs[role]
        calibration = model.ood
        if (
            role != AUTOENCODER
            or calibration is None
            or not self.settings.ood_scores
            or "denoise" not in calibration.views
            or not calibration.needs("denoise") <= {"output"}
        ):
            return graph.run, None, False
        observe = self.metrics.ood_observer(model.id, "denoise")
        if model.scored:

            def flag(rows: np.ndarray, result: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
                outputs, percentile = result
                scores = calibration.percentile_scores("denoise", percentile)
                observe(scores.percentile)
                return outputs, scores.percentile, scores.in_distribution

            return graph.run_all, flag, True

        def score(rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            with np.errstate(all="ignore"):  # a non-finite output is refused after this (infer)
                scores = calibration.score("denoise", rows, outputs=outputs)
            observe(scores.percentile)
            return outputs, scores.percentile, scores.in_distribution

        return graph.run, score, False

    async def start(self, registry: Registry | None = None) -> None:
        """Load (unless given an already loaded registry), warm up, start batchers, become ready."""
        started = time.perf_counter()
        # numpy's BLAS (the out-of-distribution scores' small matrix products) to one thread for the
        # whole process: by default OpenBLAS starts one thread per core, whose spin-waits fight the
        # event loop and onnxruntime for the same cores; one round of a batch of 32 scores then took
        # 12x as long (bench/ood_cost.py, docs/benchmarks.md).
        threadpool_limits(limits=1, user_api="blas")
        if registry is None:
            registry = await run_in_threadpool(self._load)
        await run_in_threadpool(self._warm_up, registry)
        self._current = self._start_generation(1, registry)
        self.ready = True
        # Not needed to serve: the usual upload decodes without Pillow (service/png.py). A request
        # that needs Pillow meanwhile waits for its plugins to register, as it would have anyway.
        self._spawn(run_in_threadpool(imaging.warm_up))
        logger.info(
            "ready: %d models, %d graphs on %s in %.0f ms",
            len(registry),
            len(self._current.batchers),
            ", ".join(registry.providers),
            (time.perf_counter() - started) * 1000,
        )

    async def reload(self) -> ReloadResult:
        """Load ``models/`` again and serve it; :class:`ModelError` leaves the old models serving.

        Reloads run one at a time. Requests keep being served throughout: by the old models until
        the swap, by the new ones after it, and those already holding an old model finish on it.
        """
        async with self._reload_lock:
            if self._current is None:
                raise RuntimeError("reload before start")
            started = time.perf_counter()
            # A bad directory raises ModelError naming it: nothing is swapped, the old set serves on.
            registry = await run_in_threadpool(self._load, True)
            await run_in_threadpool(self._warm_up, registry)
            old, self._current = self._current, self._start_generation(self._current.number + 1, registry)
            self._retiring.append(old)
            self._spawn(self._retire(old))
            result = ReloadResult(self._current.number, registry.ids, time.perf_counter() - started)
            logger.info(
                "reloaded models (generation %d): %s in %.0f ms",
                result.generation,
                ", ".join(result.models),
                result.seconds * 1000,
            )
            return result

    def request_reload(self) -> None:
        """Reload in the background (SIGHUP); the outcome goes to the log, as nobody waits for it."""

        async def reload_and_log() -> None:
            try:
                await self.reload()
            except ModelError as exc:
                logger.error("reload failed, still serving generation %d: %s", self.generation, exc)

        self._spawn(reload_and_log())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retire(self, old: _Generation) -> None:
        """Close a replaced generation once every request it accepted has been answered."""
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while not old.idle and time.monotonic() < deadline:
            await asyncio.sleep(_DRAIN_POLL_S)
        # No await between the idle check and closing: no request can slip into the old queues.
        old.closed = True
        self._retiring.remove(old)
        await old.close()
        logger.info("generation %d retired", old.number)

    async def stop(self) -> None:
        """Stop taking work, fail whatever still waits, release the threads."""
        self.ready = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        generations = [*self._retiring, *([self._current] if self._current is not None else [])]
        self._retiring = []
        for generation in generations:
            await generation.close()
        await run_in_threadpool(self.intake.close)

    def _generation_for(self, model: Model) -> tuple[_Generation, Model]:
        """The open generation that holds ``model``, or its same-shaped successor in the current one."""
        current = self._current
        if current is None:
            raise BatcherClosed("the models are not loaded")
        for generation in (current, *self._retiring):
            if not generation.closed and generation.owns(model):
                return generation, model
        # Its generation closed while the request was being read: use what now serves that id, if
        # it takes the same inputs (raises UnknownModel, a 404, if a reload removed the model).
        successor = current.registry.get(model.id)
        if successor.code_shape != model.code_shape or set(successor.graphs) != set(model.graphs):
            raise BatcherClosed(
                f"model {model.id!r} was reloaded with a different shape while the request waited"
            )
        return current, successor

    async def infer(self, model: Model, graph: str, rows: np.ndarray) -> np.ndarray:
        """Run ``rows`` (first axis = batch) through one graph of ``model``, batched with others."""
        return (await self.infer_scored(model, graph, rows))[0]

    async def infer_scored(
        self, model: Model, graph: str, rows: np.ndarray
    ) -> tuple[np.ndarray, Scores | None]:
        """:meth:`infer`, with the ``denoise`` scores when the batch computed them (else None; the
        batch has counted them in the ``ae_ood_percentile`` histogram)."""
        generation, model = self._generation_for(model)
        result = await generation.batchers[batcher_name(model.id, graph)].submit(rows)
        scores = None
        if isinstance(result, tuple):  # (outputs, percentiles, in_distribution): _batch_functions
            outputs, percentile, flags = result
            assert model.ood is not None
            scores = Scores(percentile, flags, model.ood.threshold("denoise"))
        else:
            outputs = result
        if not np.isfinite(outputs).all():
            # The inputs were finite and in range, yet the graph overflowed: no NaN or infinity
            # ever reaches a reply (JSON cannot carry one, and a PNG would hide it as black).
            raise NonFiniteOutput(
                f"model {model.id} ({graph}) gives non-finite values for this input; "
                "send values within the range it was trained on (GET /models/" + model.id + ")"
            )
        return outputs, scores
