"""contract.ood: signals, the fitted distances, the view calibration and loading a card's block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contract import ood


def _digits_like(n: int, seed: int) -> np.ndarray:
    """Bars of random position and brightness on black, lightly noisy: a toy in-distribution set."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), np.float32)
    for i in range(n):
        col = int(rng.integers(6, 20))
        x[i, 4:24, col : col + 3] = rng.uniform(0.6, 1.0)
    return np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)


def test_noise_estimate_recovers_the_std_of_white_noise_on_a_flat_image() -> None:
    rng = np.random.default_rng(0)
    for s in (0.05, 0.1, 0.2):
        noisy = 0.5 + s * rng.standard_normal((64, 28, 28)).astype(np.float32)
        assert np.median(ood.noise_estimate(noisy)) == pytest.approx(s, rel=0.05)


def test_noise_estimate_reads_zero_on_a_flat_image_and_accepts_a_channel_axis() -> None:
    flat = np.full((3, 1, 28, 28), 0.3, np.float32)
    assert np.allclose(ood.noise_estimate(flat), 0.0)


@pytest.mark.parametrize("scale", [1, 2])
def test_descriptor_pools_pixels_and_counts_grey_levels(scale: int) -> None:
    x = np.zeros((1, 28, 28), np.float32)
    x[0, :4, :4] = 1.0  # one full pooled block, 16 of 784 pixels lit
    d = ood.descriptor(x, scale=scale)
    grey = 49 + len(ood.HISTOGRAM_EDGES)
    assert d.shape == (1, grey + 3)
    assert d[0, 0] == pytest.approx(1.0) and d[0, 1:49].sum() == 0
    assert np.allclose(d[0, 49:grey], 16 / 784)
    # Stroke statistics: 16/784 of ink; the block's edge is 4 steps on its right and 4 below, at
    # half resolution 2 and 2 of 196 pixels.
    ink, edge = 16 / 784, (8 / 784 if scale == 1 else 4 / 196)
    assert np.allclose(
        d[0, grey:], [np.log(ink + 1e-3), np.log(edge + 1e-3), np.log(edge + 1e-3) - np.log(ink + 1e-3)]
    )


@pytest.mark.parametrize(("pool", "scale"), [(4, 1), (2, 1), (4, 2), (2, 2)])
def test_descriptor_matches_plain_cell_means_and_neighbour_differences(pool: int, scale: int) -> None:
    x = np.random.default_rng(3).random((5, 28, 28), dtype=np.float32)
    cells, side = 28 // pool, 28 // scale
    d = ood.descriptor(x, pool=pool, scale=scale)
    means = x.reshape(5, cells, pool, cells, pool).mean(axis=(2, 4)).reshape(5, -1)
    assert np.allclose(d[:, : cells * cells], means, atol=1e-6)
    small = x.reshape(5, side, scale, side, scale).mean(axis=(2, 4))
    levels = ood.level_edges(scale)
    shares = (small.reshape(5, -1, 1) > levels).mean(axis=1)
    assert np.allclose(d[:, cells * cells : cells * cells + 7], shares)
    edge = (
        np.abs(np.diff(small, axis=2))[:, : side - 1, :].sum(axis=(1, 2))
        + np.abs(np.diff(small, axis=1))[:, :, : side - 1].sum(axis=(1, 2))
    ) / side**2
    assert np.allclose(d[:, -2], np.log(edge + 1e-3), atol=1e-6)


def test_this_version_describes_at_half_resolution_and_version_2_at_full() -> None:
    x = np.random.default_rng(4).random((3, 28, 28), dtype=np.float32)
    assert ood.SCALES == {2: 1, 3: 2} and ood.SCALE == ood.SCALES[ood.VERSION] == 2
    assert np.array_equal(ood.descriptor(x), ood.descriptor(x, scale=2))
    assert not np.allclose(ood.descriptor(x, scale=1), ood.descriptor(x, scale=2))
    assert np.array_equal(ood.level_edges(1), np.float32(ood.HISTOGRAM_EDGES))


def test_no_average_of_8_bit_pixels_falls_on_a_grey_level() -> None:
    """A 2x2 average of 8-bit pixels is a multiple of 1/1020, and the plain levels are among them
    (0.05 = 51/1020): which side such a square fell on was the rounding's choice, and numpy and
    onnxruntime round differently. The half-resolution levels sit half a step away from every one."""
    averages = np.arange(4 * 255 + 1) / 1020
    for level in ood.level_edges(2).astype(np.float64):
        assert np.abs(averages - level).min() > 4e-4
    assert np.isin(np.float32(ood.HISTOGRAM_EDGES), np.float32(averages)).all()


@pytest.mark.parametrize(("scale", "margin"), [(1, 1.0), (2, 0.5)])
def test_thin_strokes_have_more_edge_per_ink_than_a_filled_shape(scale: int, margin: float) -> None:
    stroke = np.zeros((1, 28, 28), np.float32)
    stroke[0, 4:24, 13:15] = 1.0  # a "1": 40 pixels of pen
    filled = np.zeros((1, 28, 28), np.float32)
    filled[0, 4:24, 8:20] = 1.0  # a garment-like block
    ratio = ood.descriptor(np.concatenate([stroke, filled]), scale=scale)[:, -1]
    # log edge − log ink: e^1 times as much edge per ink at full resolution; at half, where the
    # stroke is one averaged pixel wide, e^0.5 (0.80 measured)
    assert ratio[0] > ratio[1] + margin


def test_distance_is_the_mahalanobis_distance_with_one_cluster() -> None:
    rng = np.random.default_rng(1)
    cov = np.array([[4.0, 1.0], [1.0, 1.0]])
    train = rng.multivariate_normal([1.0, -2.0], cov, size=20000)
    distance = ood.fit_distance(train, clusters=1, shrinkage=0.0)
    probe = np.array([[3.0, 0.0], [1.0, -2.0]])
    d = probe - train.mean(axis=0)
    expected = np.einsum("ij,jk,ik->i", d, np.linalg.inv(np.cov(train, rowvar=False)), d)
    assert np.exp(distance(probe)) == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_distance_to_the_nearest_cluster_is_small_for_each_cluster_and_large_between() -> None:
    rng = np.random.default_rng(2)
    train = np.concatenate([rng.normal(-5, 1, (500, 3)), rng.normal(5, 1, (500, 3))])
    distance = ood.fit_distance(train, clusters=2)
    near = distance(np.array([[-5.0, -5, -5], [5.0, 5, 5]]))
    between = distance(np.array([[0.0, 0, 0]]))
    assert near.max() < np.log(1.0) and between[0] > np.log(20.0)


def _view(seed: int = 3) -> tuple[dict, ood.Distance]:
    train = _digits_like(400, seed)
    distance = ood.fit_distance(ood.features("input", train, None, None))
    val = _digits_like(400, seed + 1)
    values = {"input": distance(ood.features("input", val, None, None))}
    return ood.fit_view(values, ood.noise_estimate(val)), distance


def test_fit_view_puts_the_threshold_at_its_percentile_of_validation() -> None:
    view, distance = _view()
    val = _digits_like(400, 4)
    scores = ood.to_percentiles(
        view, ood.combined(view, {"input": distance(ood.descriptor(val))}, ood.noise_estimate(val))
    )
    assert np.mean(~scores.in_distribution) <= 0.01
    assert view["threshold_percentile"] == ood.THRESHOLD_PERCENTILE
    assert view["table"] == sorted(view["table"]) and view["percentiles"][-1] == 100.0


def test_tied_values_map_to_the_upper_end_of_their_run() -> None:
    view = {
        "table": [0.0, 1.0, 1.0, 1.0, 2.0],
        "percentiles": [0.0, 25.0, 50.0, 75.0, 100.0],
        "threshold_percentile": 99.5,
    }
    scores = ood.to_percentiles(view, np.array([1.0, -1.0, 3.0]))
    assert scores.percentile.tolist() == [75.0, 0.0, 100.0]
    assert scores.in_distribution.tolist() == [True, True, False]


def test_outsiders_score_past_the_threshold() -> None:
    view, distance = _view()
    noise = np.random.default_rng(9).random((50, 28, 28), dtype=np.float32)
    scores = ood.to_percentiles(
        view, ood.combined(view, {"input": distance(ood.descriptor(noise))}, ood.noise_estimate(noise))
    )
    assert not scores.in_distribution.any() and (scores.percentile == 100.0).all()


def test_a_view_needing_the_output_refuses_to_score_without_it() -> None:
    distance = ood.fit_distance(ood.features("pictures", _digits_like(100, 1), _digits_like(100, 1), None))
    with pytest.raises(ood.CalibrationError, match="output"):
        ood.signals(["pictures"], _digits_like(2, 1), {"pictures": distance})


def _saved(tmp_path: Path) -> dict:
    view, distance = _view()
    block = {"version": ood.VERSION, "views": {"denoise": {**view, "signals": ["input"]}}}
    block["parameters"] = ood.save_distances(tmp_path, {"input": distance})
    card = {"id": "toy", "ood": block}
    (tmp_path / "card.json").write_text(json.dumps(card))
    return card


def test_load_round_trips_the_calibration(tmp_path: Path) -> None:
    card = _saved(tmp_path)
    calibration = ood.load(tmp_path, card)
    assert calibration is not None and calibration.views == ["denoise"]
    assert calibration.needs("denoise") == set()
    scores = calibration.score("denoise", _digits_like(20, 4)[:, None])
    assert len(scores) == 20 and scores.in_distribution.mean() >= 0.9


def _append_a_byte(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"\0")


def test_load_refuses_an_altered_parameters_file(tmp_path: Path) -> None:
    card = _saved(tmp_path)
    _append_a_byte(tmp_path / ood.PARAMETERS_FILE)
    with pytest.raises(ood.CalibrationError, match="sha256"):
        ood.load(tmp_path, card)


def test_load_refuses_an_unknown_signal_and_returns_none_without_a_block(tmp_path: Path) -> None:
    card = _saved(tmp_path)
    card["ood"]["views"]["denoise"]["signals"] = ["colour"]
    with pytest.raises(ood.CalibrationError, match="denoise"):
        ood.load(tmp_path, card)
    assert ood.load(tmp_path, {"id": "toy"}) is None


def test_descriptor_stays_finite_when_an_output_dips_below_zero() -> None:
    dark = np.full((1, 28, 28), -0.01, np.float32)  # what an unclamped graph may give for black
    assert np.isfinite(ood.descriptor(dark)).all()


def _shifting(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A signal whose typical value falls as the noise estimate rises (as a code's distance does):
    four noise groups, the cleanest one a full spread higher."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(4), n)
    sigma = 0.05 + 0.1 * group + rng.uniform(0, 0.02, 4 * n)
    value = rng.standard_normal(4 * n) + np.array([1.5, 0.5, 0.0, 0.0])[group]
    return {"input": value}, sigma, group


def test_per_noise_tables_flag_the_same_share_at_every_noise_level() -> None:
    values, sigma, _ = _shifting(5000, 1)
    pooled = ood.fit_view(values, sigma)
    tables = ood.fit_view(values, sigma, table_bins=4)
    assert "tables" not in pooled and len(tables["tables"]) == len(tables["table_noise_centres"]) == 4
    fresh, fresh_sigma, group = _shifting(5000, 2)  # new images of the same distribution
    flagged = {}
    for name, view in (("pooled", pooled), ("tables", tables)):
        scores = ood.to_percentiles(view, ood.combined(view, fresh, fresh_sigma), fresh_sigma)
        flagged[name] = [float(np.mean(~scores.in_distribution[group == g])) for g in range(4)]
    # One pooled 99.5th percentile: the clean group takes nearly all the flags (about 1.8 %).
    assert flagged["pooled"][0] > 0.012 and max(flagged["pooled"][2:]) < 0.002
    assert max(flagged["tables"]) < 0.009 and min(flagged["tables"]) > 0.002


def test_per_noise_percentiles_interpolate_between_the_two_nearest_tables() -> None:
    view = {
        "table": [0.0, 10.0],
        "tables": [[0.0, 10.0], [0.0, 20.0]],
        "table_noise_centres": [0.1, 0.3],
        "percentiles": [0.0, 100.0],
        "threshold_percentile": 99.5,
    }
    value = np.full(4, 5.0)
    scores = ood.to_percentiles(view, value, np.array([0.0, 0.1, 0.2, 0.5]))
    # 5 is the 50th percentile of the first table and the 25th of the second.
    assert scores.percentile.tolist() == pytest.approx([50.0, 50.0, 37.5, 25.0])
    with pytest.raises(ood.CalibrationError, match="noise estimate"):
        ood.to_percentiles(view, value)


def test_load_refuses_per_noise_tables_that_do_not_match(tmp_path: Path) -> None:
    card = _saved(tmp_path)
    view = card["ood"]["views"]["denoise"]
    view["tables"], view["table_noise_centres"] = [view["table"], view["table"][:-1]], [0.1, 0.2]
    with pytest.raises(ood.CalibrationError, match="per-noise tables"):
        ood.load(tmp_path, card)
    view["tables"][1] = view["table"]
    scores = ood.load(tmp_path, card).score("denoise", _digits_like(20, 4)[:, None])  # type: ignore[union-attr]
    assert len(scores) == 20 and scores.in_distribution.mean() >= 0.9


def _with_graph(tmp_path: Path) -> dict:
    """A card whose calibration names a scored graph (load checks the reference, not the graph)."""
    card = _saved(tmp_path)
    card.update(graphs={"autoencoder": "autoencoder.onnx"}, sha256={"autoencoder.onnx": "ae" * 32})
    (tmp_path / ood.GRAPH_FILE).write_bytes(b"a scored graph")
    card["ood"]["graph"] = ood.graph_reference(
        tmp_path, "denoise", card["ood"]["views"]["denoise"], "ae" * 32
    )
    return card


def test_load_finds_the_scored_graph_and_its_percentile_output(tmp_path: Path) -> None:
    card = _with_graph(tmp_path)
    calibration = ood.load(tmp_path, card)
    assert calibration is not None and calibration.graph is not None
    assert calibration.graph.path == tmp_path / ood.GRAPH_FILE
    assert calibration.graph.outputs == ("ood_percentile",) and calibration.graph.stale == ""
    # the digest is of the view as the card holds it: a key order does not change it, a value does
    view = card["ood"]["views"]["denoise"]
    assert ood.view_digest(dict(reversed(list(view.items())))) == ood.view_digest(view)
    view["tables"] = [view["table"]]
    view["table_noise_centres"] = [0.1]
    calibration = ood.load(tmp_path, card)
    assert calibration is not None and calibration.graph is not None
    assert "another calibration of view 'denoise'" in calibration.graph.stale


def test_load_refuses_a_missing_or_altered_scored_graph_and_marks_a_stale_one(tmp_path: Path) -> None:
    card = _with_graph(tmp_path)
    _append_a_byte(tmp_path / ood.GRAPH_FILE)
    with pytest.raises(ood.CalibrationError, match="sha256 differs"):
        ood.load(tmp_path, card)
    (tmp_path / ood.GRAPH_FILE).unlink()
    with pytest.raises(ood.CalibrationError, match="missing"):
        ood.load(tmp_path, card)
    card = _with_graph(tmp_path)
    assert ood.load(tmp_path, card).graph.stale == ""  # type: ignore[union-attr]
    card["sha256"]["autoencoder.onnx"] = "0f" * 32  # re-exported since the graph was built
    graph = ood.load(tmp_path, card).graph  # type: ignore[union-attr]
    assert graph is not None and "built from another autoencoder.onnx" in graph.stale
    assert "python -m training.ood_graph" in graph.stale
    card = _with_graph(tmp_path)
    card["ood"]["views"]["denoise"]["signals"] = ["input", "reconstruction"]  # not one the graph has
    with pytest.raises(ood.CalibrationError, match="does not name a view"):
        ood.load(tmp_path, card)


def test_percentile_scores_flag_past_the_views_threshold(tmp_path: Path) -> None:
    card = _with_graph(tmp_path)
    calibration = ood.load(tmp_path, card)
    assert calibration is not None
    x = np.concatenate([_digits_like(20, 4), np.random.default_rng(1).random((5, 28, 28), np.float32)])
    numpy = calibration.score("denoise", x[:, None])
    given = calibration.percentile_scores(
        "denoise", numpy.percentile.astype(np.float32)
    )  # as a graph gives it
    assert given.threshold == 99.5 and given.value is None
    assert (given.in_distribution == numpy.in_distribution).all() and not given.in_distribution[-5:].any()
    edge = calibration.percentile_scores("denoise", np.array([99.5, 99.51], np.float32))
    assert edge.in_distribution.tolist() == [True, False]


def _blobs(n: int, seed: int) -> np.ndarray:
    """Filled squares of random size and place: what a toy 'garment' model knows."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), np.float32)
    for i in range(n):
        size, top, left = (int(v) for v in (rng.integers(10, 18), rng.integers(3, 8), rng.integers(3, 8)))
        x[i, top : top + size, left : left + size] = rng.uniform(0.5, 1.0)
    return x


def test_strokes_signal_is_the_pictures_distance_less_the_strokes_distance() -> None:
    blobs, bars = _blobs(200, 1), _digits_like(200, 2)
    distances = {
        "pictures": ood.fit_distance(ood.features("pictures", blobs, blobs, None)),
        "strokes": ood.fit_distance(ood.features("pictures", bars, bars, None)),
    }
    x = np.concatenate([_blobs(20, 3), _digits_like(20, 4)])
    values = ood.signals(["pictures", "strokes"], x, distances, outputs=x)
    vectors = ood.features("pictures", x, x, None)
    assert np.allclose(values["pictures"], distances["pictures"](vectors))
    assert np.allclose(values["strokes"], distances["pictures"](vectors) - distances["strokes"](vectors))
    # the same without the pictures signal beside it
    alone = ood.signals(["strokes"], x, distances, outputs=x)
    assert np.array_equal(alone["strokes"], values["strokes"])
    # a bar is nearer the bars than the blobs, a blob the reverse: the ratio tells them apart
    assert values["strokes"][20:].min() > values["strokes"][:20].max()
    with pytest.raises(ood.CalibrationError, match="output"):
        ood.signals(["strokes"], x, distances)
    with pytest.raises(ood.CalibrationError, match="no fitted distance"):
        ood.signals(["strokes"], x, {"pictures": distances["pictures"]}, outputs=x)


def test_load_needs_both_distances_of_the_strokes_signal(tmp_path: Path) -> None:
    view, distance = _view()
    block = {"version": ood.VERSION, "views": {"denoise": {**view, "signals": ["pictures", "strokes"]}}}
    block["parameters"] = ood.save_distances(tmp_path, {"pictures": distance})
    card = {"id": "toy", "ood": block}
    with pytest.raises(ood.CalibrationError, match="'strokes'"):
        ood.load(tmp_path, card)
    block["parameters"] = ood.save_distances(tmp_path, {"pictures": distance, "strokes": distance})
    calibration = ood.load(tmp_path, card)
    assert calibration is not None and set(calibration.distances) == {"pictures", "strokes"}
    assert calibration.needs("denoise") == {"output"} and ood.graph_scorable(block["views"]["denoise"])
