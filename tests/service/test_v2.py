"""Open Inference Protocol v2: the stock tritonclient against a real server, and the protocol's errors.

tritonclient brings its own HTTP stack (geventhttpclient), so the app runs under uvicorn on a free
local port; error cases and special settings go through the ASGI app directly.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from service.routes.v2 import protocol_names
from tests.conftest import serve_in_thread
from tests.service.conftest import make_settings, png_bytes, read_png

MODEL = "mnist-denoise"
UNET = "mnist-unet"
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def live_url(models_dir: Path) -> Iterator[str]:
    """The app (lifespan on, shipped models) served by uvicorn in a thread on a free port."""
    from service.main import create_app

    app = create_app(make_settings(models_dir, log_level="warning"))
    with serve_in_thread(app) as (host, port):
        yield f"{host}:{port}"


@pytest.fixture(scope="module")
def tc(live_url: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(live_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def http(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{live_url}", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def noisy_inputs(digits: tuple[np.ndarray, np.ndarray]) -> tuple[list[bytes], np.ndarray]:
    """Eight noisy digits as PNGs and as the float32 [8, 1, 28, 28] the service decodes them to."""
    pngs = [png_bytes(x) for x in digits[1][:8]]
    return pngs, np.stack([read_png(p) for p in pngs])[:, None]


def image_input(x: np.ndarray, *, binary: bool = True, name: str = "image") -> triton.InferInput:
    tensor = triton.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32), binary_data=binary)
    return tensor


def infer(tc: triton.InferenceServerClient, model: str, x: np.ndarray, output: str, **kw: Any) -> np.ndarray:
    result = tc.infer(model, [image_input(x, name=kw.pop("input_name", "image"))], **kw)
    out = result.as_numpy(output)
    assert out is not None, result.get_response()
    return out


def status_of(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status())


# ---- metadata and health ----------------------------------------------------------------------


def test_server_metadata_names_the_binary_extension(tc: triton.InferenceServerClient) -> None:
    meta = tc.get_server_metadata()
    assert meta["name"] == "ae-denoise"
    assert meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


def test_server_and_every_graph_are_live_and_ready(tc: triton.InferenceServerClient) -> None:
    assert tc.is_server_live()
    assert tc.is_server_ready()
    for name in (MODEL, f"{MODEL}.encoder", f"{MODEL}.decoder", UNET):
        assert tc.is_model_ready(name), name
    assert tc.is_model_ready(MODEL, model_version="1")
    assert not tc.is_model_ready(f"{UNET}.encoder")
    assert not tc.is_model_ready("no-such-model")
    assert not tc.is_model_ready(MODEL, model_version="2")


def test_model_metadata_describes_each_graph(tc: triton.InferenceServerClient, http: httpx.Client) -> None:
    card = http.get(f"/models/{MODEL}").json()
    code = [-1, *card["code_shape"]]
    image = [-1, 1, 28, 28]
    expected = {
        MODEL: (("image", image), ("denoised", image)),
        f"{MODEL}.encoder": (("image", image), ("code", code)),
        f"{MODEL}.decoder": (("code", code), ("image", image)),
        UNET: (("image", image), ("denoised", image)),
    }
    for name, ((in_name, in_shape), (out_name, out_shape)) in expected.items():
        meta = tc.get_model_metadata(name)
        assert meta["name"] == name
        assert meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": in_name, "datatype": "FP32", "shape": in_shape}]
        assert meta["outputs"] == [{"name": out_name, "datatype": "FP32", "shape": out_shape}]


def test_every_model_has_an_autoencoder_name_and_coded_ones_have_encoder_and_decoder(
    http: httpx.Client,
) -> None:
    for card in http.get("/models").json():
        graphs = ["", ".encoder", ".decoder"] if card["code_shape"] else [""]
        for suffix in graphs:
            assert http.get(f"/v2/models/{card['id']}{suffix}").status_code == 200
        if not card["code_shape"]:
            response = http.get(f"/v2/models/{card['id']}.encoder")
            assert response.status_code == 404
            assert f"{MODEL}.encoder" in response.json()["error"]  # names the models that exist


# ---- inference equals the service's own routes -------------------------------------------------


def test_binary_infer_equals_denoise_json_pixels(
    tc: triton.InferenceServerClient, http: httpx.Client, noisy_inputs: tuple[list[bytes], np.ndarray]
) -> None:
    pngs, images = noisy_inputs
    for png, image in zip(pngs, images, strict=True):
        pixels = http.post(
            f"/denoise?model={MODEL}", content=png, headers={**PNG, "accept": "application/json"}
        )
        expected = np.asarray(pixels.json()["pixels"], dtype=np.float32)
        denoised = infer(tc, MODEL, image[None], "denoised")
        assert denoised.dtype == np.float32 and denoised.shape == (1, 1, 28, 28)
        np.testing.assert_array_equal(denoised[0, 0], expected)


def test_a_batch_in_one_request_matches_denoise_batch(
    tc: triton.InferenceServerClient, http: httpx.Client, noisy_inputs: tuple[list[bytes], np.ndarray]
) -> None:
    pngs, images = noisy_inputs
    files = [("files", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    expected = np.asarray(
        [r["pixels"] for r in http.post(f"/denoise/batch?model={UNET}", files=files).json()]
    )
    denoised = infer(tc, UNET, images, "denoised")
    assert denoised.shape == (8, 1, 28, 28)
    # Both paths run the same eight rows as one onnxruntime call: the same numbers.
    np.testing.assert_array_equal(denoised[:, 0], expected)


def test_json_tensors_give_what_binary_tensors_give(
    tc: triton.InferenceServerClient, noisy_inputs: tuple[list[bytes], np.ndarray]
) -> None:
    image = noisy_inputs[1][:1]
    binary = infer(tc, MODEL, image, "denoised")
    result = tc.infer(
        MODEL,
        [image_input(image, binary=False)],
        outputs=[triton.InferRequestedOutput("denoised", binary_data=False)],
    )
    tensor = result.get_output("denoised")
    assert "data" in tensor and "parameters" not in tensor  # really sent back as JSON
    np.testing.assert_array_equal(result.as_numpy("denoised"), binary)


def test_encoder_equals_encode_and_decoder_equals_decode(
    tc: triton.InferenceServerClient, http: httpx.Client, noisy_inputs: tuple[list[bytes], np.ndarray]
) -> None:
    png, image = noisy_inputs[0][0], noisy_inputs[1][:1]
    encoded = http.post(f"/encode?model={MODEL}", content=png, headers=PNG).json()
    code = infer(tc, f"{MODEL}.encoder", image, "code")
    assert list(code.shape) == [1, *encoded["shape"]]
    np.testing.assert_array_equal(code.reshape(-1), np.asarray(encoded["code"], dtype=np.float32))

    decoded = http.post(
        "/decode", json={"model": MODEL, "code": encoded["code"]}, headers={"accept": "application/json"}
    )
    image_out = infer(tc, f"{MODEL}.decoder", code, "image", input_name="code")
    assert image_out.shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(image_out[0, 0], np.asarray(decoded.json()["pixels"], dtype=np.float32))


def test_compressed_requests_versions_and_request_ids_work(
    tc: triton.InferenceServerClient, noisy_inputs: tuple[list[bytes], np.ndarray]
) -> None:
    image = noisy_inputs[1][:2]
    plain = infer(tc, MODEL, image, "denoised")
    for algorithm in ("gzip", "deflate"):
        packed = infer(tc, MODEL, image, "denoised", request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(packed, plain)
    result = tc.infer(MODEL, [image_input(image)], model_version="1", request_id="req-7")
    assert result.get_response()["id"] == "req-7"
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy("denoised"), plain)


# ---- errors, as tritonclient sees them ---------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "make", "status", "words"),
    [
        ("no-such-model", lambda x: image_input(x), "404", "unknown model"),
        (f"{UNET}.encoder", lambda x: image_input(x), "404", "unknown model"),
        (MODEL, lambda x: image_input(x[:, :, :27]), "422", "shape [1, 1, 27, 28]"),
        (MODEL, lambda x: image_input(x[:, 0]), "422", "expected FP32 [-1, 1, 28, 28]"),
        (MODEL, lambda x: image_input(x, name="pixels"), "422", "takes exactly one input, 'image'"),
        (MODEL, lambda x: _fp64(x), "422", "datatype FP64"),
        (MODEL, lambda x: image_input(np.full_like(x, np.nan)), "422", "NaN"),
        (MODEL, lambda x: image_input(x * 255), "422", "takes values in [0, 1]"),
        (MODEL, lambda x: image_input(np.repeat(x, 65, axis=0)), "422", "65 rows of input"),
    ],
    ids=["unknown", "unet-encoder", "size", "rank", "input-name", "datatype", "nan", "range", "batch"],
)
def test_bad_requests_raise_with_status_and_reason(
    tc: triton.InferenceServerClient,
    noisy_inputs: tuple[list[bytes], np.ndarray],
    model: str,
    make: Callable[[np.ndarray], triton.InferInput],
    status: str,
    words: str,
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        tc.infer(model, [make(noisy_inputs[1][:1])])
    assert status_of(raised) == status
    assert words in raised.value.message()


def _fp64(x: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("image", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x.astype(np.float64))
    return tensor


def test_unknown_output_name_is_refused(
    tc: triton.InferenceServerClient, noisy_inputs: tuple[list[bytes], np.ndarray]
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        tc.infer(MODEL, [image_input(noisy_inputs[1][:1])], outputs=[triton.InferRequestedOutput("code")])
    assert status_of(raised) == "422"
    assert "one output, 'denoised'" in raised.value.message()


# ---- malformed bodies, in the protocol's error form --------------------------------------------


def _body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


_IMAGE = {"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32"}
_ZEROS = [0.0] * 784


_BINARY_FLAG_AS_INT = {"name": "denoised", "parameters": {"binary_data": 1}}
_BINARY_3136 = _body([{**_IMAGE, "parameters": {"binary_data_size": 3136}}])


@pytest.mark.parametrize(
    ("body", "binary", "headers", "status", "words"),
    [
        (b"{not json", None, {}, 400, "not valid JSON"),
        (b"[" * 100_000, None, {}, 400, "nests too deeply"),
        (_body([]), None, {}, 400, "inputs"),
        (_body([{**_IMAGE, "shape": ["1", 1, 28, 28], "data": _ZEROS}]), None, {}, 400, "inputs.0.shape.0"),
        (_body([_IMAGE]), None, {}, 400, "no data"),
        (_body([{**_IMAGE, "data": [True] * 784}]), None, {}, 400, "numbers only"),
        (_body([{**_IMAGE, "data": [[0.0] * 28] * 27 + [[0.0]]}]), None, {}, 400, "flat or nested"),
        (_body([{**_IMAGE, "data": _ZEROS[:-1]}]), None, {}, 400, "783 values"),
        (_body([{**_IMAGE, "data": _ZEROS, "parameters": {"shared_memory_region": "r"}}]), None, {}, 400,
         "extension"),
        (_body([{**_IMAGE, "data": _ZEROS}], outputs=[_BINARY_FLAG_AS_INT]),
         None, {}, 400, "binary_data must be true or false"),
        (_body([{**_IMAGE, "data": _ZEROS}]), None, {"inference-header-content-length": "99999"}, 400,
         "JSON length"),
        (_BINARY_3136, b"\0" * 3000, {}, 400, "runs past the end"),
        (_body([{**_IMAGE, "parameters": {"binary_data_size": 3132}}]), b"\0" * 3132, {}, 400, "3132 bytes"),
        (_BINARY_3136, b"\0" * 3140, {}, 400, "4 bytes of binary data after"),
        (_body([{**_IMAGE, "data": _ZEROS}]), None, {"content-encoding": "br"}, 415, "Content-Encoding"),
        (gzip.compress(b"x" * 100)[:20], None, {"content-encoding": "gzip"}, 400, "gzip"),
    ],
    ids=[
        "not-json", "deep", "no-inputs", "string-dim", "no-data", "bools", "ragged", "count", "shm",
        "binary-flag", "header-length", "short-binary", "binary-size", "trailing-bytes", "encoding",
        "truncated-gzip",
    ],
)  # fmt: skip
def test_malformed_bodies_get_protocol_errors(
    http: httpx.Client, body: bytes, binary: bytes | None, headers: dict[str, str], status: int, words: str
) -> None:
    if binary is not None:
        headers = {"inference-header-content-length": str(len(body))}
        body += binary
    response = http.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert words in response.json()["error"]


def test_json_infer_over_plain_http_returns_json(http: httpx.Client) -> None:
    body = {"id": "x1", "inputs": [{**_IMAGE, "data": [[[_ZEROS[:28]] * 28]]}]}
    response = http.post(f"/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    reply = response.json()
    assert reply["model_name"] == MODEL and reply["id"] == "x1"
    (output,) = reply["outputs"]
    assert output["name"] == "denoised" and output["shape"] == [1, 1, 28, 28] and len(output["data"]) == 784


# ---- shared limits, batching and metrics -------------------------------------------------------


def _infer_body(rows: int) -> tuple[bytes, dict[str, str]]:
    data = np.zeros((rows, 1, 28, 28), dtype="<f4").tobytes()
    head = _body([{**_IMAGE, "shape": [rows, 1, 28, 28], "parameters": {"binary_data_size": len(data)}}])
    return head + data, {"inference-header-content-length": str(len(head))}


def test_body_limit_applies_to_v2(app_factory: Callable[..., Any]) -> None:
    body, headers = _infer_body(2)  # 6 KiB of tensors
    with TestClient(app_factory(max_upload_bytes=4096)) as client:
        declared = client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
        streamed = client.post(
            f"/v2/models/{MODEL}/infer", content=iter([body[:3000], body[3000:]]), headers=headers
        )
        bomb = client.post(
            f"/v2/models/{MODEL}/infer",
            content=gzip.compress(b" " * 10_000),
            headers={"content-encoding": "gzip"},
        )
    assert declared.status_code == 413  # refused from Content-Length, before the body is read
    assert streamed.status_code == 413
    assert "limit" in streamed.json()["error"]
    assert bomb.status_code == 413
    assert "decompressed" in bomb.json()["error"]


def test_full_queue_answers_503_with_retry_after(app_factory: Callable[..., Any]) -> None:
    body, headers = _infer_body(4)  # four chunks of one row: more than the queue holds
    with TestClient(app_factory(max_batch_size=1, max_queue=2)) as client:
        response = client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
        rejected = client.app.state.service.metrics.registry.get_sample_value(
            "ae_rejections_total", {"reason": "queue_full"}
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "queue is full" in response.json()["error"]
    assert rejected == 1


def test_v2_runs_through_the_shared_batcher_and_metrics(app_factory: Callable[..., Any]) -> None:
    body, headers = _infer_body(3)
    with TestClient(app_factory()) as client:
        assert (
            client.post(f"/v2/models/{MODEL}.encoder/infer", content=body, headers=headers).status_code == 200
        )
        registry = client.app.state.service.metrics.registry
        rows = registry.get_sample_value("ae_batch_size_sum", {"graph": f"{MODEL}/encoder"})
        requests = registry.get_sample_value(
            "ae_http_request_duration_seconds_count",
            {"method": "POST", "route": "/v2/models/{model_name}/infer", "status": "200"},
        )
    assert rows == 3
    assert requests == 1


def test_not_ready_answers_503_but_stays_live(app_factory: Callable[..., Any]) -> None:
    client = TestClient(app_factory())  # no `with`: the lifespan never loads the models
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    response = client.get(f"/v2/models/{MODEL}/ready")
    assert response.status_code == 503
    assert "not ready" in response.json()["error"]


def test_api_key_guards_models_and_inference_but_not_health(app_factory: Callable[..., Any]) -> None:
    body, headers = _infer_body(1)
    with TestClient(app_factory(api_key="s3cret")) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2").status_code == 200
        refused = client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
        metadata = client.get(f"/v2/models/{MODEL}")
        allowed = client.post(
            f"/v2/models/{MODEL}/infer", content=body, headers={**headers, "x-api-key": "s3cret"}
        )
    assert refused.status_code == 401 and "API key" in refused.json()["error"]
    assert metadata.status_code == 401
    assert allowed.status_code == 200


def test_protocol_names_cover_every_graph(client: TestClient) -> None:
    names = protocol_names(client.app.state.service.registry)
    graphs = sum(len(model.graphs) for model in client.app.state.service.registry)
    assert len(names) == len(set(names)) == graphs
