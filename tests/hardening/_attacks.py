"""Tools for the connection-level attacks: raw sockets, a /healthz probe, the server's peak RSS.

The attacks talk raw HTTP/1.1 over asyncio streams: an HTTP client library would not send a body
one byte at a time, stop half-way through a header, or hang up mid-body on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from tests.hardening.conftest import LiveServer


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


class PeakRss:
    """The server's peak resident memory over a block, in MiB, against its RSS when it began.

    Resets the kernel's high-water mark (``clear_refs``) at the start, so that ``peak_mib`` is the
    peak of the block alone, not of start-up.
    """

    def __init__(self, server: LiveServer) -> None:
        self.pid = server.proc.pid
        self.start_mib = self.peak_mib = 0.0

    def __enter__(self) -> PeakRss:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.start_mib = _status_kib(self.pid, "VmRSS") / 1024
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_mib = _status_kib(self.pid, "VmHWM") / 1024

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.start_mib


@dataclass
class HealthProbe:
    """GET /healthz in a loop on its own thread while an attack runs; the longest wait for an answer.

    ``longest_gap_s`` is the longest time between two successive answers (or from the start to
    the first), which is what a liveness probe or a user sees of a stalled event loop.
    """

    url: str
    interval_s: float = 0.02
    answers: int = 0
    failures: list[str] = field(default_factory=list)
    longest_gap_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _first: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthProbe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        # The attack starts once the probe is answering, so a short attack is still watched.
        if not self._first.wait(30):
            raise AssertionError(f"/healthz never answered: {self.failures[:3]}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            client.get("/healthz")
            self._first.set()
            last = time.monotonic()
            while not self._stop.is_set():
                try:
                    status = client.get("/healthz").status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    status = 0
                now = time.monotonic()
                self.longest_gap_s = max(self.longest_gap_s, now - last)
                last = now
                if status == 200:
                    self.answers += 1
                elif status:
                    self.failures.append(f"/healthz answered {status}")
                self._stop.wait(self.interval_s)


def address(server: LiveServer) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


@dataclass
class Outcome:
    """What one raw connection got: the status line's code (None: closed without an answer) and when."""

    status: int | None
    closed_after_s: float
    head: bytes = b""


async def read_until_closed(reader: asyncio.StreamReader, started: float, limit_s: float) -> Outcome:
    """Everything the server sends until it closes the connection, or ``limit_s`` passes (status -1)."""
    data = b""
    try:
        async with asyncio.timeout(limit_s):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        return Outcome(-1, time.monotonic() - started, data)
    except ConnectionError:
        pass
    elapsed = time.monotonic() - started
    if not data.startswith(b"HTTP/1.1 "):
        return Outcome(None, elapsed, data)
    return Outcome(int(data[9:12]), elapsed, data)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
