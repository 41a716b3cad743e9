"""The request core (service/core.py) through the real app: ids, the log line, limits, errors, CORS."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import png_bytes

PNG = {"content-type": "image/png"}
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def limited(app_factory: Callable[..., Any]) -> Iterator[TestClient]:
    with TestClient(app_factory(max_upload_bytes=LIMIT, cors_origins=["https://demo.example"])) as c:
        yield c


def test_request_id_is_generated_and_echoed(limited: TestClient) -> None:
    ids = [limited.get("/healthz").headers["x-request-id"] for _ in range(50)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # 32 hex digits, like a UUID
    assert len(set(ids)) == len(ids)


def test_request_ids_differ_between_app_instances(app_factory: Callable[..., Any]) -> None:
    with TestClient(app_factory()) as a, TestClient(app_factory()) as b:
        assert a.get("/healthz").headers["x-request-id"] != b.get("/healthz").headers["x-request-id"]


def test_callers_request_id_is_kept_when_sane(limited: TestClient) -> None:
    assert limited.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    replaced = limited.get("/healthz", headers={"x-request-id": "bad id\twith spaces"}).headers[
        "x-request-id"
    ]
    assert replaced != "bad id\twith spaces" and len(replaced) == 32


def test_one_structured_log_line_per_request(
    limited: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    access = logging.getLogger("service.access")
    access.addHandler(handler)
    try:
        r = limited.post(
            "/denoise", content=png_bytes(digits[1][0]), headers={**PNG, "x-request-id": "req-42"}
        )
    finally:
        access.removeHandler(handler)
    assert r.status_code == 200
    (record,) = records
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["request_id"] == "req-42" and fields["route"] == "/denoise" and fields["status"] == 200
    assert fields["method"] == "POST" and fields["latency_ms"] > 0
    from service.logs import JsonFormatter

    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-42" and line["level"] == "info"


def test_declared_body_over_the_limit_is_413_before_reading(limited: TestClient) -> None:
    r = limited.post("/denoise", content=b"\0" * (LIMIT + 1), headers=PNG)
    assert r.status_code == 413
    assert r.json() == {"detail": f"request body too large: the limit is {LIMIT} bytes (AE_MAX_UPLOAD_BYTES)"}


def test_streamed_body_over_the_limit_is_413_while_reading(limited: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(LIMIT // 1024 + 8):
            yield b"\0" * 1024

    r = limited.post("/denoise", content=chunks(), headers=PNG)
    assert r.status_code == 413 and "AE_MAX_UPLOAD_BYTES" in r.json()["detail"]


def test_multipart_over_the_limit_is_413(limited: TestClient) -> None:
    r = limited.post(
        "/denoise/batch", files=[("files", (f"{i}", b"\0" * 20_000, "image/png")) for i in range(4)]
    )
    assert r.status_code == 413


def test_streamed_body_under_the_limit_is_served(
    limited: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    data = png_bytes(digits[1][0])
    r = limited.post("/denoise", content=iter([data[:100], data[100:]]), headers=PNG)
    assert r.status_code == 200


def test_cors_allows_the_configured_origin_only(limited: TestClient) -> None:
    preflight = {"origin": "https://demo.example", "access-control-request-method": "POST"}
    r = limited.options("/denoise", headers={**preflight, "access-control-request-headers": "x-api-key"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://demo.example"
    other = limited.options("/denoise", headers={**preflight, "origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers
    simple = limited.get("/healthz", headers={"origin": "https://demo.example"})
    assert simple.headers["access-control-allow-origin"] == "https://demo.example"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


def test_no_cors_headers_without_configured_origins(client: TestClient) -> None:
    r = client.get("/healthz", headers={"origin": "https://demo.example"})
    assert "access-control-allow-origin" not in r.headers


def test_every_refusal_of_the_core_is_detail_on_rest_and_error_on_v2(limited: TestClient) -> None:
    big = {"content-length": str(LIMIT + 1), "content-type": "application/octet-stream"}
    rest = limited.post("/denoise", content=b"x" * (LIMIT + 1), headers=big)
    v2 = limited.post("/v2/models/mnist-s2d/infer", content=b"x" * (LIMIT + 1), headers=big)
    assert rest.status_code == v2.status_code == 413
    assert set(rest.json()) == {"detail"} and "AE_MAX_UPLOAD_BYTES" in rest.json()["detail"]
    assert set(v2.json()) == {"error"} and "AE_MAX_UPLOAD_BYTES" in v2.json()["error"]


def test_api_key_refusals_follow_the_protocol_of_the_route(app_factory: Callable[..., Any]) -> None:
    with TestClient(app_factory(api_key="s3cret")) as c:
        rest = c.post("/denoise", content=b"x", headers=PNG)
        v2 = c.post("/v2/models/mnist-s2d/infer", json={"inputs": []})
        v2_meta = c.get("/v2/models/mnist-s2d")
        codes = c.post("/decode", json={"code": [0.0]})
    assert rest.status_code == v2.status_code == v2_meta.status_code == codes.status_code == 401
    assert set(rest.json()) == set(codes.json()) == {"detail"}
    assert set(v2.json()) == set(v2_meta.json()) == {"error"}
    assert rest.headers["www-authenticate"] == "Bearer"


def test_a_cold_route_body_is_read_under_the_same_limits(limited: TestClient) -> None:
    # /admin/reload takes no body, but a client may send one: still capped by AE_MAX_UPLOAD_BYTES.
    r = limited.post("/admin/reload", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413 and r.headers["connection"] == "close"


def test_served_by_header_names_the_replica_on_every_response(app_factory: Callable[..., Any]) -> None:
    with TestClient(app_factory(served_by="replica-7@node-a")) as c:
        for response in (c.get("/healthz"), c.get("/nope"), c.post("/denoise", content=b"x", headers=PNG)):
            assert response.headers["x-served-by"] == "replica-7@node-a", response.status_code


def test_served_by_header_is_absent_unless_set(limited: TestClient) -> None:
    assert "x-served-by" not in limited.get("/healthz").headers
