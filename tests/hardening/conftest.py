"""Hardening fixtures: ``ae-serve`` as a real process on 127.0.0.1, and uploads to send it."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

AE_SERVE = Path(sys.executable).parent / "ae-serve"
# Start-up on a busy 2-core machine can take several seconds; a hung start must still end the test.
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_argv() -> list[str]:
    """``ae-serve`` itself when installed (``make test`` installs it), else the same entry point."""
    if AE_SERVE.exists():
        return [str(AE_SERVE)]
    return [sys.executable, "-c", "from service.main import run; run()"]


def server_env(models_dir: Path, port: int, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AE_")}
    env.update(AE_MODELS_DIR=str(models_dir), AE_HOST="127.0.0.1", AE_PORT=str(port), AE_LOG_LEVEL="warning")
    env.update(settings)
    return env


@dataclass
class LiveServer:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS in /proc status")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(server: LiveServer, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"ae-serve exited with {server.proc.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"ae-serve not ready after {timeout} s:\n{server.output()}")


@contextmanager
def live_server(models_dir: Path, log_dir: Path, **settings: str) -> Iterator[LiveServer]:
    """``ae-serve`` on a free port with the given ``AE_*`` settings, ready; stopped afterwards."""
    port = free_port()
    log = log_dir / f"ae-serve-{port}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            serve_argv(),
            cwd=ROOT,
            env=server_env(models_dir, port, **settings),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One ``ae-serve`` on the shipped models with default settings, shared by the hardening tests."""
    with live_server(models_dir, tmp_path_factory.mktemp("server")) as live:
        yield live


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8), "L").save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="session")
def digit_png(mnist_test_images: np.ndarray) -> bytes:
    """A real test digit as an 8-bit PNG: what a user uploads."""
    return png(mnist_test_images[0])
