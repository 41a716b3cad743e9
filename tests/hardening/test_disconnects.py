"""Vanishing clients: a client that hangs up half-way through its body.

Nobody is left to answer, and nothing went wrong on the server's side: each such request must be
one info line with status 499 (nginx's "client closed request"), no traceback and no error line,
and no 5xx sample in ``ae_http_request_duration_seconds``, on every route that reads a body.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hardening._attacks import PeakRss, address, close
from tests.hardening.conftest import LiveServer, live_server

pytestmark = pytest.mark.timeout(180)

# Route, content type and the first bytes of a body that never arrives in full.
BODIES = {
    "/denoise": (b"image/png", b"\x89PNG\r\n\x1a\n"),
    "/denoise/batch": (
        b"multipart/form-data; boundary=xyz",
        b'--xyz\r\nContent-Disposition: form-data; name="files"',
    ),
    "/encode": (b"image/png", b"\x89PNG\r\n\x1a\n"),
    "/decode": (b"application/json", b'{"code": [0.1, 0.2,'),
    "/decode/batch": (b"application/json", b'{"codes": [[0.1,'),
    "/v2/models/mnist-denoise/infer": (b"application/json", b'{"inputs": [{"name": "image",'),
}
PER_ROUTE = 20
# Peak RSS over 120 half-sent requests, against the RSS when they began.
RSS_GROWTH_MIB = 30.0


@pytest.fixture(scope="module")
def info_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(models_dir, tmp_path_factory.mktemp("disconnects"), AE_LOG_LEVEL="info") as live:
        yield live


async def _hang_up(server: LiveServer, path: str, request_id: str) -> None:
    content_type, start = BODIES[path]
    _, writer = await asyncio.open_connection(*address(server))
    head = b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: %s\r\nContent-Length: 100000\r\n" % (
        path.encode(),
        content_type,
    )
    writer.write(head + b"X-Request-ID: %s\r\n\r\n%s" % (request_id.encode(), start))
    await writer.drain()
    await asyncio.sleep(0.3)  # the app is reading the body by now
    await close(writer)


def _log_lines(server: LiveServer) -> list[dict[str, Any]]:
    lines = []
    for raw in server.output().splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            lines.append({"unparsed": raw})
    return lines


def _wait_for_lines(server: LiveServer, ids: set[str], timeout_s: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        lines = _log_lines(server)
        if ids <= {line.get("request_id") for line in lines}:
            return lines
        if time.monotonic() > deadline:
            missing = ids - {line.get("request_id") for line in lines}
            raise AssertionError(f"no log line for {sorted(missing)[:5]}…:\n{server.output()[-3000:]}")
        time.sleep(0.1)


def _server_error_samples(server: LiveServer) -> list[str]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return [
        row
        for row in text.splitlines()
        if row.startswith("ae_http_request_duration_seconds_count") and re.search(r'status="5\d\d"', row)
    ]


def test_a_client_that_hangs_up_mid_body_is_one_info_line_with_499(info_server: LiveServer) -> None:
    ids = {f"gone-{i}-{n}" for i, path in enumerate(BODIES) for n in range(PER_ROUTE)}

    async def scenario() -> None:
        await asyncio.gather(
            *(
                _hang_up(info_server, path, f"gone-{i}-{n}")
                for i, path in enumerate(BODIES)
                for n in range(PER_ROUTE)
            )
        )

    with PeakRss(info_server) as rss:
        asyncio.run(scenario())
        lines = _wait_for_lines(info_server, ids)
    for i, path in enumerate(BODIES):
        for n in range(PER_ROUTE):
            mine = [line for line in lines if line.get("request_id") == f"gone-{i}-{n}"]
            assert len(mine) == 1, mine
            assert (mine[0]["level"], mine[0]["status"], mine[0]["path"]) == ("info", 499, path), mine[0]
    errors = [line for line in lines if line.get("level") in ("error", "critical") or "unparsed" in line]
    assert not errors, errors[:3]
    assert "Traceback" not in info_server.output()
    assert _server_error_samples(info_server) == []
    assert rss.growth_mib < RSS_GROWTH_MIB, f"RSS rose from {rss.start_mib:.1f} to {rss.peak_mib:.1f} MiB"
    # And the service carries on.
    assert httpx.get(f"{info_server.url}/readyz", timeout=10).status_code == 200
