"""Fixtures shared by every test package: the repository's paths and the shipped data."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"
# Debian's dataset-fashion-mnist (`make system-deps`); training/data.py reads it from here.
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# MNIST's four IDX files, as `make mnist-data` (python -m training.fetch_mnist) writes them.
MNIST_DIR = ROOT / "data" / "mnist"


def fashion_dir_or_skip() -> Path:
    """Fashion-MNIST's directory; without it a skip, or a failure where REQUIRE_FASHION=1 (CI)."""
    if (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file() or (
        FASHION_DIR / "t10k-images-idx3-ubyte"
    ).is_file():
        return FASHION_DIR
    message = f"{FASHION_DIR} is missing (Debian package dataset-fashion-mnist; `make system-deps`)"
    if os.environ.get("REQUIRE_FASHION") == "1":
        pytest.fail(f"REQUIRE_FASHION=1 but {message}")
    pytest.skip(message)


def mnist_dir_or_skip() -> Path:
    """MNIST's IDX directory; without it a skip, or a failure where REQUIRE_MNIST=1 (CI)."""
    if (MNIST_DIR / "t10k-images-idx3-ubyte").is_file():
        return MNIST_DIR
    message = f"{MNIST_DIR} is missing (`make mnist-data`)"
    if os.environ.get("REQUIRE_MNIST") == "1":
        pytest.fail(f"REQUIRE_MNIST=1 but {message}")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _no_developer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build service settings from explicit values only: no AE_* of the developer's shell.

    (Servers started as subprocesses get their own environment: tests/hardening/conftest.py.)
    """
    for name in list(os.environ):
        if name.startswith("AE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The shipped ``models/`` directory; fails (never skips) when it holds no model."""
    if not any(MODELS_DIR.glob("*/card.json")):
        pytest.fail(f"{MODELS_DIR} holds no model (expected models/<id>/card.json)")
    return MODELS_DIR


@pytest.fixture(scope="session")
def mnist_test_images() -> np.ndarray:
    """The MNIST-5k test split (docs/training.md): float32 ``[1000, 28, 28]`` in [0, 1], white on black."""
    from training.data import load_mnist5k

    return load_mnist5k().test_x


@contextmanager
def serve_in_thread(app: Any, start_timeout: float = 60.0) -> Iterator[tuple[str, int]]:
    """Serve an ASGI app (lifespan on) with uvicorn in a thread on a free port; yields (host, port)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"uvicorn did not start within {start_timeout} s")
        time.sleep(0.05)
    host, port = sock.getsockname()[:2]
    try:
        yield host, port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
