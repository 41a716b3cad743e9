"""Prometheus metrics, in a registry owned by one app (so tests can build several apps)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from service.batching import BatchStats

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Sub-millisecond to seconds: a single 28×28 inference is ~0.1 ms, a saturated queue ~1 s.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Percentiles of validation images: the bulk, the tail where thresholds sit, and past all of them.
_OOD_BUCKETS = (50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99)


# Batches a series holds before it counts them; a scrape counts what is held at once.
_FOLD_AT = 256


class _Series:
    """One label set: counts per bucket (the last one past every bound), the sum, and the
    batches observed but not counted yet."""

    __slots__ = ("counts", "pending", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0
        self.pending: deque[np.ndarray] = deque()


class BatchHistogram(Collector):
    """A Prometheus histogram that takes a whole batch of values in one call.

    prometheus_client's Histogram takes one value per call (a lock, and a walk through the buckets
    in Python), so a batch of 32 scores cost 32 calls on the event loop. Here observing a batch
    only keeps it (one append): the batches are counted together, one bucket search for all of
    them, when a scrape reads the histogram or when a series holds ``_FOLD_AT`` of them, which
    bounds what is held. At a batch of one the counting was a fifth of what the score cost a
    request (docs/benchmarks.md, "The score's Python, per batch"). The arrays are kept as they are
    given, so a caller hands over arrays it does not change afterwards. It is exposed as the same
    histogram family (``_bucket`` with ``le``, ``_count``, ``_sum``), read by a custom collector,
    prometheus_client's documented way to export what the process counts itself. A NaN (the score
    of an output that overflowed, which is refused, not answered) is not counted: it would turn
    the sum into NaN for good."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]):
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = [float(b) for b in buckets]
        self._bounds = np.asarray(self.bounds)
        self._les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series] = {}
        self._observers: dict[tuple[str, ...], Callable[[np.ndarray], None]] = {}

    def observer(self, *labels: str) -> Callable[[np.ndarray], None]:
        """``observe(values)`` for one label set, the same one each time it is asked for (the
        series is created with the first, with zero counts)."""
        found = self._observers.get(labels)
        if found is not None:
            return found
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, got {labels}")
        with self._lock:
            series = self._series.setdefault(labels, _Series(len(self.bounds) + 1))
        pending = series.pending

        def observe(values: np.ndarray) -> None:
            pending.append(values)  # deque.append: atomic, no lock
            if len(pending) >= _FOLD_AT:
                self._fold(series)

        return self._observers.setdefault(labels, observe)

    def _fold(self, series: _Series) -> None:
        """Count the batches a series holds. Each is taken off with ``popleft``, so a batch
        appended meanwhile by another thread waits for the next fold rather than being lost."""
        with self._lock:
            batches = []
            while series.pending:
                batches.append(np.ravel(series.pending.popleft()))
            if not batches:
                return
            values = np.concatenate(batches)
            if np.isnan(values).any():
                values = values[~np.isnan(values)]
            # side="left": the first bound >= v, as Prometheus's le ("less than or equal")
            where = np.searchsorted(self._bounds, values, side="left")
            for i, n in enumerate(np.bincount(where, minlength=len(series.counts)).tolist()):
                series.counts[i] += n
            series.total += float(np.sum(values, dtype=np.float64))

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            every = list(self._series.items())
        for _, series in every:
            self._fold(series)
        with self._lock:
            snapshot = [(labels, list(series.counts), series.total) for labels, series in every]
        for labels, counts, total in snapshot:
            cumulative = np.cumsum(counts).tolist()
            family.add_metric(list(labels), list(zip(self._les, cumulative, strict=True)), total)
        yield family


class Metrics:
    """Every metric the service exports; one instance per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_latency = Histogram(
            "ae_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template and status.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("ae_http_requests_in_flight", "Requests being handled right now.", registry=r)
        self.errors = Counter(
            "ae_http_errors_total",
            "Responses with a 4xx or 5xx status, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.rejections = Counter(
            "ae_rejections_total",
            "Requests refused before inference: queue_full, not_ready, body_too_large, unauthorized, "
            "too_many_requests, body_timeout.",
            ["reason"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "ae_queue_wait_seconds",
            "Time a request waited in the batcher before its batch ran, by graph.",
            ["graph"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "ae_batch_size",
            "Rows per inference call, by graph.",
            ["graph"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inference_time = Histogram(
            "ae_inference_duration_seconds",
            "Time of one onnxruntime call on one batch, by graph.",
            ["graph"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ood_percentile = BatchHistogram(
            "ae_ood_percentile",
            "Out-of-distribution score of each image a model scored: its percentile among the "
            "model's validation images (100: past all of them), by model and view (denoise, encode).",
            ["model", "view"],
            buckets=_OOD_BUCKETS,
        )
        r.register(self.ood_percentile)
        self.queue_depth = Gauge(
            "ae_queue_depth", "Requests waiting in the batcher, by graph.", ["graph"], registry=r
        )

    def observe_batch(self, stats: BatchStats) -> None:
        """Batcher callback: one call of one graph."""
        self.batch_size.labels(stats.name).observe(stats.rows)
        self.inference_time.labels(stats.name).observe(stats.run_seconds)
        wait = self.queue_wait.labels(stats.name)
        for seconds in stats.queue_waits:
            wait.observe(seconds)

    def ood_observer(self, model_id: str, view: str) -> Callable[[np.ndarray], None]:
        """What counts a batch's out-of-distribution percentiles, one per scored image (thread-safe;
        a scored batch is counted where its result arrives, service/state.py)."""
        return self.ood_percentile.observer(model_id, view)

    def render(self) -> bytes:
        return generate_latest(self.registry)
