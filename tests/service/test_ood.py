"""Out-of-distribution scores on the answers (service/ood.py), through uvicorn and HTTP.

Real Fashion-MNIST test images go to an MNIST model and real MNIST test digits beside them; the
flags and percentiles the service sends must be the card's calibration applied to those images.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from contract import ood
from service.config import Settings
from service.main import create_app
from tests.conftest import serve_in_thread
from tests.service.conftest import png_bytes

MNIST_MODEL = "mnist-s2d"  # the /denoise default: a codeless denoiser
CODE_MODEL = "mnist-denoise"  # the /encode default: has a code
N = 40


@pytest.fixture(scope="module")
def served(models_dir: Path) -> Iterator[httpx.Client]:
    with (
        serve_in_thread(create_app(Settings(models_dir=models_dir))) as (host, port),
        httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def garments() -> np.ndarray:
    """Fashion-MNIST test images, 8-bit as an upload carries them."""
    from training.data import FASHION_DIR, load_idx_dataset

    images = load_idx_dataset(FASHION_DIR).test_x[:N]
    return (np.rint(images * 255) / 255).astype(np.float32)


@pytest.fixture(scope="module")
def digits8(mnist_test_images: np.ndarray) -> np.ndarray:
    return (np.rint(mnist_test_images[:N] * 255) / 255).astype(np.float32)


def _card_score(models_dir: Path, model: str, view: str, images: np.ndarray) -> ood.Scores:
    """The card's calibration applied here, with onnxruntime, to what the service received."""
    model_dir = models_dir / model
    card = json.loads((model_dir / "card.json").read_text())
    calibration = ood.load(model_dir, card)
    assert calibration is not None, f"{model} has no calibration in its card"
    x = images[:, None].astype(np.float32)

    def run(graph: str) -> np.ndarray:
        session = ort.InferenceSession(str(model_dir / graph), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {"image": x})[0])

    outputs = run("autoencoder.onnx") if "output" in calibration.needs(view) else None
    codes = run("encoder.onnx") if "code" in calibration.needs(view) or view == "encode" else None
    return calibration.score(view, x, outputs=outputs, codes=codes)


def _files(images: np.ndarray) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{i}.png", png_bytes(im), "image/png")) for i, im in enumerate(images)]


def test_garments_sent_to_a_digit_model_are_flagged_and_digits_are_not(
    served: httpx.Client, garments: np.ndarray, digits8: np.ndarray
) -> None:
    flags = {}
    for name, images in (("garments", garments), ("digits", digits8)):
        answers = [
            served.post(
                "/denoise",
                params={"model": MNIST_MODEL},
                content=png_bytes(im),
                headers={"Content-Type": "image/png"},
            )
            for im in images
        ]
        assert all(a.status_code == 200 and a.headers["content-type"] == "image/png" for a in answers)
        flags[name] = np.array([a.headers["X-In-Distribution"] == "true" for a in answers])
        percentiles = np.array([float(a.headers["X-OOD-Percentile"]) for a in answers])
        assert ((percentiles >= 0) & (percentiles <= 100)).all()
        assert {a.headers["X-OOD-Threshold"] for a in answers} == {"99.5"}
    assert flags["garments"].mean() <= 0.1, f"only {(~flags['garments']).sum()} of {N} garments flagged"
    assert flags["digits"].mean() >= 0.95, f"{(~flags['digits']).sum()} of {N} test digits flagged"


@pytest.mark.parametrize("model", ["fashion-s2d", "fashion-denoise"])
def test_digits_sent_to_a_garment_model_are_flagged_and_garments_are_not(
    served: httpx.Client, garments: np.ndarray, digits8: np.ndarray, model: str
) -> None:
    """The other way round: digits are simple pictures that a garment model reconstructs and
    encodes well; the strokes signal is what flags them (docs/evaluation.md)."""
    flags = {}
    for name, images in (("garments", garments), ("digits", digits8)):
        answer = served.post("/denoise/batch", params={"model": model}, files=_files(images))
        assert answer.status_code == 200
        flags[name] = np.array([item["ood"]["in_distribution"] for item in answer.json()])
    # docs/evaluation.md: 86 and 92 % of MNIST-5k's test digits flagged clean, AUROC 0.998 and 0.997
    assert flags["digits"].mean() <= 0.3, f"only {(~flags['digits']).sum()} of {N} digits flagged"
    assert flags["garments"].mean() >= 0.95, f"{(~flags['garments']).sum()} of {N} garments flagged"


# The default (its pictures signal computed by its scored graph), one whose scored graph also
# gives the noise estimate (per-noise tables), and the one model whose /denoise view also reads
# the code (no scored graph: numpy signals, its encoder run beside the autoencoder).
@pytest.mark.parametrize("model", [MNIST_MODEL, "fashion-s2d-mixed", "fashion-denoise"])
def test_served_scores_are_the_cards_calibration_applied_to_the_upload(
    served: httpx.Client, models_dir: Path, garments: np.ndarray, digits8: np.ndarray, model: str
) -> None:
    images = np.concatenate([garments[:10], digits8[:10]])
    answer = served.post("/denoise/batch", params={"model": model}, files=_files(images))
    assert answer.status_code == 200, answer.text
    fields = [item["ood"] for item in answer.json()]
    expected = _card_score(models_dir, model, "denoise", images)
    assert [f["in_distribution"] for f in fields] == expected.in_distribution.tolist()
    assert np.allclose([f["percentile"] for f in fields], expected.percentile, atol=0.02)


def test_without_a_scored_graph_the_numpy_signals_give_the_same_scores(
    models_dir: Path, tmp_path: Path, garments: np.ndarray, digits8: np.ndarray
) -> None:
    root = tmp_path / "models"
    shutil.copytree(models_dir / MNIST_MODEL, root / MNIST_MODEL, ignore=shutil.ignore_patterns("report"))
    card = json.loads((root / MNIST_MODEL / "card.json").read_text())
    del card["ood"]["graph"]  # a calibration from before scored graphs
    (root / MNIST_MODEL / "card.json").write_text(json.dumps(card))
    (root / MNIST_MODEL / ood.GRAPH_FILE).unlink()
    images = np.concatenate([garments[:10], digits8[:10]])
    settings = Settings(models_dir=root, default_denoise_model=MNIST_MODEL, default_code_model="none")
    with (
        serve_in_thread(create_app(settings)) as (host, port),
        httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as client,
    ):
        answer = client.post("/denoise/batch", files=_files(images))
    assert answer.status_code == 200, answer.text
    expected = _card_score(models_dir, MNIST_MODEL, "denoise", images)
    fields = [item["ood"] for item in answer.json()]
    assert [f["in_distribution"] for f in fields] == expected.in_distribution.tolist()
    assert np.allclose([f["percentile"] for f in fields], expected.percentile, atol=0.02)


def test_encode_reports_the_code_views_score(
    served: httpx.Client, models_dir: Path, garments: np.ndarray
) -> None:
    answer = served.post("/encode/batch", params={"model": CODE_MODEL}, files=_files(garments[:8]))
    assert answer.status_code == 200, answer.text
    fields = [item["ood"] for item in answer.json()]
    expected = _card_score(models_dir, CODE_MODEL, "encode", garments[:8])
    assert np.allclose([f["percentile"] for f in fields], expected.percentile, atol=0.02)
    single = served.post(
        "/encode",
        params={"model": CODE_MODEL},
        content=png_bytes(garments[0]),
        headers={"Content-Type": "image/png"},
    )
    assert single.json()["ood"] == fields[0]


def test_json_pixels_carry_the_score_as_a_field(served: httpx.Client, garments: np.ndarray) -> None:
    answer = served.post(
        "/denoise",
        params={"model": CODE_MODEL},
        content=png_bytes(garments[0]),
        headers={"Content-Type": "image/png", "Accept": "application/json"},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert set(body["ood"]) == {"percentile", "in_distribution", "threshold"}
    assert body["ood"]["in_distribution"] is False


def test_reject_ood_answers_422_with_the_scores_instead_of_an_image(
    served: httpx.Client, garments: np.ndarray, digits8: np.ndarray
) -> None:
    refused = served.post(
        "/denoise",
        params={"reject_ood": "true"},
        content=png_bytes(garments[0]),
        headers={"Content-Type": "image/png"},
    )
    assert refused.status_code == 422
    body = refused.json()
    assert "does not look like" in body["detail"] and MNIST_MODEL in body["detail"]
    assert body["outsiders"] == [0] and body["ood"][0]["in_distribution"] is False
    # A digit passes with the flag set, and a batch with one garment among digits is refused whole.
    accepted = served.post(
        "/denoise",
        params={"reject_ood": "1"},
        content=png_bytes(digits8[0]),
        headers={"Content-Type": "image/png"},
    )
    assert accepted.status_code == 200 and accepted.headers["content-type"] == "image/png"
    mixed = np.concatenate([digits8[:3], garments[:1]])
    batch = served.post("/denoise/batch", params={"reject_ood": "true"}, files=_files(mixed))
    assert batch.status_code == 422 and batch.json()["outsiders"] == [3]


def test_reject_ood_must_be_a_boolean(served: httpx.Client, digits8: np.ndarray) -> None:
    answer = served.post(
        "/denoise",
        params={"reject_ood": "maybe"},
        content=png_bytes(digits8[0]),
        headers={"Content-Type": "image/png"},
    )
    assert answer.status_code == 422 and "reject_ood" in answer.json()["detail"]


def test_metrics_count_scores_per_model(served: httpx.Client, garments: np.ndarray) -> None:
    """Each scored image once: counted by its batch (the scored graph, the numpy score of an
    autoencoder's /denoise) or by the request (/encode's code view)."""

    def count(model: str, view: str) -> float:
        text = served.get("/metrics").text
        line = f'ae_ood_percentile_count{{model="{model}",view="{view}"}}'
        found = [float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)]
        return found[0] if found else 0.0

    for model, route, view, n in (
        (MNIST_MODEL, "/denoise/batch", "denoise", 3),
        (CODE_MODEL, "/denoise/batch", "denoise", 2),
        (CODE_MODEL, "/encode/batch", "encode", 4),
    ):
        before = {v: count(model, v) for v in ("denoise", "encode")}
        answer = served.post(route, params={"model": model}, files=_files(garments[:n]))
        assert answer.status_code == 200
        assert count(model, view) == before[view] + n, (model, route)
        other = "encode" if view == "denoise" else "denoise"
        assert count(model, other) == before[other], (model, route)


def test_v2_infer_returns_the_scores_as_response_parameters(
    served: httpx.Client, garments: np.ndarray
) -> None:
    x = garments[:2, None]
    request = {
        "inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    answer = served.post(f"/v2/models/{MNIST_MODEL}/infer", json=request)
    assert answer.status_code == 200, answer.text
    parameters = answer.json()["parameters"]
    assert parameters["in_distribution"] == [False, False] and len(parameters["ood_percentile"]) == 2
    assert parameters["ood_threshold"] == 99.5


def test_a_started_service_runs_numpy_blas_on_one_thread(served: httpx.Client) -> None:
    """The scores' small matrix products must not start one spinning BLAS thread per core beside
    the event loop and onnxruntime (service/state.py; docs/benchmarks.md measured 12x per batch)."""
    from threadpoolctl import threadpool_info

    assert served.get("/readyz").status_code == 200
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas, "numpy's BLAS is not visible to threadpoolctl"
    assert {pool["num_threads"] for pool in blas} == {1}
