"""A real three-node Ray cluster on loopback (deploy/ray/local_cluster.py) with the app deployed.

Marker ``ray``. Without the ``ray`` extra these tests skip, and with ``REQUIRE_RAY=1`` (set by
``.ci/run``) they fail instead, so CI can never pass them by skipping. The cluster is stopped,
every process of it, however the tests end.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "deploy" / "ray"))
from local_cluster import SERVE_YAML, LocalCluster


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None or not (Path(sys.executable).parent / "serve").exists():
        reason = "ray[serve] is not installed: `pip install -e '.[ray]'` (make install-dev installs it)"
        if os.environ.get("REQUIRE_RAY") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_block(size: int) -> int:
    """A base port whose ``size`` following ports are all free on every loopback address."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - size, 100)
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")


# --- loopback only ----------------------------------------------------------------------------------

_ADDRESS = re.compile(r"^\[?(?:::ffff:)?([0-9a-fA-F.:*%\w]+?)\]?(?:%\w+)?:(\d+|\*)$")


def _host(endpoint: str) -> str:
    match = _ADDRESS.match(endpoint)
    return match.group(1) if match else endpoint


def is_loopback(host: str) -> bool:
    return host.startswith("127.") or host == "::1"


@dataclass
class LoopbackWatch:
    """Samples ``ss -tanp`` while the cluster runs; keeps every cluster socket off loopback."""

    cluster: LocalCluster
    period_s: float = 0.5
    samples: int = 0
    sockets_seen: int = 0
    outside: list[str] = field(default_factory=list)
    listening_wide: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        pids = self.cluster.pids()
        out = subprocess.run(["ss", "-tanpH"], capture_output=True, text=True, timeout=20).stdout
        for line in out.splitlines():
            cols = line.split()
            owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
            if len(cols) < 5 or not owners & pids:
                continue
            state, local, peer = cols[0], cols[3], cols[4]
            self.sockets_seen += 1
            if state == "LISTEN":
                # A wildcard listener accepts on every interface; what matters is where traffic goes.
                if not is_loopback(_host(local)):
                    self.listening_wide.add(local)
                continue
            if not (is_loopback(_host(local)) and is_loopback(_host(peer))):
                self.outside.append(line)
        self.samples += 1

    def run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.sample()
            except (OSError, subprocess.SubprocessError):
                continue

    def __enter__(self) -> LoopbackWatch:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# --- the cluster ------------------------------------------------------------------------------------


@dataclass
class Deployed:
    cluster: LocalCluster
    url: str
    config: dict[str, Any]
    config_path: Path
    watch: LoopbackWatch
    start_s: float
    deploy_s: float
    figures: dict[str, Any] = field(default_factory=dict)

    def write_config(self, config: dict[str, Any], name: str) -> Path:
        path = self.config_path.parent / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


def test_config(port: int) -> dict[str, Any]:
    """deploy/ray/serve.yaml as shipped, but for the proxy's port (the shipped 8000 may be taken)."""
    config = yaml.safe_load(SERVE_YAML.read_text())
    config["http_options"]["port"] = port
    return config


@pytest.fixture(scope="session")
def ray_cluster(request: pytest.FixtureRequest) -> Iterator[Deployed]:
    require_ray()
    temp_dir = Path(tempfile.mkdtemp(prefix="aeray-", dir="/tmp"))
    cluster = LocalCluster(temp_dir=temp_dir, base_port=_free_block(400), dashboard_port=free_port())
    http_port = free_port()
    config = test_config(http_port)
    config_path = temp_dir / "serve.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    watch = LoopbackWatch(cluster)
    try:
        start_s = cluster.start()
        with watch:
            deploy_s = cluster.deploy(config_path)
            deployed = Deployed(
                cluster, f"http://127.0.0.1:{http_port}", config, config_path, watch, start_s, deploy_s
            )
            yield deployed
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"ray cluster: start {start_s:.1f} s, deploy {deploy_s:.1f} s")
            for name, value in deployed.figures.items():
                reporter.write_line(f"ray cluster: {name}: {value}")
    finally:
        cluster.stop()
        left = cluster.leftovers()
        assert not left, f"cluster processes left behind: {left}"


def wait_for(predicate: Any, timeout: float, what: str, period: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(period)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
