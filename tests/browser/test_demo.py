"""The demo page in headless chromium: draw or upload, press Denoise, see the server's result."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.config import Settings
from service.main import create_app
from tests.conftest import serve_in_thread

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


def pixels(page: Any, selector: str, channels: int = 1) -> np.ndarray:
    """Grey levels ``[h, w]`` (the red channel), or ``[h, w, 3]`` RGB with ``channels=3``."""
    found = page.evaluate(
        READ_PIXELS.replace("out.push(px[i])", "out.push(px[i], px[i + 1], px[i + 2])"), selector
    )
    rgb = np.asarray(found["px"], dtype=np.uint8).reshape(found["h"], found["w"], 3)
    return rgb if channels == 3 else rgb[..., 0]


# The page's colour map (demo.js, STOPS): dark blue → teal → yellow.
STOPS = np.array([[13, 8, 135], [33, 145, 140], [253, 231, 37]], dtype=np.float64)


def heat_map(code: list[float], shape: list[int]) -> np.ndarray:
    """The RGB heat map demo.js draws for a code of shape [C, H, W]: C tiles on white, 1 px apart."""
    channels, h, w = shape
    cols = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / cols)
    values = np.asarray(code, dtype=np.float64).reshape(channels, h, w)
    lo, hi = values.min(), values.max()
    t = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    x = np.clip(t, 0, 1) * (len(STOPS) - 1)
    i = np.minimum(len(STOPS) - 2, np.floor(x)).astype(int)
    f = (x - i)[..., None]
    colours = np.floor(STOPS[i] + f * (STOPS[i + 1] - STOPS[i]) + 0.5)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, 3), 255.0)
    for c in range(channels):
        y0, x0 = (c // cols) * (h + 1), (c % cols) * (w + 1)
        out[y0 : y0 + h, x0 : x0 + w] = colours[c]
    return out.astype(np.uint8)


def cards(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/models")
    assert response.status_code == 200, response.text
    return response.json()


def default_for(url: str, route: str) -> dict[str, Any]:
    """The card GET /models names as the default of ``route`` ("denoise" or "encode")."""
    found = [card for card in cards(url) if route in card["default_for"]]
    assert len(found) == 1, f"{len(found)} defaults for {route}"
    return found[0]


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
    wait_denoised(page)


def wait_denoised(page: Any) -> None:
    """Until the page says it has shown a result (demo.js sets the status once the image has loaded)."""
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Denoised with')")


def noisy_png(page: Any) -> bytes:
    data_url = page.evaluate("document.querySelector('#noisy').toDataURL('image/png')")
    return base64.b64decode(data_url.split(",", 1)[1])


def server_denoise(url: str, page: Any, model: str) -> np.ndarray:
    """What the server returns for the noisy PNG the page shows, as grey levels."""
    response = httpx.post(
        f"{url}/denoise",
        params={"model": model},
        content=noisy_png(page),
        headers={"Content-Type": "image/png"},
    )
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("L"))


def server_encode(url: str, page: Any, model: str) -> dict[str, Any]:
    """The code the server computes with ``model`` for the noisy PNG the page shows."""
    response = httpx.post(
        f"{url}/encode",
        params={"model": model},
        content=noisy_png(page),
        headers={"Content-Type": "image/png"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def assert_code_from(url: str, page: Any, model: dict[str, Any]) -> None:
    """The code panel shows ``model``'s code of the noisy input: its caption and every heat-map cell."""
    assert page.locator("#heatmap").is_visible(), "no code shown"
    caption = page.locator("#code-caption").inner_text()
    size = "×".join(map(str, model["code_shape"]))
    assert f"Latent code of {model['id']} ({size})" in caption, caption
    expected = server_encode(url, page, model["id"])
    assert expected["model"] == model["id"]
    assert f"from {min(expected['code']):.2f} (dark) to {max(expected['code']):.2f} (bright)" in caption, (
        caption
    )
    shown = pixels(page, "#heatmap", channels=3).astype(int)
    drawn = heat_map(expected["code"], expected["shape"]).astype(int)
    assert shown.shape == drawn.shape, f"heat map {shown.shape}, expected {drawn.shape}"
    assert np.abs(shown - drawn).max() <= 1, "the heat map is not this model's code of the noisy input"


def test_defaults_denoise_and_show_a_code(browser: Any, live_server: str) -> None:
    """With the service's defaults: the /denoise default denoises, and a code is always shown."""
    denoiser = default_for(live_server, "denoise")
    coder = default_for(live_server, "encode")
    assert coder["code_shape"], f"the /encode default {coder['id']} has no code"
    page = open_demo(browser, live_server, DESKTOP)
    model = page.locator("#model").input_value()
    assert model == denoiser["id"], "the page does not preselect the /denoise default"
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

    # The code comes from the denoiser when it has one, else from the /encode default, and says so.
    source = denoiser if denoiser["code_shape"] else coder
    assert_code_from(live_server, page, source)
    if source is coder:
        assert (
            f"{denoiser['id']} ({denoiser['arch']}) has no latent code"
            in page.locator("#code-caption").inner_text()
        )
        assert page.locator("#status").inner_text().endswith(f"code from {coder['id']}.")
    timing = page.locator("#timing").inner_text()
    assert f"/denoise ({denoiser['id']})" in timing and f"/encode ({source['id']})" in timing, timing
    assert re.search(r"\d+\.\d ms", timing)
    if os.environ.get("DEMO_SCREENSHOT") == "1":
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert page.errors == []
    page.close()


def test_model_with_a_code_shows_its_own_and_keyboard_drives_the_page(browser: Any, live_server: str) -> None:
    coder = default_for(live_server, "encode")
    others = [card for card in cards(live_server) if card["code_shape"] and card["id"] != coder["id"]]
    assert others, "no model with a code besides the /encode default"
    chosen = others[0]
    page = open_demo(browser, live_server, DESKTOP)
    page.get_by_label("Model").select_option(chosen["id"])
    assert f"code of {chosen['id']}" in page.locator("#code-caption").inner_text()
    page.get_by_role("button", name="Draw a sample digit").focus()
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Denoise").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Denoised with')")
    assert_code_from(live_server, page, chosen)
    assert "has no latent code" not in page.locator("#code-caption").inner_text()
    assert "code from" not in page.locator("#status").inner_text()
    assert (
        np.abs(pixels(page, "#denoised").astype(int) - server_denoise(live_server, page, chosen["id"])).max()
        <= 1
    )
    assert page.errors == []
    page.close()


@pytest.fixture(scope="module")
def other_defaults(models_dir: Path) -> Iterator[str]:
    """The app with both defaults moved to other shipped models: a codeless denoiser, another coder."""
    shipped = Settings(models_dir=models_dir)
    found = [json.loads(path.read_text()) for path in sorted(models_dir.glob("*/card.json"))]
    codeless = [
        c["id"] for c in found if not c.get("code_shape") and c["id"] != shipped.default_denoise_model
    ]
    coders = [c["id"] for c in found if c.get("code_shape") and c["id"] != shipped.default_code_model]
    assert codeless and coders, "models/ needs another codeless model and another model with a code"
    settings = Settings(
        models_dir=models_dir,
        log_level="warning",
        default_denoise_model=codeless[0],
        default_code_model=coders[0],
    )
    with serve_in_thread(create_app(settings)) as (host, port):
        yield f"http://{host}:{port}"


def test_page_follows_the_defaults_the_server_reports(browser: Any, other_defaults: str) -> None:
    denoiser = default_for(other_defaults, "denoise")
    coder = default_for(other_defaults, "encode")
    page = open_demo(browser, other_defaults, DESKTOP)
    assert page.locator("#model").input_value() == denoiser["id"]
    assert f"code of {coder['id']}" in page.locator("#code-caption").inner_text()
    page.get_by_role("button", name="Draw a sample digit").click()
    denoise_and_wait(page)
    expected = server_denoise(other_defaults, page, denoiser["id"])
    assert np.abs(pixels(page, "#denoised").astype(int) - expected).max() <= 1
    assert_code_from(other_defaults, page, coder)
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
    sentence = page.locator("#ood-text").inner_text()
    assert sentence.startswith("This looks like a digit to "), sentence
    assert page.locator("#heatmap").is_visible(), "no code shown with the defaults"
    # Nothing wider than the phone: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.locator("#denoised").bounding_box()["width"] > 60, "the result is too small to see"
    assert page.errors == []
    page.close()


KEY = "demo-key-7f3a"


@pytest.fixture(scope="module")
def keyed_server(models_dir: Path) -> Iterator[str]:
    """The app with an API key required, as the Kubernetes manifests run it."""
    settings = Settings(models_dir=models_dir, log_level="warning", api_key=KEY, require_api_key=True)
    with serve_in_thread(create_app(settings)) as (host, port):
        yield f"http://{host}:{port}"


def test_page_asks_for_the_api_key_once_and_sends_it(browser: Any, keyed_server: str) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.set_default_timeout(TIMEOUT_MS)
    prompts: list[str] = []

    def answer(dialog: Any) -> None:
        prompts.append(dialog.message)
        dialog.accept(KEY)

    page.on("dialog", answer)
    page.goto(keyed_server + "/")
    page.wait_for_selector("#model:not([disabled])")  # /models needed the key
    page.get_by_role("button", name="Draw a sample digit").click()
    denoise_and_wait(page)  # /denoise and /encode need it too: no second prompt
    assert len(prompts) == 1 and "API key" in prompts[0], prompts
    assert "kept in this page only" in page.locator("#key-note").inner_text()
    model = page.locator("#model").input_value()
    noisy = noisy_png(page)
    answer_ = httpx.post(
        f"{keyed_server}/denoise?model={model}",
        content=noisy,
        headers={"content-type": "image/png", "x-api-key": KEY},
    )
    assert answer_.status_code == 200
    expected = np.asarray(Image.open(io.BytesIO(answer_.content)), dtype=np.int64)
    assert np.abs(pixels(page, "#denoised").astype(int) - expected).max() <= 1
    # Nothing is stored beyond the page: a new page asks again.
    assert page.evaluate("Object.keys(localStorage).length + Object.keys(sessionStorage).length") == 0
    page.close()


def test_a_garment_uploaded_at_28_pixels_is_called_an_outsider_under_the_result(
    browser: Any, live_server: str, tmp_path: Path
) -> None:
    """A Fashion-MNIST test image uploaded as it is (28×28) and sent to the /denoise default (a
    digit model): the page sends its pixels unchanged, and the sentence under the result says it
    does not look like a digit, with the percentile the server sent.

    The page fits a drawing or a larger upload into a digit's 20×20 box, as MNIST was made; it
    did so with 28×28 uploads too, after inverting any picture whose mean was bright. This
    pullover, inverted and fitted, sat on the threshold (99.53 at the page's σ = 0.3 with version
    2 of the score, 99.41 with version 3), and the first test garments, fitted, read as digits (an
    ankle boot at 92, trousers at 44–50). Since then a 28×28 upload goes as it is, and
    dark-on-light is read from a picture's border."""
    from training.data import FASHION_DIR, load_idx_dataset

    denoiser = default_for(live_server, "denoise")
    garment = load_idx_dataset(FASHION_DIR).test_x[1]  # a pullover: a filled shape, not a stroke
    grey = np.rint(garment * 255).astype(np.uint8)
    path = tmp_path / "garment.png"
    Image.fromarray(grey).save(path)
    page = open_demo(browser, live_server, DESKTOP)
    page.get_by_label("Or upload an image").set_input_files(str(path))
    page.wait_for_function(
        "document.querySelector('#clean').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data.some((v, i) => i % 4 == 0 && v > 200)"
    )
    assert np.abs(pixels(page, "#clean").astype(int) - grey).max() <= 1  # not fitted, not moved
    denoise_and_wait(page)
    sentence = page.locator("#ood-text").inner_text()
    assert sentence.startswith(f"This does not look like a digit to {denoiser['id']}"), sentence
    # The gauge and the words show the score the server computes for the image the page sent.
    response = httpx.post(
        f"{live_server}/denoise", content=noisy_png(page), headers={"Content-Type": "image/png"}, timeout=30
    )
    assert response.headers["X-In-Distribution"] == "false"
    served = float(response.headers["X-OOD-Percentile"])
    assert float(page.locator("#ood-meter").get_attribute("value") or "nan") == pytest.approx(
        served, abs=0.01
    )
    assert page.errors == []
    page.close()


# ---- the out-of-distribution gauge with shapes drawn on the pad ---------------------------------

# Shapes drawn as a user would, one point list per pen-down, in pad coordinates (0..1). The set of
# letters is fixed here, not chosen by their scores: docs/evaluation.md reports letters as weakly
# detected by the MNIST models, so the tests below check what the page shows, not that letters are
# flagged.
DIGITS: dict[str, list[list[tuple[float, float]]]] = {
    "0": [
        [
            (0.5, 0.15),
            (0.33, 0.25),
            (0.27, 0.5),
            (0.33, 0.75),
            (0.5, 0.85),
            (0.67, 0.75),
            (0.73, 0.5),
            (0.67, 0.25),
            (0.5, 0.15),
        ]
    ],
    "1": [[(0.5, 0.15), (0.5, 0.85)]],
    "2": [[(0.3, 0.3), (0.5, 0.18), (0.68, 0.32), (0.55, 0.55), (0.32, 0.8), (0.72, 0.8)]],
    "7": [[(0.28, 0.2), (0.72, 0.2), (0.45, 0.85)]],
}
LETTERS: dict[str, list[list[tuple[float, float]]]] = {
    "A": [[(0.22, 0.85), (0.5, 0.15), (0.78, 0.85)], [(0.34, 0.58), (0.66, 0.58)]],
    "E": [[(0.72, 0.15), (0.3, 0.15), (0.3, 0.85), (0.72, 0.85)], [(0.3, 0.5), (0.64, 0.5)]],
    "F": [[(0.72, 0.15), (0.3, 0.15), (0.3, 0.85)], [(0.3, 0.5), (0.64, 0.5)]],
    "H": [[(0.28, 0.15), (0.28, 0.85)], [(0.72, 0.15), (0.72, 0.85)], [(0.28, 0.5), (0.72, 0.5)]],
    "K": [[(0.3, 0.15), (0.3, 0.85)], [(0.72, 0.15), (0.3, 0.55)], [(0.42, 0.45), (0.74, 0.85)]],
    "M": [[(0.2, 0.85), (0.2, 0.15), (0.5, 0.6), (0.8, 0.15), (0.8, 0.85)]],
    "N": [[(0.25, 0.85), (0.25, 0.15), (0.75, 0.85), (0.75, 0.15)]],
    "R": [
        [
            (0.3, 0.85),
            (0.3, 0.15),
            (0.55, 0.15),
            (0.68, 0.22),
            (0.7, 0.33),
            (0.64, 0.44),
            (0.5, 0.5),
            (0.3, 0.5),
        ],
        [(0.48, 0.5), (0.72, 0.85)],
    ],
    "T": [[(0.2, 0.15), (0.8, 0.15)], [(0.5, 0.15), (0.5, 0.85)]],
    "W": [[(0.15, 0.15), (0.32, 0.85), (0.5, 0.4), (0.68, 0.85), (0.85, 0.15)]],
    "X": [[(0.25, 0.15), (0.75, 0.85)], [(0.75, 0.15), (0.25, 0.85)]],
    "Z": [[(0.25, 0.15), (0.75, 0.15), (0.25, 0.85), (0.75, 0.85)]],
}
# The pen scribbled back and forth over the whole pad, rows closer than its width: a filled block.
FILLED: list[list[tuple[float, float]]] = [
    [
        point
        for row in range(17)
        for point in ((0.1, 0.1 + 0.05 * row), (0.9, 0.1 + 0.05 * row))[:: 1 - 2 * (row % 2)]
    ]
]
PERCENTILE = re.compile(
    r": (?:(\d+(?:\.\d+)?)(?:st|nd|rd|th) percentile of its validation images|past every one)"
)


def draw(page: Any, strokes: list[list[tuple[float, float]]]) -> None:
    """Each stroke with real mouse events (down, moves, up) on the drawing pad."""
    box = page.locator("#pad").bounding_box()

    def at(fx: float, fy: float) -> tuple[float, float]:
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    for stroke in strokes:
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*at(*point), steps=8)
        page.mouse.up()


def score_drawing(
    browser: Any, url: str, strokes: list[list[tuple[float, float]]], sigma: float
) -> dict[str, Any]:
    """Draw on a fresh page, press Denoise at noise ``sigma`` (seed 0), and check that the gauge and
    sentence show exactly the score the service sent for the upload the page made, and that the
    service gives the same score when that upload is sent again. Returns what was shown."""
    denoiser = default_for(url, "denoise")
    page = open_demo(browser, url, DESKTOP)
    assert page.locator("#model").input_value() == denoiser["id"]
    draw(page, strokes)
    page.get_by_label("Noise level").fill(f"{sigma}")
    with page.expect_response(lambda r: "/denoise" in r.url and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Denoise").click()
    # One press only: a second one (as denoise_and_wait makes) found the status of the first and read
    # the result while its own image was still loading (a 119×119 placeholder instead of 28×28).
    wait_denoised(page)
    # The headers of the very response the page got (chromium does not hand over a Blob body, so
    # the upload itself is read back from the noisy canvas it was encoded from, as PNG, lossless).
    headers = answer.value.headers  # lower-case names
    assert answer.value.status == 200
    assert headers["x-model"] == denoiser["id"]
    percentile = float(headers["x-ood-percentile"])
    inside = headers["x-in-distribution"] == "true"
    threshold = float(headers["x-ood-threshold"])

    # The same upload sent again gets the same score, and the image the page shows.
    again = httpx.post(
        f"{url}/denoise", content=noisy_png(page), headers={"Content-Type": "image/png"}, timeout=30
    )
    assert again.status_code == 200, again.text
    for name in ("X-Model", "X-OOD-Percentile", "X-In-Distribution", "X-OOD-Threshold"):
        assert again.headers[name] == headers[name.lower()], name
    expected = np.asarray(Image.open(io.BytesIO(again.content)).convert("L"), dtype=int)
    assert np.abs(pixels(page, "#denoised").astype(int) - expected).max() <= 1

    # The gauge: visible, labelled, at the served percentile, its "high" mark at the served threshold.
    meter = page.locator("#ood-meter")
    assert meter.is_visible(), "no gauge under the result"
    assert page.get_by_label("Out-of-distribution score").count() == 1, "the gauge has no label"
    assert float(meter.get_attribute("value") or "nan") == pytest.approx(percentile, abs=0.005)
    assert page.evaluate("document.querySelector('#ood-meter').high") == pytest.approx(threshold)
    flagged_style = "outsider" in (page.locator("#ood").get_attribute("class") or "").split()
    assert flagged_style == (not inside), "the gauge's outsider style does not follow the flag"

    # The sentence: names the model, follows the flag, gives the percentile on the flag's side.
    sentence = page.locator("#ood-text").inner_text()
    opening = "This looks like a digit" if inside else "This does not look like a digit"
    assert sentence.startswith(f"{opening} to {denoiser['id']}: "), sentence
    assert f"(flagged past the {threshold:g}th)" in sentence, sentence
    spoken = meter.get_attribute("aria-valuetext") or ""
    assert spoken and spoken in sentence, (spoken, sentence)
    assert inside == ("do not trust" not in sentence), sentence
    found = PERCENTILE.search(sentence)
    assert found, sentence
    if found.group(1) is None:
        assert percentile >= 100, sentence
    else:
        worded = float(found.group(1))
        decimals = len(found.group(1).partition(".")[2])
        assert abs(worded - percentile) <= 0.5 * 10**-decimals + 1e-9, (sentence, percentile)
        assert (worded <= threshold) == inside and worded < 100, (sentence, percentile)
    assert page.errors == []
    page.close()
    return {"percentile": percentile, "in_distribution": inside, "sentence": sentence}


@pytest.mark.parametrize("sigma", [0.0, 0.3])
@pytest.mark.parametrize("digit", sorted(DIGITS))
def test_a_drawn_digit_shows_the_services_score_and_is_not_flagged(
    browser: Any, live_server: str, digit: str, sigma: float
) -> None:
    shown = score_drawing(browser, live_server, DIGITS[digit], sigma=sigma)
    print(f"\ndrawn digit {digit} at sigma {sigma}: {shown['percentile']:.2f} {shown['sentence']}")
    assert shown["in_distribution"], shown["sentence"]


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_a_pad_filled_with_ink_is_flagged_under_the_result(
    browser: Any, live_server: str, sigma: float
) -> None:
    shown = score_drawing(browser, live_server, FILLED, sigma=sigma)
    print(f"\nfilled pad at sigma {sigma}: {shown['percentile']:.2f} {shown['sentence']}")
    assert not shown["in_distribution"], shown["sentence"]
    assert shown["sentence"].startswith("This does not look like a digit"), shown["sentence"]


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_drawn_capital_letters_show_the_services_score(browser: Any, live_server: str, sigma: float) -> None:
    """Each letter's gauge and sentence are the service's score of that upload. How many letters the
    score flags is measured and printed (run with -s), not asserted: letters are weakly detected."""
    results = {
        letter: score_drawing(browser, live_server, strokes, sigma) for letter, strokes in LETTERS.items()
    }
    flagged = [letter for letter, shown in results.items() if not shown["in_distribution"]]
    for letter in flagged:
        print(f"\n{letter}: {results[letter]['sentence']}")
    row = ", ".join(f"{letter} {shown['percentile']:.2f}" for letter, shown in results.items())
    print(f"\ndrawn letters at sigma {sigma}: {len(flagged)} of {len(results)} flagged {flagged}; {row}")


def test_percentile_wording_stays_on_the_flags_side_of_the_threshold(browser: Any, live_server: str) -> None:
    """The sentence's percentile is rounded no further than keeps it below 100 and on the side of
    the threshold the flag says: 99.96 is never "100.0th", a flagged 99.52 never "99.5th"."""
    page = open_demo(browser, live_server, DESKTOP)
    cases = [
        (99.96, 99.5, True, "99.96th"),
        (99.52, 99.5, False, "99.52th"),
        (99.93, 99.5, False, "99.9th"),
        (99.46, 99.5, True, "99.5th"),
        (62.4, 99.5, True, "62nd"),
        (11.2, 99.5, True, "11th"),
        (21.0, 99.5, True, "21st"),
        (0.3, 99.5, True, "0th"),
    ]
    for value, threshold, inside, expected in cases:
        worded = page.evaluate("([v, t, i]) => percentileText(v, t, i)", [value, threshold, inside])
        assert worded == expected, (value, threshold, inside, worded)
    assert page.errors == []
    page.close()
