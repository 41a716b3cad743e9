"""Model reload (POST /admin/reload, SIGHUP) under load: no request dropped, a bad directory changes nothing.

A running ``ae-serve`` (with an API key) on a private copy of two shipped models keeps getting
/denoise and /encode requests from concurrent clients while the models directory changes under it
and reloads are asked for. Every one of those requests must get a 200.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from service.batching import BatcherClosed
from service.config import Settings
from service.metrics import Metrics
from service.registry import UnknownModel
from service.state import ServiceState
from tests.hardening.conftest import LiveServer, live_server

# Each test here bounds its own wait: a hang fails it within 240 s, not at the suite-wide 600 s.
pytestmark = pytest.mark.timeout(240)

KEY = "reload-test-key"
AUTH = {"X-API-Key": KEY}
KEPT = ("mnist-denoise", "mnist-s2d")


def _clone_model(models: Path, source: str, new_id: str) -> None:
    """A valid copy of ``source`` under another id: card, ONNX metadata and checksums all agree."""
    target = models / new_id
    shutil.copytree(models / source, target, ignore=shutil.ignore_patterns("report"))
    card = json.loads((target / "card.json").read_text())
    card["id"] = new_id
    for filename in card["graphs"].values():
        graph = onnx.load(target / filename)
        for prop in graph.metadata_props:
            if prop.key == "model_id":
                prop.value = new_id
        onnx.save(graph, target / filename)
        card["sha256"][filename] = hashlib.sha256((target / filename).read_bytes()).hexdigest()
    (target / "card.json").write_text(json.dumps(card))


@pytest.fixture(scope="module")
def models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reload") / "models"
    for model_id in KEPT:
        shutil.copytree(models_dir / model_id, root / model_id, ignore=shutil.ignore_patterns("report"))
    return root


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(models, tmp_path_factory.mktemp("reload-logs"), AE_API_KEY=KEY) as live:
        yield live


def _model_ids(server: LiveServer) -> list[str]:
    response = httpx.get(f"{server.url}/models", headers=AUTH, timeout=30)
    assert response.status_code == 200
    return sorted(card["id"] for card in response.json())


async def _under_load(
    server: LiveServer,
    image: bytes,
    action: Callable[[httpx.AsyncClient], Awaitable[None]],
    clients: int = 12,
) -> list[int]:
    """Run ``action`` while ``clients`` loops send requests; return every status they got."""
    statuses: list[int] = []
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60, limits=limits) as client:

        async def loop(i: int) -> None:
            path = ("/denoise?model=mnist-denoise", "/encode", "/denoise?model=mnist-s2d")[i % 3]
            while not done.is_set():
                response = await client.post(path, files={"file": ("d.png", image, "image/png")})
                statuses.append(response.status_code)

        workers = [asyncio.create_task(loop(i)) for i in range(clients)]
        try:
            await asyncio.sleep(0.3)  # the load is running before the first reload
            await action(client)
            await asyncio.sleep(0.3)  # and keeps running after the last
        finally:
            done.set()
            await asyncio.gather(*workers)
    return statuses


async def _reload(client: httpx.AsyncClient, expect: int = 200) -> dict[str, object]:
    response = await client.post("/admin/reload")
    assert response.status_code == expect, response.text
    body: dict[str, object] = response.json()
    return body


def test_reloads_under_load_drop_no_request(server: LiveServer, models: Path, digit_png: bytes) -> None:
    seen: list[dict[str, object]] = []

    async def reloads(client: httpx.AsyncClient) -> None:
        _clone_model(models, "mnist-denoise", "mnist-extra")
        seen.append(await _reload(client))
        shutil.rmtree(models / "mnist-extra")
        seen.append(await _reload(client))
        seen.append(await _reload(client))

    statuses = asyncio.run(_under_load(server, digit_png, reloads))
    assert len(statuses) > 30, "too little load to prove anything"
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert seen[0]["models"] == sorted([*KEPT, "mnist-extra"])
    assert seen[1]["models"] == seen[2]["models"] == sorted(KEPT)
    generations = [int(str(body["generation"])) for body in seen]
    assert generations == list(range(generations[0], generations[0] + 3))
    assert _model_ids(server) == sorted(KEPT)


def test_bad_model_dir_keeps_the_old_models_serving(
    server: LiveServer, models: Path, digit_png: bytes
) -> None:
    graph = models / "mnist-s2d" / "autoencoder.onnx"
    original = graph.read_bytes()
    details: list[str] = []

    async def broken_reload(client: httpx.AsyncClient) -> None:
        graph.write_bytes(original[: len(original) // 2])
        try:
            details.append(str((await _reload(client, expect=422))["detail"]))
        finally:
            graph.write_bytes(original)

    statuses = asyncio.run(_under_load(server, digit_png, broken_reload))
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert str(graph) in details[0] and "still serving the previous models" in details[0], details
    assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200
    assert _model_ids(server) == sorted(KEPT)


def test_sighup_reloads_and_survives_a_bad_dir(server: LiveServer, models: Path, digit_png: bytes) -> None:
    _clone_model(models, "mnist-s2d", "mnist-sighup")
    try:
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while "mnist-sighup" not in _model_ids(server):
            assert time.monotonic() < deadline, "SIGHUP did not reload the models"
            time.sleep(0.1)
    finally:
        shutil.rmtree(models / "mnist-sighup")
    (models / "mnist-denoise" / "card.json").rename(models / "mnist-denoise" / "card.json.off")
    try:
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while "reload failed" not in server.output():
            assert time.monotonic() < deadline, f"no failed reload in the log:\n{server.output()}"
            time.sleep(0.1)
    finally:
        (models / "mnist-denoise" / "card.json.off").rename(models / "mnist-denoise" / "card.json")
    assert server.proc.poll() is None
    assert "mnist-denoise/card.json: missing" in server.output()
    response = httpx.post(
        f"{server.url}/denoise", headers=AUTH, files={"file": ("d.png", digit_png, "image/png")}, timeout=30
    )
    assert response.status_code == 200 and "mnist-sighup" in _model_ids(server)


def test_reload_needs_the_api_key(server: LiveServer) -> None:
    assert httpx.post(f"{server.url}/admin/reload", timeout=30).status_code == 401
    wrong = {"X-API-Key": "wrong"}
    assert httpx.post(f"{server.url}/admin/reload", headers=wrong, timeout=30).status_code == 401


def _private_copy(models_dir: Path, tmp_path: Path, *ids: str) -> Path:
    root = tmp_path / "models"
    for model_id in ids:
        shutil.copytree(models_dir / model_id, root / model_id, ignore=shutil.ignore_patterns("report"))
    return root


def test_a_request_holding_a_replaced_model_still_gets_its_answer(models_dir: Path, tmp_path: Path) -> None:
    # In process, to hold a model across the swap deterministically: the old generation serves it
    # while it drains, and once it has closed, the same-shaped successor does.
    root = _private_copy(models_dir, tmp_path, "mnist-denoise")

    async def scenario() -> None:
        # The /denoise default must stay loaded; these scenarios replace or remove other models.
        settings = Settings(models_dir=root, device="cpu", default_denoise_model="mnist-denoise")
        state = ServiceState(settings, Metrics())
        await state.start()
        try:
            old = state.registry.get("mnist-denoise")
            rows = np.zeros((2, 1, 28, 28), dtype=np.float32)
            expected = await state.infer(old, "autoencoder", rows)
            pending = asyncio.ensure_future(state.infer(old, "autoencoder", rows))
            await state.reload()
            np.testing.assert_array_equal(await pending, expected)
            await _retired(state)
            assert state.registry.get("mnist-denoise") is not old
            np.testing.assert_array_equal(await state.infer(old, "autoencoder", rows), expected)
        finally:
            await state.stop()

    asyncio.run(scenario())


def test_a_held_model_that_changed_shape_or_went_away_is_refused_cleanly(
    models_dir: Path, tmp_path: Path
) -> None:
    root = _private_copy(models_dir, tmp_path, "mnist-denoise", "mnist-s2d", "mnist-conv")

    async def scenario() -> None:
        # The /denoise default must stay loaded; these scenarios replace or remove other models.
        settings = Settings(models_dir=root, device="cpu", default_denoise_model="mnist-denoise")
        state = ServiceState(settings, Metrics())
        await state.start()
        try:
            denoise, unet = state.registry.get("mnist-denoise"), state.registry.get("mnist-s2d")
            shutil.rmtree(root / "mnist-denoise")
            _clone_model(root, "mnist-conv", "mnist-denoise")  # now codes of 8×4×4, not 16×4×4
            shutil.rmtree(root / "mnist-s2d")
            await state.reload()
            await _retired(state)
            with pytest.raises(BatcherClosed, match="different shape"):  # 503 + Retry-After
                await state.infer(denoise, "decoder", np.zeros((1, 16, 4, 4), dtype=np.float32))
            with pytest.raises(UnknownModel):  # 404
                await state.infer(unet, "autoencoder", np.zeros((1, 1, 28, 28), dtype=np.float32))
        finally:
            await state.stop()

    asyncio.run(scenario())


async def _retired(state: ServiceState, timeout: float = 60.0) -> None:
    """Wait until replaced generations have drained and closed."""
    deadline = time.monotonic() + timeout
    while state.retiring:
        assert time.monotonic() < deadline, "the old generation never closed"
        await asyncio.sleep(0.01)


def test_start_up_skips_a_bad_model_dir_and_serves_the_others(
    models_dir: Path, tmp_path: Path, digit_png: bytes
) -> None:
    root = _private_copy(models_dir, tmp_path, "mnist-denoise", "mnist-s2d", "mnist-unet")
    graph = root / "mnist-unet" / "autoencoder.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])  # the card's sha256 no longer matches
    with live_server(root, tmp_path) as live:
        ids = sorted(card["id"] for card in httpx.get(f"{live.url}/models", timeout=30).json())
        assert ids == ["mnist-denoise", "mnist-s2d"]
        response = httpx.post(
            f"{live.url}/denoise", files={"file": ("d.png", digit_png, "image/png")}, timeout=30
        )
        assert response.status_code == 200
        skipped = [line for line in live.output().splitlines() if "skipping model directory" in line]
        assert len(skipped) == 1 and str(graph) in skipped[0] and "sha256 mismatch" in skipped[0], skipped


def test_codeless_models_only_start_with_no_code_default(
    models_dir: Path, tmp_path: Path, digit_png: bytes
) -> None:
    root = _private_copy(models_dir, tmp_path, "mnist-s2d", "mnist-unet")
    with live_server(root, tmp_path, AE_DEFAULT_CODE_MODEL="none") as live:
        files = {"file": ("d.png", digit_png, "image/png")}
        assert httpx.post(f"{live.url}/denoise", files=files, timeout=30).status_code == 200
        encoded = httpx.post(f"{live.url}/encode", files=files, timeout=30)
        assert encoded.status_code == 422, encoded.text
        detail = str(encoded.json()["detail"])
        assert "AE_DEFAULT_CODE_MODEL=none" in detail and "models with codes: none" in detail, detail
        named = httpx.post(f"{live.url}/encode?model=mnist-unet", files=files, timeout=30)
        assert named.status_code == 422 and "models with codes: none" in str(named.json()["detail"])
