"""A page of another origin calls the API from a real browser: the CORS headers must let it read
the out-of-distribution score that an image answer carries in its headers (docs/api.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service import ood
from service.config import Settings
from service.main import create_app
from tests.conftest import serve_in_thread
from tests.service.conftest import png_bytes

MODEL = "mnist-s2d"

# fetch() from the page: a PNG body (not a CORS-safelisted type, so the browser sends a preflight
# first), then what the page can read of the answer's headers (null where CORS hides one).
FETCH = """async ([url, bytes, names]) => {
    const r = await fetch(url, {method: "POST", headers: {"Content-Type": "image/png"},
                                body: new Uint8Array(bytes)});
    const seen = {status: r.status};
    for (const name of names) seen[name] = r.headers.get(name);
    return seen;
}"""


@pytest.fixture(scope="module")
def cors_server(models_dir: Path) -> Iterator[tuple[str, int]]:
    app = create_app(Settings(models_dir=models_dir, log_level="warning", cors_origins=["*"]))
    with serve_in_thread(app) as (host, port):
        yield host, port


def test_a_page_of_another_origin_reads_the_score_of_a_garment(
    browser: Any, cors_server: tuple[str, int]
) -> None:
    from training.data import FASHION_DIR, load_idx_dataset

    host, port = cors_server
    page = browser.new_page()
    try:
        # localhost and 127.0.0.1 are two origins to the browser: the page is cross-origin.
        page.goto(f"http://localhost:{port}/healthz")
        garment = load_idx_dataset(FASHION_DIR).test_x[1]
        names = ["X-Model", ood.PERCENTILE_HEADER, ood.FLAG_HEADER, ood.THRESHOLD_HEADER]
        url = f"http://{host}:{port}/denoise?model={MODEL}"
        seen = page.evaluate(FETCH, [url, list(png_bytes(garment)), names])
    finally:
        page.close()
    assert seen["status"] == 200 and seen["X-Model"] == MODEL
    assert seen[ood.FLAG_HEADER] == "false"
    assert float(seen[ood.PERCENTILE_HEADER]) > float(seen[ood.THRESHOLD_HEADER]) >= 99
