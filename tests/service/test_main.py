"""service.main: nothing loads at import, the lifespan loads, ``ae-serve`` serves or fails clearly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.main import create_app
from service.registry import ModelError
from tests.conftest import ROOT
from tests.service.conftest import make_settings, png_bytes, read_png


def test_creating_the_app_loads_nothing(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "does-not-exist"))  # would fail if it loaded models
    assert app.state.service.ready is False


def test_module_app_is_built_on_first_access() -> None:
    import service.main

    first = service.main.app  # what `uvicorn service.main:app` asks for
    assert isinstance(first, FastAPI) and service.main.app is first
    assert first.state.service.ready is False


def test_startup_fails_naming_the_missing_file(models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(models_dir / "mnist-denoise", root / "mnist-denoise")
    (root / "mnist-denoise" / "encoder.onnx").unlink()
    app = create_app(make_settings(root))
    with (
        pytest.raises(ModelError, match=re.escape(f"{root / 'mnist-denoise' / 'encoder.onnx'}: missing")),
        TestClient(app),
    ):
        pass
    assert app.state.service.ready is False


def _serve(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from service.main import run; run()"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ae_serve_exits_1_with_one_line_for_a_broken_model(models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(models_dir / "mnist-denoise", root / "mnist-denoise")
    with (root / "mnist-denoise" / "decoder.onnx").open("ab") as f:
        f.write(b"tampered")
    proc = _serve({"AE_MODELS_DIR": str(root), "AE_PORT": "0"})
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in stderr
    (line,) = [ln for ln in stderr.splitlines() if "start-up failed" in ln]
    assert f"{root / 'mnist-denoise' / 'decoder.onnx'}: sha256 mismatch" in line


def test_importing_the_module_reads_no_settings() -> None:
    # With an invalid setting in the environment, the import succeeds; building ``app`` is what fails.
    code = (
        "import service.main as m\n"
        "assert 'app' not in vars(m)\n"
        "try:\n    m.app\nexcept Exception as exc:\n    print(type(exc).__name__)\n"
    )
    env = {**os.environ, "AE_MAX_BATCH_SIZE": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ValidationError"


def test_ae_serve_refuses_an_invalid_setting_with_exit_2() -> None:
    proc = _serve({"AE_MAX_BATCH_SIZE": "0"})
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "ae-serve: invalid setting" in stderr and "max_batch_size" in stderr and "Traceback" not in stderr


def test_ae_serve_options_override_the_environment(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from service.main import run; run()", "--models-dir", str(tmp_path / "none")],
        cwd=ROOT,
        env={**os.environ, "AE_MODELS_DIR": str(ROOT / "models")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert f"{tmp_path / 'none'}: models directory does not exist" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ae_serve_serves_over_real_http_and_stops_cleanly(
    models_dir: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    port = _free_port()
    proc = _serve({"AE_MODELS_DIR": str(models_dir), "AE_PORT": str(port), "AE_HOST": "127.0.0.1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ae-serve did not become ready"
            time.sleep(0.2)
        r = httpx.post(
            f"{base}/denoise", content=png_bytes(digits[1][0]), headers={"content-type": "image/png"}
        )
        assert r.status_code == 200 and read_png(r.content).shape == (28, 28)
        assert r.headers["x-request-id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    # uvicorn re-raises the signal once it has shut down gracefully, so -SIGTERM is a clean exit.
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    assert '"route": "/denoise"' in stderr  # the structured access line
