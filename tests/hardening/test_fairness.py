"""A slow or idle client must not lock out fast ones: the service's default settings, real sockets.

400 connections trickling bodies exceed the in-flight cap (AE_MAX_CONCURRENT_REQUESTS, 256), and
3,000 idle connections exceed the connection cap (AE_MAX_CONNECTIONS, 1,024); neither may turn a
normal client's /denoise into a 503 while they are held.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.hardening._attacks import HealthProbe, PeakRss, address, close
from tests.hardening.conftest import LiveServer

pytestmark = pytest.mark.timeout(240)

# A normal request's answer while the attack is held, on a 2-core machine running other tests.
PROMPT_S = 1.0


async def _normal_denoise(server: LiveServer, png: bytes) -> tuple[int, float]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        started = time.monotonic()
        answer = await client.post("/denoise", content=png, headers={"content-type": "image/png"})
        return answer.status_code, time.monotonic() - started


async def _trickle(server: LiveServer, hold: asyncio.Event) -> None:
    _reader, writer = await asyncio.open_connection(*address(server))
    try:
        writer.write(
            b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n\x89PNG"
        )
        while not hold.is_set():
            writer.write(b"\x00")
            await writer.drain()
            await asyncio.sleep(0.1)
    except ConnectionError:
        return
    finally:
        await close(writer)


def test_a_normal_request_is_served_while_400_bodies_trickle(server: LiveServer, digit_png: bytes) -> None:
    async def scenario() -> list[tuple[int, float]]:
        done = asyncio.Event()
        trickles = [asyncio.create_task(_trickle(server, done)) for _ in range(400)]
        await asyncio.sleep(1.0)  # all 400 connected and sending, within the 2 s rate grace period
        answers = [await _normal_denoise(server, digit_png) for _ in range(5)]
        done.set()
        await asyncio.gather(*trickles)
        return answers

    with PeakRss(server) as rss, HealthProbe(server.url) as probe:
        answers = asyncio.run(scenario())
    assert [status for status, _ in answers] == [200] * 5
    assert max(took for _, took in answers) < PROMPT_S, answers
    assert not probe.failures and probe.longest_gap_s < PROMPT_S
    assert rss.growth_mib < 40, f"RSS rose by {rss.growth_mib:.1f} MiB"


def test_a_normal_request_is_served_while_3000_idle_connections_are_held(
    server: LiveServer, digit_png: bytes
) -> None:
    async def scenario() -> tuple[list[tuple[int, float]], int]:
        writers = []
        for _ in range(3000):
            _, writer = await asyncio.open_connection(*address(server))
            writers.append(writer)
        await asyncio.sleep(0.5)
        answers = [await _normal_denoise(server, digit_png) for _ in range(5)]
        still_open = sum(1 for w in writers if not w.transport.is_closing())
        for writer in writers:
            await close(writer)
        return answers, still_open

    with PeakRss(server) as rss, HealthProbe(server.url) as probe:
        answers, _ = asyncio.run(scenario())
    assert [status for status, _ in answers] == [200] * 5
    assert max(took for _, took in answers) < PROMPT_S, answers
    assert not probe.failures and probe.longest_gap_s < PROMPT_S
    assert rss.growth_mib < 40, f"RSS rose by {rss.growth_mib:.1f} MiB"
