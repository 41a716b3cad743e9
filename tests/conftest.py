"""Fixtures shared by every test package: the repository's paths and the shipped data."""

from __future__ import annotations

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
