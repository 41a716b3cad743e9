"""The service image end to end: build it, start it with docker compose, call it from the host.

The answers are checked against the clean digit and against the same service run in-process on
the same model files, so the container can neither serve other models nor transform differently.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.config import Settings
from service.main import create_app
from tests.e2e.conftest import ROOT, TEST_IMAGE, UP_TIMEOUT_S, ComposeUp, Stack
from training import protocol
from training.data import load_mnist5k

# The first test also waits for the image build (minutes on a cold, busy machine), which the
# suite-wide per-test timeout does not allow for.
pytestmark = [pytest.mark.container, pytest.mark.timeout(UP_TIMEOUT_S + 300)]

MODEL = "mnist-denoise"  # the service's default for /encode and /decode (AE_DEFAULT_CODE_MODEL)
NOISE = 0.3
IMAGE_LIMIT_BYTES = 400_000_000  # the deployment target: runtime image under 400 MB


def _png(pixels: np.ndarray) -> bytes:
    """float [28, 28] in [0, 1] → 8-bit grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    """8-bit grayscale PNG → float [h, w] in [0, 1]."""
    image = Image.open(io.BytesIO(png))
    assert image.mode == "L"
    return np.asarray(image, dtype=np.float32) / 255.0


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


@pytest.fixture(scope="module")
def digit() -> tuple[np.ndarray, np.ndarray]:
    """A real test-split digit, clean and with the protocol's noise at s=0.3 (quantised as sent)."""
    clean = load_mnist5k().test_x[0]
    noisy = protocol.noisy(clean, NOISE, 0)
    return clean, _pixels(_png(noisy))


@pytest.fixture(scope="module")
def api(compose_up: ComposeUp) -> Stack:
    return compose_up(services=["api"])


@pytest.fixture(scope="module")
def api_url(api: Stack) -> str:
    return api.url("api", 8000)


@pytest.fixture(scope="module")
def in_process() -> Iterator[TestClient]:
    """The same service in this process, on the checkout's models."""
    with TestClient(create_app(Settings(models_dir=ROOT / "models"))) as client:
        yield client


def _card(model: str) -> dict[str, object]:
    card: dict[str, object] = json.loads((ROOT / "models" / model / "card.json").read_text())
    return card


def test_container_is_healthy_and_ready(api: Stack, api_url: str) -> None:
    container = api.run("ps", "-q", "api").stdout.strip()
    health = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Health.Status}}", container],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert health == "healthy"
    assert httpx.get(f"{api_url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{api_url}/readyz", timeout=10).status_code == 200


def test_image_ships_the_demo_page_and_its_files(api_url: str) -> None:
    page = httpx.get(f"{api_url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for name in ("demo.js", "demo.css"):
        asset = httpx.get(f"{api_url}/static/{name}", timeout=10)
        assert asset.status_code == 200, name
        assert asset.content == (ROOT / "service" / "static" / name).read_bytes()


def test_denoise_from_host_matches_in_process_service(
    api_url: str, in_process: TestClient, digit: tuple[np.ndarray, np.ndarray]
) -> None:
    _, noisy = digit
    body = _png(noisy)
    reply = httpx.post(f"{api_url}/denoise", files={"file": ("digit.png", body, "image/png")}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/png"
    served = _pixels(reply.content)
    assert served.shape == (28, 28)

    local = in_process.post("/denoise", files={"file": ("digit.png", body, "image/png")})
    assert local.status_code == 200, local.text
    # Same model files, same arithmetic: at most one grey level apart after PNG quantisation.
    assert np.abs(served - _pixels(local.content)).max() <= 1 / 255 + 1e-6


def test_denoise_from_host_brings_a_noisy_digit_closer_to_the_clean_one(
    api_url: str, digit: tuple[np.ndarray, np.ndarray]
) -> None:
    clean, noisy = digit
    reply = httpx.post(
        f"{api_url}/denoise", files={"file": ("digit.png", _png(noisy), "image/png")}, timeout=30
    )
    assert reply.status_code == 200, reply.text
    denoised = _pixels(reply.content)
    # The shipped model leaves about a ninth of the noisy error on this digit; half is a loose bound
    # that a model which does not denoise (an untrained one, an identity) fails.
    assert _mse(denoised, clean) < 0.5 * _mse(noisy, clean)


def test_encode_from_host_returns_the_cards_code_shape(
    api_url: str, in_process: TestClient, digit: tuple[np.ndarray, np.ndarray]
) -> None:
    clean, _ = digit
    body = _png(clean)
    reply = httpx.post(f"{api_url}/encode", content=body, headers={"content-type": "image/png"}, timeout=30)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    code_shape = _card(MODEL)["code_shape"]
    assert isinstance(code_shape, list)
    assert answer["model"] == MODEL
    assert answer["shape"] == code_shape
    code = np.asarray(answer["code"], dtype=np.float64)
    assert code.shape == (math.prod(code_shape),)
    assert np.isfinite(code).all()

    local = in_process.post("/encode", content=body, headers={"content-type": "image/png"})
    assert local.status_code == 200, local.text
    np.testing.assert_allclose(code, np.asarray(local.json()["code"]), rtol=1e-4, atol=1e-5)


def test_service_runs_as_non_root_without_torch_or_compiler(api: Stack) -> None:
    probe = (
        "import importlib.util, json, os, shutil; "
        "print(json.dumps({'uid': os.getuid(), 'torch': importlib.util.find_spec('torch') is not None, "
        "'cc': [c for c in ('cc', 'gcc', 'clang') if shutil.which(c)]}))"
    )
    found = json.loads(api.run("exec", "-T", "api", "python", "-c", probe).stdout)
    assert found["uid"] != 0
    assert found["torch"] is False
    assert found["cc"] == []


def test_runtime_image_is_under_400_mb(api: Stack) -> None:
    size = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", TEST_IMAGE],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert int(size) < IMAGE_LIMIT_BYTES, f"{TEST_IMAGE} is {int(size) / 1e6:.0f} MB"


def test_scale_profile_spreads_requests_over_replicas_behind_nginx(
    compose_up: ComposeUp, digit: tuple[np.ndarray, np.ndarray]
) -> None:
    stack = compose_up(services=["lb"], profiles=["scale"], AE_REPLICAS="2", AE_LB_PUBLISH="127.0.0.1:")
    url = stack.url("lb", 8080)
    _, noisy = digit
    body = _png(noisy)
    for _ in range(8):
        reply = httpx.post(f"{url}/denoise", files={"file": ("digit.png", body, "image/png")}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "image/png"
    # nginx logs the replica that answered each request (log_format `upstream` in nginx.conf).
    logs = stack.run("logs", "--no-color", "lb").stdout
    upstreams = {
        part.removeprefix("upstream=")
        for line in logs.splitlines()
        if "POST /denoise" in line
        for part in line.split()
        if part.startswith("upstream=")
    }
    assert len(upstreams) == 2, logs[-2000:]


def test_models_volume_override_serves_the_mounted_models(
    compose_up: ComposeUp, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # One model only, so /models tells the mounted folder from the baked-in one.
    mounted: Path = tmp_path_factory.mktemp("models")
    source = ROOT / "models" / MODEL
    (mounted / MODEL).mkdir()
    for item in source.iterdir():
        if item.is_file():
            (mounted / MODEL / item.name).write_bytes(item.read_bytes())
    mounted.chmod(0o755)
    (mounted / MODEL).chmod(0o755)
    stack = compose_up(
        services=["api"],
        AE_MODELS_HOST_DIR=str(mounted),
        # The /denoise default (a unet) is not among the mounted models: name the one that is.
        AE_DEFAULT_DENOISE_MODEL=MODEL,
        extra_files=["deploy/compose/models-volume.yml"],
    )
    listed = httpx.get(f"{stack.url('api', 8000)}/models", timeout=10).json()
    assert [card["id"] for card in listed] == [MODEL]
