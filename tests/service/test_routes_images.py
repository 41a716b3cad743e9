"""POST /denoise, /encode and their batch variants through the real app, models and onnxruntime."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx2
import numpy as np
import pytest
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from service import imaging
from service.routes._route import RequestOnlyRoute
from tests.service.conftest import png_bytes, png_header_only, read_png

PNG = {"content-type": "image/png"}
HALF_LEVEL = 0.5 / 255 + 1e-6  # PNG rounding: half of one 8-bit level


def _files(images: np.ndarray) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{i}.png", png_bytes(x), "image/png")) for i, x in enumerate(images)]


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def test_denoise_multipart_returns_a_28x28_png(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    _, noisy = digits
    r = client.post("/denoise", files={"file": ("noisy.png", png_bytes(noisy[0]), "image/png")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-model"] == "mnist-s2d"
    out = read_png(r.content)
    assert out.shape == (28, 28) and out.min() >= 0.0 and out.max() <= 1.0


def test_denoise_raw_body_equals_multipart(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    data = png_bytes(digits[1][1])
    raw = client.post("/denoise", content=data, headers=PNG)
    multipart = client.post("/denoise", files={"file": ("x.png", data, "image/png")})
    assert raw.status_code == multipart.status_code == 200
    assert raw.content == multipart.content


def test_denoise_json_pixels_match_the_png(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    data = png_bytes(digits[1][2])
    body = client.post("/denoise", content=data, headers={**PNG, "accept": "application/json"}).json()
    assert body["model"] == "mnist-s2d" and body["shape"] == [28, 28]
    pixels = np.asarray(body["pixels"], dtype=np.float32)
    png = read_png(client.post("/denoise", content=data, headers=PNG).content)
    assert np.abs(pixels - png).max() <= HALF_LEVEL


@pytest.mark.parametrize(
    "model_id", ["mnist-denoise", "mnist-conv", "mnist-dense", "mnist-unet", "mnist-s2d-int8"]
)
def test_denoised_digit_is_closer_to_the_clean_one(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray], model_id: str
) -> None:
    clean, noisy = digits
    outputs = [
        read_png(client.post(f"/denoise?model={model_id}", content=png_bytes(x), headers=PNG).content)
        for x in noisy[:8]
    ]
    for x, y, out in zip(clean[:8], noisy[:8], outputs, strict=True):
        assert _mse(out, x) < _mse(y, x)


@pytest.mark.parametrize("model_id", ["fashion-denoise", "fashion-unet", "fashion-s2d-int8"])
def test_denoised_fashion_item_is_closer_to_the_clean_one(client: TestClient, model_id: str) -> None:
    from tests.conftest import fashion_dir_or_skip
    from training import protocol
    from training.data import read_idx

    path = fashion_dir_or_skip() / "t10k-images-idx3-ubyte.gz"
    clean = read_idx(path, expected_ndim=3)[:8].astype(np.float32) / 255.0
    noisy = np.rint(protocol.noisy(clean, 0.3, 0) * 255) / 255
    for x, y in zip(clean, noisy, strict=True):
        r = client.post(f"/denoise?model={model_id}", content=png_bytes(y), headers=PNG)
        assert _mse(read_png(r.content), x) < _mse(y, x)


def test_encode_returns_the_code_and_its_shape(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    r = client.post("/encode", content=png_bytes(digits[1][0]), headers=PNG)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "mnist-denoise"
    assert body["shape"] == client.get("/models/mnist-denoise").json()["code_shape"]
    assert len(body["code"]) == int(np.prod(body["shape"]))
    assert np.isfinite(body["code"]).all()


@pytest.mark.parametrize("model_id", ["mnist-denoise", "mnist-conv", "mnist-dense"])
def test_decode_of_encode_equals_denoise(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray], model_id: str
) -> None:
    data = png_bytes(digits[1][3])
    code = client.post(f"/encode?model={model_id}", content=data, headers=PNG).json()
    decoded = client.post("/decode", json={"model": model_id, "code": code["code"]})
    denoised = client.post(f"/denoise?model={model_id}", content=data, headers=PNG)
    assert decoded.status_code == denoised.status_code == 200
    # Same graphs split in two: equal up to float32 round-off, i.e. at most one PNG level apart.
    assert np.abs(read_png(decoded.content) - read_png(denoised.content)).max() <= 1 / 255 + 1e-6


def test_denoise_batch_equals_single_requests(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    noisy = digits[1][:5]
    r = client.post("/denoise/batch", files=_files(noisy))
    assert r.status_code == 200, r.text
    results = r.json()
    assert len(results) == 5
    for x, result in zip(noisy, results, strict=True):
        single = client.post(
            "/denoise", content=png_bytes(x), headers={**PNG, "accept": "application/json"}
        ).json()
        np.testing.assert_allclose(result["pixels"], single["pixels"], atol=1e-5)


def test_encode_batch_equals_single_requests(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    noisy = digits[1][5:9]
    results = client.post("/encode/batch?model=mnist-conv", files=_files(noisy)).json()
    assert [r["model"] for r in results] == ["mnist-conv"] * 4
    for x, result in zip(noisy, results, strict=True):
        single = client.post("/encode?model=mnist-conv", content=png_bytes(x), headers=PNG).json()
        np.testing.assert_allclose(result["code"], single["code"], atol=1e-5)


def test_batch_accepts_repeated_file_fields(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    files = [("file", (f"{i}.png", png_bytes(x), "image/png")) for i, x in enumerate(digits[1][:2])]
    assert len(client.post("/denoise/batch", files=files).json()) == 2


def test_model_is_chosen_by_query(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    r = client.post("/denoise?model=fashion-denoise", content=png_bytes(digits[1][0]), headers=PNG)
    assert r.status_code == 200 and r.headers["x-model"] == "fashion-denoise"


def test_invert_accepts_dark_on_light(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    x = digits[1][0]
    plain = client.post("/denoise", content=png_bytes(x), headers=PNG)
    inverted = client.post("/denoise?invert=true", content=png_bytes(1.0 - x), headers=PNG)
    assert np.abs(read_png(plain.content) - read_png(inverted.content)).max() <= 1 / 255 + 1e-6


def test_resize_true_accepts_other_sizes(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    big = Image.fromarray(imaging.to_uint8(digits[1][0])).resize((56, 56), Image.Resampling.NEAREST)
    out = io.BytesIO()
    big.save(out, "PNG")
    r = client.post("/denoise?resize=true", content=out.getvalue(), headers=PNG)
    assert r.status_code == 200 and read_png(r.content).shape == (28, 28)


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "RGB"])
def test_other_pixel_modes_are_served(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray], mode: str
) -> None:
    r = client.post("/denoise", content=png_bytes(digits[1][0], mode), headers=PNG)
    assert r.status_code == 200, r.text


def test_16_bit_png_is_served(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    out = io.BytesIO()
    Image.fromarray(np.rint(digits[1][0] * 65535).astype(np.uint16)).save(out, "PNG")
    eight_bit = client.post("/denoise", content=png_bytes(digits[1][0]), headers=PNG)
    sixteen_bit = client.post("/denoise", content=out.getvalue(), headers=PNG)
    assert sixteen_bit.status_code == 200
    assert np.abs(read_png(sixteen_bit.content) - read_png(eight_bit.content)).max() <= 2 / 255


# --- refusals -------------------------------------------------------------------------------


def _detail(r: httpx2.Response) -> str:
    body = r.json()
    assert set(body) == {"detail"}
    return str(body["detail"])


def test_truncated_png_is_400(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    data = png_bytes(digits[1][0])
    r = client.post("/denoise", content=data[: len(data) // 2], headers=PNG)
    assert r.status_code == 400 and "cannot decode" in _detail(r)


def test_empty_body_is_400(client: TestClient) -> None:
    r = client.post("/denoise", content=b"", headers=PNG)
    assert r.status_code == 400 and "empty" in _detail(r)


def test_wrong_magic_is_400(client: TestClient) -> None:
    r = client.post("/denoise", content=b"this is not a PNG at all" * 10, headers=PNG)
    assert r.status_code == 400 and "not an image format" in _detail(r)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json", "application/x-www-form-urlencoded", None]
)
def test_unsupported_media_type_is_415(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray], content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/denoise", content=png_bytes(digits[1][0]), headers=headers)
    assert r.status_code == 415 and "multipart/form-data field 'file'" in _detail(r)


def test_non_image_multipart_part_is_415(client: TestClient) -> None:
    r = client.post("/denoise", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 415


def test_multipart_without_a_file_field_is_422(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    r = client.post("/denoise", files={"image": ("x.png", png_bytes(digits[1][0]), "image/png")})
    assert r.status_code == 422 and "no file field 'file'" in _detail(r)


def test_two_files_on_the_single_endpoint_is_422(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    files = [("file", (f"{i}.png", png_bytes(x), "image/png")) for i, x in enumerate(digits[1][:2])]
    r = client.post("/denoise", files=files)
    assert r.status_code == 422 and "/batch" in _detail(r)


def test_wrong_size_is_422_naming_resize(client: TestClient) -> None:
    r = client.post("/denoise", content=png_bytes(np.zeros((32, 32))), headers=PNG)
    assert r.status_code == 422 and "32×32; expected 28×28 (or pass resize=true)" in _detail(r)


@pytest.mark.parametrize("side", [5_000, 50_000])  # over AE_MAX_PIXELS; over Pillow's own guard too
def test_decompression_bomb_is_413_without_decoding(client: TestClient, side: int) -> None:
    r = client.post("/denoise?resize=true", content=png_header_only(side, side), headers=PNG)
    assert r.status_code == 413 and "too large" in _detail(r)


def test_real_oversized_image_is_413(client: TestClient) -> None:
    out = io.BytesIO()
    Image.new("1", (2100, 2100)).save(out, "PNG")  # under 1 kB on the wire, 4.4 Mpx decoded
    r = client.post("/denoise?resize=true", content=out.getvalue(), headers=PNG)
    assert r.status_code == 413 and "4410000 pixels; the limit is 4194304" in _detail(r)


def test_bad_file_in_a_batch_is_named(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    files = _files(digits[1][:3])
    files[1] = ("files", ("broken.png", b"\x89PNG\r\n\x1a\n broken", "image/png"))
    r = client.post("/denoise/batch", files=files)
    assert r.status_code == 400 and _detail(r).startswith("file 1 (broken.png):")


def test_too_many_files_in_a_batch_is_422(
    app_factory: Callable[..., Any], digits: tuple[np.ndarray, np.ndarray]
) -> None:
    with TestClient(app_factory(max_batch_items=2)) as small:
        r = small.post("/denoise/batch", files=_files(digits[1][:3]))
    assert r.status_code == 422 and "AE_MAX_BATCH_ITEMS" in _detail(r)


def test_unknown_model_is_404_listing_the_known_ones(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    r = client.post("/denoise?model=mnist-nope", content=png_bytes(digits[1][0]), headers=PNG)
    assert r.status_code == 404
    assert "unknown model 'mnist-nope'; known models: " in _detail(r) and "mnist-denoise" in _detail(r)


@pytest.mark.parametrize("path", ["/encode", "/encode/batch"])
def test_encode_on_unet_is_422_naming_models_with_codes(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray], path: str
) -> None:
    r = client.post(f"{path}?model=mnist-unet", files=_files(digits[1][:1]))
    assert r.status_code == 422
    assert "has no latent code" in _detail(r) and "models with codes: " in _detail(r)
    assert "mnist-denoise" in _detail(r) and "mnist-unet" not in _detail(r).split("codes: ")[1]


_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(data=st.binary(max_size=4096), content_type=st.sampled_from(["image/png", "image/gif", "image/tiff"]))
def test_arbitrary_bytes_never_cause_a_server_error(
    client: TestClient, data: bytes, content_type: str
) -> None:
    r = client.post("/denoise", content=data, headers={"content-type": content_type})
    assert r.status_code in (200, 400, 413, 422), r.text


@_FUZZ
@given(
    cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=4)
)
def test_damaged_pngs_never_cause_a_server_error(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray], cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(png_bytes(digits[1][0]))
    for index, mask in flips:
        data[index % len(data)] ^= mask
    r = client.post("/denoise", content=bytes(data[: len(data) - cut]), headers=PNG)
    assert r.status_code in (200, 400, 413, 422), r.text


@pytest.mark.parametrize("path", ["/denoise", "/encode"])
@pytest.mark.parametrize("value", ["maybe", "2", "truee", ""])
def test_a_flag_that_is_not_a_boolean_is_422_naming_it(client: TestClient, path: str, value: str) -> None:
    r = client.post(f"{path}?resize={value}", content=b"unread", headers=PNG)
    assert r.status_code == 422 and f"'resize' must be true or false, not '{value}'" in _detail(r)


@pytest.mark.parametrize(("value", "inverted"), [("TRUE", True), ("1", True), ("yes", True), ("off", False)])
def test_flags_accept_the_usual_spellings(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray], value: str, inverted: bool
) -> None:
    x = digits[1][0]
    plain = client.post("/denoise", content=png_bytes(x), headers=PNG)
    dark_on_light = client.post(f"/denoise?invert={value}", content=png_bytes(1.0 - x), headers=PNG)
    assert plain.status_code == dark_on_light.status_code == 200
    assert (plain.content == dark_on_light.content) is inverted


@pytest.mark.parametrize("path", ["/denoise", "/denoise/batch", "/encode", "/encode/batch"])
def test_the_schema_documents_the_query_parameters(client: TestClient, path: str) -> None:
    operation = client.get("/openapi.json").json()["paths"][path]["post"]
    params = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert params == {
        "model": {"type": "string"},
        "resize": {"type": "boolean", "default": False},
        "invert": {"type": "boolean", "default": False},
        "reject_ood": {"type": "boolean", "default": False},
    }


def test_a_request_only_route_refuses_endpoints_that_want_more_than_the_request() -> None:
    router = APIRouter(route_class=RequestOnlyRoute)

    async def fine(request: Request) -> Response:
        return Response(b"")

    async def wants_a_query(request: Request, resize: bool = False) -> Response:
        return Response(b"")

    router.add_api_route("/fine", fine, methods=["POST"])
    with pytest.raises(TypeError, match="takes the Request and nothing else"):
        router.add_api_route("/more", wants_a_query, methods=["POST"])
