"""Prometheus metrics, in a registry owned by one app (so tests can build several apps)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.batching import BatchStats

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Sub-millisecond to seconds: a single 28×28 inference is ~0.1 ms, a saturated queue ~1 s.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Percentiles of validation images: the bulk, the tail where thresholds sit, and past all of them.
_OOD_BUCKETS = (50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99)


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
        self.ood_percentile = Histogram(
            "ae_ood_percentile",
            "Out-of-distribution score of each image a model answered: its percentile among the "
            "model's validation images (100: past all of them), by model and view (denoise, encode).",
            ["model", "view"],
            buckets=_OOD_BUCKETS,
            registry=r,
        )
        # (model, view) → its labelled histogram: ``labels()`` costs half of an observation.
        self._ood_children: dict[tuple[str, str], Any] = {}
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

    def observe_ood(self, model_id: str, view: str, percentiles: Iterable[float]) -> None:
        """One observation per scored image."""
        child = self._ood_children.get((model_id, view))
        if child is None:
            child = self._ood_children[(model_id, view)] = self.ood_percentile.labels(model_id, view)
        for p in percentiles:
            child.observe(float(p))

    def render(self) -> bytes:
        return generate_latest(self.registry)
