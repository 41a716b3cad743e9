"""training.ood_graph: ``scored.onnx`` computes what ``contract.ood`` computes, on real images.

The service scores ``/denoise`` with the scored graph wherever a card names one, so its signals,
noise estimate and first output must be the numpy reference's and the autoencoder graph's.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from contract import ood
from training import ood_graph

SHIPPED = Path(__file__).resolve().parents[2] / "models"
GRAPHED = sorted(p.parent.name for p in SHIPPED.glob(f"*/{ood.GRAPH_FILE}"))


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, {"image": x})]


def _copy(models_dir: Path, tmp_path: Path, model: str) -> Path:
    """A shipped model directory copied into ``tmp_path`` (without its report)."""
    copy = tmp_path / model
    shutil.copytree(models_dir / model, copy, ignore=shutil.ignore_patterns("report"))
    return copy


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
def test_scored_graph_gives_the_autoencoders_images_and_the_numpy_percentiles(
    model: str, models_dir: Path, mnist_test_images: np.ndarray
) -> None:
    model_dir = models_dir / model
    calibration = ood.load(model_dir, json.loads((model_dir / "card.json").read_text()))
    assert calibration is not None and calibration.graph is not None and not calibration.graph.stale
    x = _images(mnist_test_images)
    (plain,) = _run(model_dir / "autoencoder.onnx", x)
    outputs, percentile = _run(model_dir / ood.GRAPH_FILE, x)
    assert np.allclose(outputs, plain, atol=1e-6, rtol=0)
    assert percentile.shape == (len(x),) and percentile.dtype == np.float32
    graph, numpy = (
        calibration.percentile_scores("denoise", percentile),
        calibration.score("denoise", x, outputs=plain),
    )
    # float32 throughout against numpy's float64 standardising and tables: a few hundredths at
    # most (the per-noise tables' weights follow the float32 noise estimate)
    assert np.abs(graph.percentile - numpy.percentile).max() < 0.05
    assert (graph.in_distribution == numpy.in_distribution).all()
    assert 0 < graph.in_distribution.mean() < 1  # digits in, uniform noise out, for every model
    # past every validation value: 100 up to float32's rounding of the ramps' sum
    assert graph.percentile.min() >= 0 and graph.percentile.max() < 100.001


def test_the_ramps_are_the_interpolation_of_the_table() -> None:
    table = np.array([-1.0, 0.0, 0.0, 0.5, 2.0, 2.0, 7.0])  # ties, kept at their upper end as served
    view = {"percentiles": [0.0, 10.0, 20.0, 50.0, 90.0, 99.0, 100.0], "table": table.tolist()}
    ((values, percentiles),) = ood.percentile_tables(view)
    v = np.concatenate([np.linspace(-3, 9, 1001), table, [np.inf, -np.inf]])
    knots, scales, weights = ood_graph.ramps(values, percentiles)
    got = (np.clip((v[:, None] - knots) * scales, 0, 1) * weights).sum(axis=1)
    assert np.allclose(got, np.interp(v, values, percentiles, left=0, right=100), atol=1e-9)
    # a first percentile above 0 is a step at the smallest value (ties there)
    knots, scales, weights = ood_graph.ramps(np.array([0.0, 1.0]), np.array([30.0, 100.0]))
    got = (np.clip((np.array([-0.1, 0.0, 0.5])[:, None] - knots) * scales, 0, 1) * weights).sum(axis=1)
    assert np.allclose(got, [0.0, 30.0, 65.0])


def test_one_basis_gives_both_distances_lengths(models_dir: Path) -> None:
    """The pictures' and the strokes' whitenings of a shipped card, folded for a pair of
    pictures: one projection and per-distance weights give each squared length, for any vector."""
    model_dir = models_dir / "mnist-s2d"
    calibration = ood.load(model_dir, json.loads((model_dir / "card.json").read_text()))
    assert calibration is not None
    folded = [ood_graph._folded(calibration.distances[d], 2, 14)[0] for d in ("pictures", "strokes")]
    project, weights = ood_graph._shared_basis(folded)
    assert project.shape == (len(folded[0]), len(folded[0])) and weights.shape == (len(folded[0]), 2)
    x = np.random.default_rng(0).standard_normal((50, len(folded[0])))
    z = x @ project
    for j, whiten in enumerate(folded):
        assert np.allclose(np.square(z) @ weights[:, j], np.square(x @ whiten).sum(axis=1), rtol=1e-9)
    # one distance: the projection alone, every weight 1
    project, weights = ood_graph._shared_basis(folded[:1])
    assert (weights == 1).all()
    assert np.allclose(np.square(x @ project).sum(axis=1), np.square(x @ folded[0]).sum(axis=1), rtol=1e-9)


@pytest.mark.parametrize("model", ["mnist-s2d", "fashion-s2d-mixed"])  # one pooled table; per-noise tables
def test_rebuilding_from_the_card_reproduces_the_shipped_scored_graph(
    model: str, models_dir: Path, tmp_path: Path
) -> None:
    copy = _copy(models_dir, tmp_path, model)
    (copy / ood.GRAPH_FILE).unlink()
    ref = ood_graph.rebuild(copy)
    shipped = json.loads((models_dir / model / "card.json").read_text())["ood"]["graph"]
    assert ref == shipped
    assert json.loads((copy / "card.json").read_text())["ood"]["graph"] == shipped


def test_a_graph_that_does_not_score_as_numpy_does_is_not_written(
    models_dir: Path,
    tmp_path: Path,
    mnist_test_images: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """write() runs the graph it built on check images and keeps it only where it agrees with
    numpy: here a graph of mnist-s2d's view measuring fashion-s2d's distances (a real graph, but
    the wrong one) is refused; with both constructions refused the card keeps no graph, so the
    service scores in numpy."""
    copy = _copy(models_dir, tmp_path, "mnist-s2d")
    card = json.loads((copy / "card.json").read_text())
    calibration = ood.load(copy, card)
    other = ood.load(
        models_dir / "fashion-s2d", json.loads((models_dir / "fashion-s2d" / "card.json").read_text())
    )
    assert calibration is not None and other is not None
    images = ood_graph.check_images(mnist_test_images[:100])
    autoencoder = onnx.load(str(copy / "autoencoder.onnx"))
    view = card["ood"]["views"]["denoise"]
    right = ood_graph.build(autoencoder, view, calibration.distances, scale=2)
    side_by_side = ood_graph.build(autoencoder, view, calibration.distances, scale=2, shared=False)
    wrong = ood_graph.build(autoencoder, view, other.distances, scale=2)
    assert ood_graph.disagreement(right, calibration, images) == ""
    assert ood_graph.disagreement(side_by_side, calibration, images) == ""
    assert "against numpy's" in ood_graph.disagreement(wrong, calibration, images)

    # the shared projection failing its check, the whitenings side by side are written instead
    block = card["ood"]
    build = ood_graph.build
    monkeypatch.setattr(ood_graph, "build", lambda *a: wrong if a[-1] else build(*a))
    assert ood_graph.write(copy, card, block, mnist_test_images[:100]) is not None
    assert (copy / ood.GRAPH_FILE).read_bytes() == side_by_side.SerializeToString()

    monkeypatch.setattr(ood_graph, "build", lambda *a: wrong)  # both fail: no graph at all
    with caplog.at_level("WARNING"):
        assert ood_graph.write(copy, card, block, mnist_test_images[:100]) is None
    assert "graph" not in block and not (copy / ood.GRAPH_FILE).exists()
    assert "the service will score in numpy" in caplog.text


def test_a_graph_built_from_another_calibration_of_the_view_is_not_used(
    models_dir: Path, tmp_path: Path
) -> None:
    copy = _copy(models_dir, tmp_path, "mnist-s2d")
    card = json.loads((copy / "card.json").read_text())
    card["ood"]["views"]["denoise"]["threshold_percentile"] = 99.9  # edited without a rebuild
    graph = ood.load(copy, card).graph  # type: ignore[union-attr]
    assert graph is not None and "another calibration of view 'denoise'" in graph.stale
    assert f"python -m training.ood_graph {copy}" in graph.stale
    del card["ood"]["graph"]["view_sha256"]  # a graph of the earlier form (signals, not percentiles)
    assert "another calibration" in ood.load(copy, card).graph.stale  # type: ignore[union-attr]


def test_a_view_that_reads_the_code_gets_no_scored_graph(models_dir: Path, tmp_path: Path) -> None:
    copy = _copy(models_dir, tmp_path, "fashion-denoise")
    (copy / ood.GRAPH_FILE).write_bytes(b"stale")
    assert ood_graph.rebuild(copy) is None
    assert not (copy / ood.GRAPH_FILE).exists()
    assert "graph" not in json.loads((copy / "card.json").read_text())["ood"]
    view = {"signals": ["code", "pictures"], "noise_centres": [0.1]}
    with pytest.raises(ValueError, match="more than the input and output"):
        ood_graph.build(None, view, {})  # type: ignore[arg-type]


def test_a_view_of_two_signals_standardised_per_noise_level_scores_as_numpy_does(
    models_dir: Path, mnist_test_images: np.ndarray
) -> None:
    """No shipped view has two signals or several noise bins (own-data calibrations may): the
    graph's weighted standardising, largest signal and per-noise tables against contract.ood."""
    model_dir = models_dir / "mnist-s2d"
    card = json.loads((model_dir / "card.json").read_text())
    shipped = ood.load(model_dir, card)
    assert shipped is not None
    rng = np.random.default_rng(3)
    digits = mnist_test_images[:400]
    levels = rng.choice([0.0, 0.1, 0.2, 0.4], size=len(digits))[:, None, None]
    calib = np.clip(digits + levels * rng.standard_normal(digits.shape), 0, 1).astype(np.float32)[:, None]
    (outputs,) = _run(model_dir / "autoencoder.onnx", calib)
    distances = {"pictures": shipped.distances["pictures"], "input": ood.fit_distance(ood.descriptor(digits))}
    values = ood.signals(["pictures", "input"], calib, distances, outputs=outputs)
    view = ood.fit_view(values, ood.noise_estimate(calib), bins=3, table_bins=3)
    assert len(view["noise_centres"]) == 3 and len(view["tables"]) == 3
    model = ood_graph.build(onnx.load(str(model_dir / "autoencoder.onnx")), view, distances)
    x = _images(mnist_test_images[400:])
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, f"{tmp}/scored.onnx")
        plain_outputs, percentile = _run(Path(tmp) / "scored.onnx", x)
    calibration = ood.Calibration({"views": {"denoise": view}}, distances)
    numpy = calibration.score("denoise", x, outputs=plain_outputs)
    assert np.abs(percentile - numpy.percentile).max() < 0.05
    graph = calibration.percentile_scores("denoise", percentile)
    assert (graph.in_distribution == numpy.in_distribution).all() and 0 < graph.in_distribution.mean() < 1


def test_a_version_2_card_is_scored_at_full_resolution_in_numpy_and_in_its_rebuilt_graph(
    models_dir: Path, tmp_path: Path, mnist_test_images: np.ndarray
) -> None:
    """Cards calibrated before version 3 described pictures at full resolution; they load and
    score as they were calibrated (here the shipped calibration's numbers, marked version 2)."""
    copy = _copy(models_dir, tmp_path, "mnist-s2d")
    card = json.loads((copy / "card.json").read_text())
    card["ood"]["version"] = 2
    (copy / "card.json").write_text(json.dumps(card))
    assert ood_graph.rebuild(copy) is not None
    card = json.loads((copy / "card.json").read_text())
    old, new = (
        ood.load(copy, card),
        ood.load(models_dir / "mnist-s2d", json.loads((models_dir / "mnist-s2d" / "card.json").read_text())),
    )
    assert old is not None and new is not None and (old.scale, new.scale) == (1, 2)
    x = _images(mnist_test_images)
    (plain,) = _run(copy / "autoencoder.onnx", x)
    _, percentile = _run(copy / ood.GRAPH_FILE, x)
    numpy = old.score("denoise", x, outputs=plain)
    assert np.abs(percentile - numpy.percentile).max() < 0.05
    # the same numbers at half resolution give other percentiles: the scale is the version's
    assert np.abs(new.score("denoise", x, outputs=plain).percentile - numpy.percentile).max() > 1.0
    assert card["ood"]["graph"]["version"] == 2 and not old.graph.stale  # type: ignore[union-attr]
    # The version edited by hand, the graph not rebuilt: it describes at the other resolution.
    card["ood"]["version"] = 3
    stale = ood.load(copy, card).graph.stale  # type: ignore[union-attr]
    assert "built for version 2 of the score" in stale and "holds version 3" in stale
    del card["ood"]["graph"]["version"]  # graphs written before version 3 name none: version 2's
    assert "built for version 2" in ood.load(copy, card).graph.stale  # type: ignore[union-attr]
    card["ood"]["version"] = 2
    assert ood.load(copy, card).graph.stale == ""  # type: ignore[union-attr]
    card["ood"]["version"] = 1
    with pytest.raises(ood.CalibrationError, match="not a version-2 or 3 calibration"):
        ood.load(copy, card)
