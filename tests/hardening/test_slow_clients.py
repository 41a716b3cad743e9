"""Slow clients: hundreds of connections that trickle their headers or body, or send nothing.

Each must end within its deadline (plus slack for a busy machine): 408 and a closed connection for
a body or headers that do not arrive in time, a plain close for a connection that never speaks.
Meanwhile /healthz keeps answering promptly and the server's memory stays flat. The deadlines are
set to 1 s here (AE_BODY_TIMEOUT_S, AE_HEADER_TIMEOUT_S, AE_KEEP_ALIVE_TIMEOUT_S) so that the
tests take seconds; the defaults are in docs/api.md.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hardening._attacks import HealthProbe, Outcome, PeakRss, address, close, read_until_closed
from tests.hardening.conftest import LiveServer, live_server

pytestmark = pytest.mark.timeout(180)

DEADLINE_S = 1.0
# What a busy 2-core machine (training jobs beside the tests) may add to a deadline.
SLACK_S = 3.0
CONNECTIONS = 300
# /healthz must keep answering: the longest wait for an answer during an attack.
HEALTH_GAP_S = 1.0
# Peak RSS over an attack, against the RSS when it began: 300 connections' buffers and tasks.
RSS_GROWTH_MIB = 40.0


@pytest.fixture(scope="module")
def slow_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        models_dir,
        tmp_path_factory.mktemp("slow"),
        AE_BODY_TIMEOUT_S=str(DEADLINE_S),
        AE_HEADER_TIMEOUT_S=str(DEADLINE_S),
        AE_KEEP_ALIVE_TIMEOUT_S="1",
        # Far above the attack, so that every connection meets the deadline, not the in-flight cap.
        AE_MAX_CONCURRENT_REQUESTS="2000",
        AE_MAX_CONNECTIONS="4000",
    ) as live:
        yield live


async def _drip(writer: asyncio.StreamWriter, byte: bytes) -> None:
    """One byte every 100 ms until the server closes the connection."""
    try:
        while True:
            await asyncio.sleep(0.1)
            writer.write(byte)
            await writer.drain()
    except (ConnectionError, RuntimeError):
        return


async def _slow(server: LiveServer, head: bytes, drip: bytes | None, limit_s: float) -> Outcome:
    reader, writer = await asyncio.open_connection(*address(server))
    writer.write(head)
    await writer.drain()
    started = time.monotonic()
    dripping = asyncio.create_task(_drip(writer, drip)) if drip else None
    try:
        return await read_until_closed(reader, started, limit_s)
    finally:
        if dripping is not None:
            dripping.cancel()
        await close(writer)


async def _many(server: LiveServer, head: bytes, drip: bytes | None, limit_s: float) -> list[Outcome]:
    return await asyncio.gather(*(_slow(server, head, drip, limit_s) for _ in range(CONNECTIONS)))


def _attack(
    server: LiveServer, head: bytes, drip: bytes | None
) -> tuple[list[Outcome], HealthProbe, PeakRss]:
    # Waiting past deadline + slack tells "closed late" from "never closed" (status -1).
    limit_s = DEADLINE_S + SLACK_S + 2.0
    with PeakRss(server) as rss, HealthProbe(server.url) as probe:
        outcomes = asyncio.run(_many(server, head, drip, limit_s))
    return outcomes, probe, rss


def _check_service(probe: HealthProbe, rss: PeakRss) -> None:
    assert not probe.failures, probe.failures[:5]
    assert probe.answers > 0
    assert probe.longest_gap_s < HEALTH_GAP_S, f"/healthz stalled for {probe.longest_gap_s:.2f} s"
    assert rss.growth_mib < RSS_GROWTH_MIB, f"RSS rose from {rss.start_mib:.1f} to {rss.peak_mib:.1f} MiB"


def _check_ended(outcomes: list[Outcome], status: int | None) -> None:
    statuses = Counter(o.status for o in outcomes)
    assert statuses == {status: CONNECTIONS}, f"expected {status} for all, got {dict(statuses)}"
    slowest = max(o.closed_after_s for o in outcomes)
    assert slowest <= DEADLINE_S + SLACK_S, f"the last connection closed after {slowest:.2f} s"


def test_trickled_bodies_get_408_and_are_closed_within_the_deadline(slow_server: LiveServer) -> None:
    head = (
        b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
        b"Content-Length: 100000\r\n\r\n\x89PNG"
    )
    outcomes, probe, rss = _attack(slow_server, head, b"\x00")
    _check_ended(outcomes, 408)
    assert all(b"connection: close" in o.head.lower() for o in outcomes)
    assert b"AE_BODY_TIMEOUT_S" in outcomes[0].head
    _check_service(probe, rss)


def test_trickled_headers_get_408_and_are_closed_within_the_deadline(slow_server: LiveServer) -> None:
    outcomes, probe, rss = _attack(slow_server, b"POST /denoise HTTP/1.1\r\nHost: t\r\nX-Slow: ", b"a")
    _check_ended(outcomes, 408)
    assert b"AE_HEADER_TIMEOUT_S" in outcomes[0].head
    _check_service(probe, rss)


def test_connections_that_send_nothing_are_closed_within_the_deadline(slow_server: LiveServer) -> None:
    outcomes, probe, rss = _attack(slow_server, b"", None)
    _check_ended(outcomes, None)  # closed without an answer: there was no request to answer
    _check_service(probe, rss)


def test_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(slow_server: LiveServer) -> None:
    async def scenario() -> Outcome:
        reader, writer = await asyncio.open_connection(*address(slow_server))
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))[15:]
            )
            await reader.readexactly(length)
            # uvicorn's default keep-alive timeout is 5 s; this server's is 1 s.
            return await read_until_closed(reader, time.monotonic(), 4.0)
        finally:
            await close(writer)

    outcome = asyncio.run(scenario())
    assert outcome.status is None and outcome.head == b"", outcome
    assert outcome.closed_after_s <= 1.0 + SLACK_S * 0.5


def test_an_early_answer_closes_the_connection_of_a_body_nobody_reads(slow_server: LiveServer) -> None:
    # 413 from the declared length, before the body is read: the client may not go on trickling it
    # over a kept-alive connection.
    head = (
        b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
        b"Content-Length: 100000000\r\n\r\n\x89PNG"
    )

    async def scenario() -> Outcome:
        return await _slow(slow_server, head, b"\x00", 8.0)

    outcome = asyncio.run(scenario())
    assert outcome.status == 413, outcome
    assert b"connection: close" in outcome.head.lower()
    assert outcome.closed_after_s < DEADLINE_S  # at once, not at the body deadline


@pytest.fixture(scope="module")
def capped_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        models_dir, tmp_path_factory.mktemp("capped"), AE_MAX_CONCURRENT_REQUESTS="16", AE_BODY_TIMEOUT_S="10"
    ) as live:
        yield live


def _in_flight(server: LiveServer) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    line = next(row for row in text.splitlines() if row.startswith("ae_http_requests_in_flight "))
    return float(line.split()[1])  # probes and the scrape itself are not counted


TRICKLED = (
    b"POST /denoise HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n\x89PNG"
)


def test_trickled_bodies_take_no_place_in_flight_and_are_cut_by_the_minimum_rate(
    capped_server: LiveServer, digit_png: bytes
) -> None:
    # 64 trickles against a cap of 16: none is admitted (no body yet), so a normal request is served.
    async def scenario() -> tuple[list[Outcome], httpx.Response, float, float]:
        holders = [asyncio.create_task(_slow(capped_server, TRICKLED, b"\x00", 15.0)) for _ in range(64)]
        await asyncio.sleep(1.0)
        in_flight = await asyncio.to_thread(_in_flight, capped_server)
        async with httpx.AsyncClient(base_url=capped_server.url, timeout=10) as client:
            started = time.monotonic()
            served = await client.post("/denoise", content=digit_png, headers={"content-type": "image/png"})
            took = time.monotonic() - started
        return await asyncio.gather(*holders), served, took, in_flight

    holders, served, took, in_flight = asyncio.run(scenario())
    assert in_flight == 0, "a request still sending its body was counted in flight"
    assert served.status_code == 200, served.text
    assert took < 1.0, f"the normal request took {took:.2f} s"
    # 10 bytes a second is under AE_MIN_BODY_RATE (240): cut after the 2 s grace, long before the
    # 10 s body deadline.
    assert Counter(o.status for o in holders) == {408: 64}
    assert all(b"AE_MIN_BODY_RATE" in o.head for o in holders)
    assert max(o.closed_after_s for o in holders) < 2.0 + SLACK_S


@pytest.fixture(scope="module")
def one_at_a_time(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(models_dir, tmp_path_factory.mktemp("one"), AE_MAX_CONCURRENT_REQUESTS="1") as live:
        yield live


def test_admitted_requests_past_the_in_flight_cap_get_503_at_once(
    one_at_a_time: LiveServer, digit_png: bytes
) -> None:
    async def scenario() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=one_at_a_time.url, timeout=10, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post("/denoise", content=digit_png, headers={"content-type": "image/png"})
                    for _ in range(64)
                )
            )

    answers = asyncio.run(scenario())
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) == {200, 503} and statuses[200] >= 1, statuses
    refused = next(r for r in answers if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert "AE_MAX_CONCURRENT_REQUESTS" in refused.json()["detail"]
    with httpx.Client(base_url=one_at_a_time.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        served = client.post("/denoise", content=digit_png, headers={"content-type": "image/png"})
        assert served.status_code == 200, served.text
