"""Bring your own images, end to end: a generated folder → train per noise → evaluate → reload → serve.

The README's "Train on your own images" path, run for real: training.train and training.evaluate
through their command-line entry points, the real ONNX export, and a running service (uvicorn,
lifespan on) that picks the new model up through POST /admin/reload and denoises with it.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from service.config import Settings
from service.main import create_app
from tests.conftest import serve_in_thread
from tests.training.own_images import glyph, write_folder
from training import evaluate, train
from training.checkpoint import load_checkpoint
from training.noise import KINDS
from training.score import run_onnx
from training.sources import convert

pytestmark = pytest.mark.timeout(300)

FEW_BATCHES = [
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--train-limit",
    "48",
    "--threads",
    "1",
    "--no-progress",
]


def test_own_folder_trains_for_every_noise_evaluates_and_serves_after_a_reload(
    tmp_path: Path, models_dir: Path
) -> None:
    torch.set_num_threads(1)
    models = tmp_path / "models"
    # The shipped models (the defaults among them), as a deployment serves them.
    shutil.copytree(models_dir, models, ignore=shutil.ignore_patterns("report"))
    shipped = sorted(p.parent.name for p in models.glob("*/card.json"))
    with (
        serve_in_thread(create_app(Settings(models_dir=models))) as (host, port),
        httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as client,
    ):
        assert [m["id"] for m in client.get("/models").json()] == shipped
        out, upload = _train_and_evaluate(tmp_path, models)

        reloaded = client.post("/admin/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert sorted(reloaded.json()["models"]) == sorted([*shipped, "my-glyphs"])
        described = client.get("/models/my-glyphs").json()
        assert described["noise"]["kind"] == "mixed" and described["dataset"].startswith("folder:")
        response = client.post(
            "/denoise",
            params={"model": "my-glyphs", "resize": "true", "invert": "true"},
            files={"file": ("x.jpg", upload, "image/jpeg")},
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert 0.0 <= float(response.headers["X-OOD-Percentile"]) <= 100.0
    assert response.headers["X-In-Distribution"] in ("true", "false")
    served = np.asarray(Image.open(io.BytesIO(response.content)))
    assert served.shape == (28, 28)
    # The service ran the new model on exactly the conversion it was trained with.
    expected = run_onnx(out / "autoencoder.onnx", convert(Image.open(io.BytesIO(upload)), invert=True)[None])
    assert np.abs(served.astype(int) - np.rint(expected[0] * 255)).max() <= 1


def _common(data: Path, noise: str) -> list[str]:
    return ["--arch", "s2d", "--data", f"folder:{data}", "--noise", noise, *FEW_BATCHES]


def _train_and_evaluate(tmp_path: Path, models: Path) -> tuple[Path, bytes]:
    data = tmp_path / "glyphs"
    write_folder(data, 300)  # dark on light, 16-64 px, PNG (grey and RGBA), JPEG, BMP, TIFF, WebP

    # A few batches for each single noise kind: each trains, validates and checkpoints.
    for kind in ("gaussian", "salt-pepper", "poisson", "speckle"):
        checkpoint = tmp_path / f"{kind}.pt"
        train.main([*_common(data, kind), "--checkpoint", str(checkpoint)])
        state = load_checkpoint(checkpoint)
        assert state["train_config"]["noise"] == kind and np.isfinite(state["history"][0])
        assert len(state["val_history"][0]) == (4 if kind == "gaussian" else 3)

    # The mixed one is exported into the served folder, named after it, and evaluated.
    out = models / "my-glyphs"
    train.main([*_common(data, "mixed"), "--out", str(out), "--checkpoint", str(tmp_path / "mixed.pt")])
    card = json.loads((out / "card.json").read_text())
    assert card["id"] == "my-glyphs" and card["dataset"] == f"folder:{data}"
    assert card["noise"]["kind"] == "mixed" and card["split"]["inverted"] is True
    assert (card["split"]["train"], card["split"]["validation"], card["split"]["test"]) == (210, 30, 60)
    # Its out-of-distribution score is calibrated on its own validation split, under every noise kind.
    assert card["ood"]["calibrated_on"]["images"] == 30 and (out / "ood.npz").is_file()
    # A codeless denoiser: its /denoise score reads input and output, so the service gets it from
    # the scored graph.
    assert card["ood"]["graph"]["file"] == "scored.onnx" and (out / "scored.onnx").is_file()
    assert {kind for kind, _ in card["ood"]["calibrated_on"]["conditions"]} == set(KINDS)

    evaluate.main(["--model", str(out), "--test-limit", "12", "--tune-images", "6"])
    report = (out / "report" / "README.md").read_text()
    for kind in ("gaussian", "salt-pepper", "poisson", "speckle"):
        assert f"## {kind} (" in report
    assert "| median 3×3 |" in report and "| median (size tuned per s) |" in report
    assert "bm3d" not in report.lower()
    metrics = json.loads((out / "card.json").read_text())["metrics"]
    assert set(metrics["by_noise"]) == {"gaussian", "salt-pepper", "poisson", "speckle"}
    assert metrics["test_images"] == 12 and len(metrics["by_noise"]["poisson"]["psnr"]) == 6
    assert (out / "report" / "psnr_vs_noise.png").stat().st_size > 0

    # A dark-on-light upload of another size, as a user would send it.
    upload = io.BytesIO()
    glyph(np.random.default_rng(99), 40, 33, "L").save(upload, "JPEG")
    return out, upload.getvalue()
