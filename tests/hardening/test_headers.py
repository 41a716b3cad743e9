"""Huge and many headers: bounded by AE_MAX_HEADER_BYTES and AE_MAX_HEADERS, answered 431 and closed.

httptools buffers a header value until it ends, so without a limit one endless header (or a
request line of megabytes) grows the server's memory for as long as the client keeps sending.
Each attack here must end in a 431 and a closed connection after little more than the limit, with
the server's peak memory flat and /healthz answering throughout.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.hardening._attacks import HealthProbe, Outcome, PeakRss, address, close, read_until_closed
from tests.hardening.conftest import LiveServer, live_server

pytestmark = pytest.mark.timeout(180)

MAX_HEADER_BYTES = 16 * 1024  # the default, stated so that the tests can aim just below it
CHUNK = 64 * 1024
# What one endless header may add to the server's peak RSS while 16 MiB of it are sent (without a
# limit httptools holds all of it, and copies it as it grows); and 50 at once, 4 MiB each.
ONE_RSS_GROWTH_MIB = 8.0
RSS_GROWTH_MIB = 30.0
HEALTH_GAP_S = 1.0
# Sent in any case, so that a server without a limit holds all of it before it answers.
ENDLESS = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def header_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        models_dir, tmp_path_factory.mktemp("headers"), AE_MAX_HEADER_BYTES=str(MAX_HEADER_BYTES)
    ) as live:
        yield live


@dataclass
class Sent:
    status: int | None
    sent_bytes: int
    head: bytes


async def _send_endless(server: LiveServer, start: bytes, filler: bytes, total: int) -> Sent:
    """``start``, then ``filler`` over and over up to ``total`` bytes, until the server answers.

    ``sent_bytes`` is what had gone out (into the kernel's buffers, at least) when the answer came.
    """
    reader, writer = await asyncio.open_connection(*address(server))
    answered = asyncio.Event()
    sent = sent_when_answered = 0

    async def read_answer() -> Outcome:
        nonlocal sent_when_answered
        first = await reader.read(65536)
        sent_when_answered = sent
        answered.set()
        rest = await read_until_closed(reader, time.monotonic(), 30.0)
        data = first + rest.head
        return Outcome(int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None, rest.closed_after_s, data)

    answer = asyncio.create_task(read_answer())
    try:
        writer.write(start)
        sent += len(start)
        while sent < total and not answered.is_set():
            writer.write(filler)
            await writer.drain()
            sent += len(filler)
            await asyncio.sleep(0)  # let the answer be read
        if not answered.is_set():
            writer.write(b"\r\n\r\n")  # end the request: a server without a limit now answers it
            await writer.drain()
    except ConnectionError:
        pass
    outcome = await answer
    await close(writer)
    return Sent(outcome.status, sent_when_answered, outcome.head)


def _endless_header(server: LiveServer, total: int) -> Sent:
    start = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: "
    return asyncio.run(_send_endless(server, start, b"a" * CHUNK, total))


def _check_refused(sent: Sent, what: bytes) -> None:
    assert sent.status == 431, sent
    assert b"connection: close" in sent.head.lower() and what in sent.head


def test_headers_just_under_the_limit_are_served(header_server: LiveServer) -> None:
    headers = {f"x-pad-{i}": "p" * 100 for i in range(80)}  # ~9 KiB in 80 lines
    assert httpx.get(f"{header_server.url}/healthz", headers=headers, timeout=10).status_code == 200


def test_one_endless_header_gets_431_and_costs_no_memory(header_server: LiveServer) -> None:
    with PeakRss(header_server) as rss:
        sent = _endless_header(header_server, ENDLESS)
    _check_refused(sent, b"AE_MAX_HEADER_BYTES")
    assert rss.growth_mib < ONE_RSS_GROWTH_MIB, f"RSS rose from {rss.start_mib:.1f} to {rss.peak_mib:.1f} MiB"


def test_an_endless_request_line_gets_431_and_costs_no_memory(header_server: LiveServer) -> None:
    with PeakRss(header_server) as rss:
        sent = asyncio.run(_send_endless(header_server, b"GET /healthz?q=", b"a" * CHUNK, ENDLESS))
    _check_refused(sent, b"AE_MAX_HEADER_BYTES")
    assert rss.growth_mib < ONE_RSS_GROWTH_MIB, f"RSS rose from {rss.start_mib:.1f} to {rss.peak_mib:.1f} MiB"


def test_too_many_header_lines_get_431(header_server: LiveServer) -> None:
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(5000))

    async def scenario() -> Sent:
        return await _send_endless(header_server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + lines, b"", 0)

    sent = asyncio.run(scenario())
    assert sent.status == 431 and b"AE_MAX_HEADERS" in sent.head, sent


def test_many_endless_headers_at_once_keep_memory_flat_and_healthz_answering(
    header_server: LiveServer,
) -> None:
    async def scenario() -> list[Sent]:
        start = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: "
        return await asyncio.gather(
            *(_send_endless(header_server, start, b"a" * CHUNK, 4 * 1024 * 1024) for _ in range(50))
        )

    with PeakRss(header_server) as rss, HealthProbe(header_server.url) as probe:
        results = asyncio.run(scenario())
    assert Counter(r.status for r in results) == {431: 50}, [r.status for r in results]
    assert not probe.failures and probe.answers > 0, probe.failures[:5]
    assert probe.longest_gap_s < HEALTH_GAP_S, f"/healthz stalled for {probe.longest_gap_s:.2f} s"
    assert rss.growth_mib < RSS_GROWTH_MIB, f"RSS rose from {rss.start_mib:.1f} to {rss.peak_mib:.1f} MiB"
