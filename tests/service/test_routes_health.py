"""/healthz and /readyz: alive always, ready only once every model is loaded and warmed up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from service.main import create_app
from tests.service.conftest import make_settings


def test_healthz_is_200(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_the_providers_once_ready(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["provider"] == "CPUExecutionProvider"
    assert body["providers"] == ["CPUExecutionProvider"]
    assert set(body["models"]) == {m["id"] for m in client.get("/models").json()}


def test_before_the_lifespan_readyz_is_503_and_healthz_200(app_factory: Callable[..., Any]) -> None:
    cold = TestClient(app_factory())  # no `with`: the lifespan has not run, nothing is loaded
    assert cold.get("/healthz").status_code == 200
    r = cold.get("/readyz")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "not ready" in r.json()["detail"]


def test_work_endpoints_are_503_until_ready(app_factory: Callable[..., Any]) -> None:
    cold = TestClient(app_factory())
    r = cold.post("/denoise", content=b"\x89PNG", headers={"content-type": "image/png"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert cold.get("/models").status_code == 503


def test_after_shutdown_readyz_is_503_again(tmp_path: Any, models_dir: Any) -> None:
    app = create_app(make_settings(models_dir))
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 200
    assert TestClient(app).get("/readyz").status_code == 503
