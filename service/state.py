"""What the lifespan builds and the routes use: settings, metrics, the models, their batchers.

One :class:`ServiceState` per app, on ``app.state.service``. :meth:`ServiceState.start` loads and
checks every model, warms every graph up and starts one batcher per graph; only then is the
service ready. :meth:`ServiceState.stop` undoes that in reverse.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from starlette.concurrency import run_in_threadpool

from service import imaging
from service.batching import Batcher
from service.config import Settings
from service.metrics import Metrics
from service.registry import Model, Registry, load_registry

logger = logging.getLogger(__name__)


def batcher_name(model_id: str, graph: str) -> str:
    """The batcher (and metrics label) of one graph: ``<model id>/<graph role>``."""
    return f"{model_id}/{graph}"


class ServiceState:
    """Models, batchers and readiness of one app; see the module docstring."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ready = False
        self._registry: Registry | None = None
        self.batchers: dict[str, Batcher] = {}
        self._executor: ThreadPoolExecutor | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise RuntimeError("the models are not loaded yet")
        return self._registry

    def _load(self) -> Registry:
        s = self.settings
        return load_registry(s.models_dir, s.default_model, s.device, s.intra_op_threads, s.inter_op_threads)

    def _warm_up(self, registry: Registry) -> None:
        # Batch 1 initialises every kernel; a full batch as well would cost seconds of start-up on a
        # busy CPU for a one-off arena growth that the first large batch pays anyway.
        for model in registry:
            for graph in model.graphs.values():
                graph.warm_up((1,))
        imaging.warm_up()

    async def start(self, registry: Registry | None = None) -> None:
        """Load (unless given an already loaded registry), warm up, start batchers, become ready."""
        started = time.perf_counter()
        if registry is None:
            registry = await run_in_threadpool(self._load)
        await run_in_threadpool(self._warm_up, registry)
        s = self.settings
        graphs = [(model, role) for model in registry for role in model.graphs]
        # One thread per batcher worker: a graph never waits for a thread while another one runs.
        self._executor = ThreadPoolExecutor(
            max_workers=len(graphs) * s.batch_workers, thread_name_prefix="ae-infer"
        )
        for model, role in graphs:
            name = batcher_name(model.id, role)
            batcher = Batcher(
                model.graphs[role].run,
                name=name,
                max_batch_size=s.max_batch_size,
                max_wait_s=s.max_wait_ms / 1000.0,
                max_queue=s.max_queue,
                workers=s.batch_workers,
                executor=self._executor,
                on_batch=self.metrics.observe_batch,
            )
            batcher.start()
            self.batchers[name] = batcher
        self._registry = registry
        self.ready = True
        logger.info(
            "ready: %d models, %d graphs on %s in %.0f ms",
            len(registry),
            len(graphs),
            ", ".join(registry.providers),
            (time.perf_counter() - started) * 1000,
        )

    async def stop(self) -> None:
        """Stop taking work, fail whatever still waits, release the threads."""
        self.ready = False
        for batcher in self.batchers.values():
            await batcher.stop()
        self.batchers = {}
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def infer(self, model: Model, graph: str, rows: np.ndarray) -> np.ndarray:
        """Run ``rows`` (first axis = batch) through one graph of ``model``, batched with others."""
        return await self.batchers[batcher_name(model.id, graph)].submit(rows)
