"""POST /decode and /decode/batch: codes in, images out, and every malformed code refused."""

from __future__ import annotations

import json

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.conftest import png_bytes, read_png

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def code(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> dict:
    """A real code of mnist-denoise: ``{"model", "shape", "code"}``."""
    return client.post("/encode", content=png_bytes(digits[1][0]), headers=PNG).json()


def _detail(r: httpx2.Response) -> str:
    return str(r.json()["detail"])


def test_decode_returns_a_png(client: TestClient, code: dict) -> None:
    r = client.post("/decode", json={"code": code["code"]})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert read_png(r.content).shape == (28, 28)


def test_encode_output_is_a_valid_decode_body(client: TestClient, code: dict) -> None:
    flat = client.post("/decode", json={"code": code["code"]})
    as_is = client.post("/decode", json=code)  # {"model", "shape", "code"} straight from /encode
    assert as_is.status_code == 200 and as_is.content == flat.content


def test_shaped_code_decodes_like_the_flat_one(client: TestClient, code: dict) -> None:
    shaped = np.asarray(code["code"]).reshape(code["shape"]).tolist()
    flat = client.post("/decode", json={"code": code["code"]})
    nested = client.post("/decode", json={"code": shaped})
    assert nested.status_code == 200 and nested.content == flat.content


def test_decode_json_pixels_when_asked(client: TestClient, code: dict) -> None:
    r = client.post("/decode", json={"code": code["code"]}, headers={"accept": "application/json"})
    body = r.json()
    assert body["model"] == "mnist-denoise" and np.asarray(body["pixels"]).shape == (28, 28)


def test_model_may_come_from_the_query(client: TestClient, digits: tuple[np.ndarray, np.ndarray]) -> None:
    conv = client.post("/encode?model=mnist-conv", content=png_bytes(digits[1][0]), headers=PNG).json()
    r = client.post("/decode?model=mnist-conv", json={"code": conv["code"]})
    assert r.status_code == 200 and r.headers["x-model"] == "mnist-conv"


def test_decode_batch_equals_single_decodes(
    client: TestClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    codes = [client.post("/encode", content=png_bytes(x), headers=PNG).json()["code"] for x in digits[1][:4]]
    results = client.post("/decode/batch", json={"codes": codes}).json()
    assert len(results) == 4
    for c, result in zip(codes, results, strict=True):
        single = client.post("/decode", json={"code": c}, headers={"accept": "application/json"}).json()
        np.testing.assert_allclose(result["pixels"], single["pixels"], atol=1e-5)


@pytest.mark.parametrize("length", [0, 1, 255, 257])
def test_wrong_length_is_422_stating_the_expected_shape(client: TestClient, length: int) -> None:
    r = client.post("/decode", json={"code": [0.5] * length})
    assert r.status_code == 422
    assert "model mnist-denoise expects 256 numbers, flat or nested as [16, 4, 4]" in _detail(r)


def test_wrongly_nested_code_is_422(client: TestClient) -> None:
    r = client.post("/decode", json={"code": np.zeros((4, 4, 16)).tolist()})
    assert r.status_code == 422 and "has shape [4, 4, 16]" in _detail(r)


def test_ragged_or_non_numeric_code_is_422(client: TestClient) -> None:
    for bad in ([[1.0, 2.0], [3.0]], ["a"] * 256, [{"x": 1}] * 256):
        r = client.post("/decode", json={"code": bad})
        assert r.status_code == 422, bad


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_code_is_422(client: TestClient, token: str) -> None:
    values = ["0.1"] * 256
    values[17] = token
    body = '{"code": [' + ",".join(values) + "]}"
    r = client.post("/decode", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "NaN or infinite" in _detail(r)


def test_value_beyond_float32_is_422(client: TestClient) -> None:
    r = client.post("/decode", json={"code": [1e300] * 256})
    assert r.status_code == 422 and "float32 range" in _detail(r)


def test_integer_beyond_float64_is_422(client: TestClient) -> None:
    r = client.post("/decode", json={"code": [10**400] + [0] * 255})
    assert r.status_code == 422


def test_bad_code_in_a_batch_is_named(client: TestClient, code: dict) -> None:
    r = client.post("/decode/batch", json={"codes": [code["code"], code["code"][:10]]})
    assert r.status_code == 422 and _detail(r).startswith("codes[1] has shape [10]")


def test_empty_batch_is_422(client: TestClient) -> None:
    assert client.post("/decode/batch", json={"codes": []}).status_code == 422


def test_missing_code_field_is_422(client: TestClient) -> None:
    r = client.post("/decode", json={"model": "mnist-denoise"})
    assert r.status_code == 422 and "code" in json.dumps(r.json()["detail"])


def test_malformed_json_is_400_as_on_v2(client: TestClient) -> None:
    r = client.post("/decode", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]


def test_unknown_model_is_404(client: TestClient, code: dict) -> None:
    r = client.post("/decode", json={"model": "nope", "code": code["code"]})
    assert r.status_code == 404 and "known models: " in _detail(r)


@pytest.mark.parametrize("path", ["/decode", "/decode/batch"])
def test_decode_on_unet_is_422_naming_models_with_codes(client: TestClient, path: str) -> None:
    body = {"model": "mnist-unet", "code": [0.0] * 256, "codes": [[0.0] * 256]}
    r = client.post(path, json=body)
    assert r.status_code == 422 and "models with codes: " in _detail(r)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.dictionaries(st.sampled_from(["model", "code", "codes", "x"]), _JSON, max_size=3))
def test_arbitrary_json_never_causes_a_server_error(client: TestClient, body: dict) -> None:
    for path in ("/decode", "/decode/batch"):
        r = client.post(path, json=body)
        assert r.status_code in (200, 404, 422), (path, body, r.text)
