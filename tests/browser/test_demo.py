"""The demo page in headless chromium: draw or upload, press Denoise, see the server's result."""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "demo.png"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
# Wall-clock limits for the page's own work; the server answers in milliseconds.
TIMEOUT_MS = 20_000

# In-page helpers: the pixels of an <img> or <canvas> as grey levels (0-255), row-major.
READ_PIXELS = """(selector) => {
  const el = document.querySelector(selector);
  const w = el.naturalWidth || el.width, h = el.naturalHeight || el.height;
  const c = document.createElement('canvas');
  c.width = w; c.height = h;
  const ctx = c.getContext('2d');
  ctx.drawImage(el, 0, 0);
  const px = ctx.getImageData(0, 0, w, h).data;
  const out = [];
  for (let i = 0; i < px.length; i += 4) out.push(px[i]);
  return {w, h, px: out};
}"""


def pixels(page: Any, selector: str) -> np.ndarray:
    found = page.evaluate(READ_PIXELS, selector)
    return np.asarray(found["px"], dtype=np.uint8).reshape(found["h"], found["w"])


def open_demo(browser: Any, url: str, viewport: dict[str, int]) -> Any:
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(url + "/")
    page.wait_for_selector("#model:not([disabled])")
    page.errors = errors  # checked by each test once its work is done
    return page


def draw_two(page: Any) -> None:
    """A "2"-like stroke with real mouse events on the drawing pad."""
    box = page.locator("#pad").bounding_box()
    points = [(0.3, 0.3), (0.5, 0.18), (0.68, 0.32), (0.55, 0.55), (0.32, 0.8), (0.72, 0.8)]
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + points[0][0] * box["width"], y0 + points[0][1] * box["height"])
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(x0 + fx * box["width"], y0 + fy * box["height"], steps=8)
    page.mouse.up()


def denoise_and_wait(page: Any) -> None:
    page.get_by_role("button", name="Denoise").click()
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Denoised with')")


def server_denoise(url: str, page: Any, model: str) -> np.ndarray:
    """What the server returns for the noisy PNG the page shows, as grey levels."""
    data_url = page.evaluate("document.querySelector('#noisy').toDataURL('image/png')")
    png = base64.b64decode(data_url.split(",", 1)[1])
    response = httpx.post(
        f"{url}/denoise", params={"model": model}, content=png, headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("L"))


def test_drawn_digit_is_denoised_and_encoded(browser: Any, live_server: str) -> None:
    page = open_demo(browser, live_server, DESKTOP)
    model = page.locator("#model").input_value()
    assert model, "the model list is empty"
    draw_two(page)
    clean = pixels(page, "#clean")
    assert clean.max() > 200 and (clean > 100).mean() > 0.05, "the stroke did not reach the 28×28 input"
    page.get_by_label("Noise level").fill("0.4")
    noisy = pixels(page, "#noisy")
    assert np.abs(noisy.astype(int) - clean).mean() > 10, "no visible noise at σ = 0.4"
    denoise_and_wait(page)

    shown = pixels(page, "#denoised")
    assert shown.shape == (28, 28)
    # The page shows exactly what the server computes for the noisy image it sent.
    expected = server_denoise(live_server, page, model)
    assert np.abs(shown.astype(int) - expected).max() <= 1
    assert shown.max() > 50, "the denoised image is black"

    heat = page.locator("#heatmap")
    assert heat.is_visible()
    code = pixels(page, "#heatmap")
    assert code.size > 1 and code.std() > 0, "the heat map is blank"
    assert re.search(r"Latent code: [\d×]+ = \d+ numbers", page.locator("#code-caption").inner_text())
    assert re.search(r"\d+\.\d ms", page.locator("#timing").inner_text())
    if os.environ.get("DEMO_SCREENSHOT") == "1":
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert page.errors == []
    page.close()


def test_model_without_code_shows_a_note_and_keyboard_drives_the_page(browser: Any, live_server: str) -> None:
    page = open_demo(browser, live_server, DESKTOP)
    unet = [
        v for v in page.locator("#model option").evaluate_all("os => os.map(o => o.value)") if "unet" in v
    ]
    assert unet, "no unet model among the options"
    page.get_by_label("Model").select_option(unet[0])
    page.get_by_role("button", name="Draw a sample digit").focus()
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Denoise").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Denoised with')")
    assert "has no latent code" in page.locator("#code-caption").inner_text()
    assert not page.locator("#heatmap").is_visible()
    assert (
        np.abs(pixels(page, "#denoised").astype(int) - server_denoise(live_server, page, unet[0])).max() <= 1
    )
    assert page.errors == []
    page.close()


def test_uploaded_image_is_denoised_at_phone_width(
    browser: Any, live_server: str, mnist_test_images: np.ndarray, tmp_path: Path
) -> None:
    # A real test digit, upscaled and dark on light, as a scan would be: the page inverts and fits it.
    digit = Image.fromarray(np.rint(255 - mnist_test_images[0] * 255).astype(np.uint8)).resize((112, 112))
    path = tmp_path / "digit.png"
    digit.save(path)
    page = open_demo(browser, live_server, PHONE)
    page.get_by_label("Or upload an image").set_input_files(str(path))
    page.wait_for_function(
        "document.querySelector('#clean').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data.some((v, i) => i % 4 == 0 && v > 200)"
    )
    clean = pixels(page, "#clean").astype(np.float32) / 255
    # Same digit after the page's MNIST-style fitting: it correlates with the original.
    assert np.corrcoef(clean.ravel(), mnist_test_images[0].ravel())[0, 1] > 0.6
    denoise_and_wait(page)
    assert pixels(page, "#denoised").shape == (28, 28)
    # Nothing wider than the phone: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.locator("#denoised").bounding_box()["width"] > 60, "the result is too small to see"
    assert page.errors == []
    page.close()
