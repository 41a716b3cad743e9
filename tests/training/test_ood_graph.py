"""training.ood_graph: ``scored.onnx`` computes what ``contract.ood`` computes, on real images.

The service scores ``/denoise`` with the scored graph wherever a card names one, so its signals,
noise estimate and first output must be the numpy reference's and the autoencoder graph's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from contract import ood
from training import ood_graph

SHIPPED = Path(__file__).resolve().parents[2] / "models"
GRAPHED = sorted(p.parent.name for p in SHIPPED.glob(f"*/{ood.GRAPH_FILE}"))


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, {"image": x})]


def _images(digits: np.ndarray) -> np.ndarray:
    """Clean and noisy test digits and uniform noise: ``[n, 1, 28, 28]``."""
    rng = np.random.default_rng(7)
    clean = digits[:60]
    noisy = [np.clip(clean + s * rng.standard_normal(clean.shape), 0, 1) for s in (0.1, 0.3, 0.6)]
    return np.concatenate([clean, *noisy, rng.random((20, 28, 28))]).astype(np.float32)[:, None]


def test_the_shipped_models_with_a_pictures_only_denoise_view_carry_a_scored_graph(models_dir: Path) -> None:
    for card_path in sorted(models_dir.glob("*/card.json")):
        card = json.loads(card_path.read_text())
        view = card["ood"]["views"]["denoise"]
        assert ("graph" in card["ood"]) == ood.graph_scorable(view), card["id"]
        assert (card_path.parent / ood.GRAPH_FILE).is_file() == ood.graph_scorable(view), card["id"]
    assert "mnist-s2d" in GRAPHED and "fashion-denoise" not in GRAPHED


@pytest.mark.parametrize("model", GRAPHED)
def test_scored_graph_gives_the_autoencoders_images_and_the_numpy_signals(
    model: str, models_dir: Path, mnist_test_images: np.ndarray
) -> None:
    model_dir = models_dir / model
    calibration = ood.load(model_dir, json.loads((model_dir / "card.json").read_text()))
    assert calibration is not None and calibration.graph is not None
    x = _images(mnist_test_images)
    (plain,) = _run(model_dir / "autoencoder.onnx", x)
    outputs, *extra = _run(model_dir / ood.GRAPH_FILE, x)
    assert np.allclose(outputs, plain, atol=1e-6, rtol=0)
    view = calibration.block["views"]["denoise"]
    expected = ood.signals(view["signals"], x, calibration.distances, outputs=plain)
    for name, got in zip(view["signals"], extra, strict=False):
        assert got.shape == (len(x),)
        assert np.allclose(got, expected[name], atol=2e-4, rtol=0), name
    if ood.needs_noise(view):
        assert np.allclose(extra[-1], ood.noise_estimate(x), atol=1e-6, rtol=1e-5)
    else:
        assert len(extra) == len(view["signals"])
    graph, numpy = calibration.graph_scores(extra), calibration.score("denoise", x, outputs=plain)
    # graph_scores' shortcut for one noise bin and one table is the general arithmetic, exactly.
    values = {name: np.asarray(r, dtype=np.float64) for name, r in zip(view["signals"], extra, strict=False)}
    general = calibration.scores("denoise", values, extra[-1] if ood.needs_noise(view) else None)
    assert np.array_equal(graph.percentile, general.percentile)
    assert np.array_equal(graph.value, general.value)
    assert (calibration._direct is None) == ood.needs_noise(view)
    assert np.allclose(graph.percentile, numpy.percentile, atol=0.02)
    assert (graph.in_distribution == numpy.in_distribution).all()
    assert 0 < graph.in_distribution.mean() < 1  # digits in, uniform noise out, for every model


@pytest.mark.parametrize("model", ["mnist-s2d", "fashion-s2d-mixed"])  # one pooled table; per-noise tables
def test_rebuilding_from_the_card_reproduces_the_shipped_scored_graph(
    model: str, models_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / model
    shutil.copytree(models_dir / model, copy, ignore=shutil.ignore_patterns("report"))
    (copy / ood.GRAPH_FILE).unlink()
    ref = ood_graph.rebuild(copy)
    shipped = json.loads((models_dir / model / "card.json").read_text())["ood"]["graph"]
    assert ref == shipped
    assert json.loads((copy / "card.json").read_text())["ood"]["graph"] == shipped


def test_a_view_that_reads_the_code_gets_no_scored_graph(models_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "fashion-denoise"
    shutil.copytree(models_dir / "fashion-denoise", copy, ignore=shutil.ignore_patterns("report"))
    (copy / ood.GRAPH_FILE).write_bytes(b"stale")
    assert ood_graph.rebuild(copy) is None
    assert not (copy / ood.GRAPH_FILE).exists()
    assert "graph" not in json.loads((copy / "card.json").read_text())["ood"]
    view = {"signals": ["code", "pictures"], "noise_centres": [0.1]}
    with pytest.raises(ValueError, match="more than the input and output"):
        ood_graph.build(None, view, {})  # type: ignore[arg-type]
