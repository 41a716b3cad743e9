"""The optional API key: 401 without it on the work endpoints, probes and metrics stay open."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import png_bytes

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def keyed(app_factory: Callable[..., Any]) -> Iterator[TestClient]:
    with TestClient(app_factory(api_key=KEY)) as c:
        yield c


@pytest.fixture(scope="module")
def image(digits: tuple[np.ndarray, np.ndarray]) -> bytes:
    return png_bytes(digits[1][0])


def _denoise(c: TestClient, image: bytes, **headers: str) -> Any:
    return c.post("/denoise", content=image, headers={"content-type": "image/png", **headers})


def test_missing_key_is_401(keyed: TestClient, image: bytes) -> None:
    r = _denoise(keyed, image)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["detail"].startswith("missing API key")


def test_wrong_key_is_401(keyed: TestClient, image: bytes) -> None:
    r = _denoise(keyed, image, **{"x-api-key": "guess"})
    assert r.status_code == 401 and r.json()["detail"].startswith("wrong API key")
    assert _denoise(keyed, image, authorization="Bearer guess").status_code == 401
    assert _denoise(keyed, image, authorization=f"Basic {KEY}").status_code == 401


def test_key_in_either_header_is_accepted(keyed: TestClient, image: bytes) -> None:
    assert _denoise(keyed, image, **{"x-api-key": KEY}).status_code == 200
    assert _denoise(keyed, image, authorization=f"Bearer {KEY}").status_code == 200


def test_every_work_endpoint_needs_the_key(keyed: TestClient) -> None:
    assert keyed.get("/models").status_code == 401
    assert keyed.get("/models/mnist-denoise").status_code == 401
    assert keyed.post("/decode", json={"code": [0.0] * 256}).status_code == 401
    assert keyed.post("/encode/batch").status_code == 401
    for path in ("/denoise/batch", "/encode", "/encode?resize=maybe", "/denoise?model=nope"):
        assert keyed.post(path, content=b"x", headers={"content-type": "image/png"}).status_code == 401, path


def test_probes_and_metrics_need_no_key(keyed: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert keyed.get(path).status_code == 200, path


def test_no_key_configured_means_no_check(client: TestClient, image: bytes) -> None:
    assert _denoise(client, image).status_code == 200
