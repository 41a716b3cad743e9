"""Browser fixtures: the app served by uvicorn on a free local port, and Debian's headless chromium.

Playwright never downloads a browser here: it drives the system's ``/usr/bin/chromium``. Without
playwright or chromium the browser tests skip, unless ``REQUIRE_BROWSER=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.main import create_app
from tests.conftest import serve_in_thread

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def live_server(models_dir: Path) -> Iterator[str]:
    """The app with its lifespan, served by uvicorn in a thread; yields its base URL."""
    app = create_app(Settings(models_dir=models_dir, log_level="warning"))
    with serve_in_thread(app) as (host, port):
        yield f"http://{host}:{port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium under playwright (sync API), shared by a module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not (CHROMIUM.is_file() or shutil.which(str(CHROMIUM))):
        _unavailable(f"{CHROMIUM} is missing (make system-deps installs Debian's chromium)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            instance.close()
