"""A slow or idle client must not lock out fast ones: the service's default settings, real sockets.

400 connections trickling bodies exceed the in-flight cap (AE_MAX_CONCURRENT_REQUESTS, 256), and
3,000 idle connections exceed the connection cap (AE_MAX_CONNECTIONS, 1,024); neither may turn a
normal client's /denoise into a 503 while they are held.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.hardening._attacks import HealthProbe, PeakRss, address, close
from tests.hardening.conftest import LiveServer

pytestmark = pytest.mark.timeout(240)

# A normal request's answer while the attack is held, on a 2-core machine running other tests.
PROMPT_S = 1.5
# 150 bytes every 0.5 s: 300 B/s, above AE_MIN_BODY_RATE (240), so the trickles are held until the
# 10 s body deadline, not cut by the rate.
CHUNK, EVERY_S = b"\x00" * 150, 0.5


def _normal_denoises(server: LiveServer, png: bytes, count: int) -> list[tuple[int, float]]:
    """``count`` plain /denoise requests, one after the other, from this thread's own client."""
    answers = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(count):
            started = time.monotonic()
            answer = client.post("/denoise", content=png, headers={"content-type": "image/png"})
            answers.append((answer.status_code, time.monotonic() - started))
    return answers


async def _trickle(server: LiveServer, hold: asyncio.Event) -> None:
    _, writer = await asyncio.open_connection(*address(server))
    try:
        writer.write(
            b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n\x89PNG"
        )
        while not hold.is_set():
            writer.write(CHUNK)
            await writer.drain()
            await asyncio.sleep(EVERY_S)
    except ConnectionError:
        return
    finally:
        await close(writer)


def test_a_normal_request_is_served_while_400_bodies_trickle(server: LiveServer, digit_png: bytes) -> None:
    # The trickles run on their own thread's event loop; the normal client is a plain one here.
    started = threading.Event()
    done = threading.Event()

    async def attack() -> None:
        hold = asyncio.Event()
        trickles = [asyncio.create_task(_trickle(server, hold)) for _ in range(400)]
        await asyncio.sleep(1.0)  # all 400 connected and sending
        started.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        hold.set()
        await asyncio.gather(*trickles)

    attacker = threading.Thread(target=asyncio.run, args=(attack(),))
    with PeakRss(server) as rss, HealthProbe(server.url) as probe:
        attacker.start()
        try:
            assert started.wait(30), "the trickles did not start"
            answers = _normal_denoises(server, digit_png, 5)
            in_flight = _in_flight(server)
        finally:
            done.set()
            attacker.join(30)
    assert [status for status, _ in answers] == [200] * 5
    assert max(took for _, took in answers) < PROMPT_S, answers
    assert in_flight == 0, "bodies still arriving were counted in flight"
    assert not probe.failures and probe.longest_gap_s < PROMPT_S
    assert rss.growth_mib < 40, f"RSS rose by {rss.growth_mib:.1f} MiB"


def _in_flight(server: LiveServer) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return float(next(r for r in text.splitlines() if r.startswith("ae_http_requests_in_flight ")).split()[1])


def test_a_normal_request_is_served_while_3000_idle_connections_are_held(
    server: LiveServer, digit_png: bytes
) -> None:
    async def hold() -> list[asyncio.StreamWriter]:
        return [(await asyncio.open_connection(*address(server)))[1] for _ in range(3000)]

    async def release(writers: list[asyncio.StreamWriter]) -> None:
        for writer in writers:
            await close(writer)

    loop = asyncio.new_event_loop()
    with PeakRss(server) as rss, HealthProbe(server.url) as probe:
        writers = loop.run_until_complete(hold())
        try:
            time.sleep(0.5)
            answers = _normal_denoises(server, digit_png, 5)
        finally:
            loop.run_until_complete(release(writers))
            loop.close()
    assert [status for status, _ in answers] == [200] * 5
    assert max(took for _, took in answers) < PROMPT_S, answers
    assert not probe.failures and probe.longest_gap_s < PROMPT_S
    assert rss.growth_mib < 40, f"RSS rose by {rss.growth_mib:.1f} MiB"
