"""GET /metrics: Prometheus text that moves with the traffic."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import png_bytes


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def _get(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_after_requests(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    before = _samples(client)
    for x in digits[1][:3]:
        assert (
            client.post("/denoise", content=png_bytes(x), headers={"content-type": "image/png"}).status_code
            == 200
        )
    assert (
        client.post("/denoise?model=nope", content=b"x", headers={"content-type": "image/png"}).status_code
        == 404
    )
    after = _samples(client)

    def delta(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    ok = {"method": "POST", "route": "/denoise", "status": "200"}
    assert delta("ae_http_request_duration_seconds_count", **ok) == 3
    assert delta("ae_http_request_duration_seconds_sum", **ok) > 0
    assert delta("ae_http_errors_total", route="/denoise", status="404") == 1
    graph = {"graph": "mnist-s2d/autoencoder"}  # the /denoise default (AE_DEFAULT_DENOISE_MODEL)
    assert delta("ae_batch_size_sum", **graph) == 3  # three rows went through the graph
    assert delta("ae_queue_wait_seconds_count", **graph) == 3
    assert delta("ae_inference_duration_seconds_count", **graph) >= 1
    assert ("ae_http_requests_in_flight", ()) in after
    assert _get(after, "ae_queue_depth", **graph) == 0


def test_rejections_are_counted_by_reason(client: TestClient) -> None:
    before = _samples(client)
    client.post("/denoise", content=b"x" * (3 * 1024 * 1024), headers={"content-type": "image/png"})
    after = _samples(client)
    assert (
        _get(after, "ae_rejections_total", reason="body_too_large")
        - _get(before, "ae_rejections_total", reason="body_too_large")
        == 1
    )
