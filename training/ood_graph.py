"""``scored.onnx``: the autoencoder graph with its out-of-distribution score as an extra output.

    python -m training.ood_graph models/mnist-s2d
    python -m training.ood_graph --all

``contract.ood`` scores a ``denoise`` view with numpy: the descriptor of the input and of the
output, a whitened distance to the training clusters, standardising (by noise level for some
views), and the percentile among validation images. For a batch of one that is some twenty numpy
calls of 3 to 25 µs each, as much CPU as a third of the model itself; as ONNX nodes after the
model's own they cost one call (docs/benchmarks.md, "The score inside the graph"). This module
appends those nodes to a copy of ``autoencoder.onnx``: the same first output (``denoised``,
computed by the same nodes), then ``ood_percentile``, each image's percentile. The view's
standardising and percentile tables become constants of the graph; the card's ``ood.graph``
records the sha256 of the view they came from, and the service does not use a graph whose view
differs from its card's (``contract.ood``).

At a batch of one, each node costs onnxruntime more than its arithmetic, so the graph is written
for few nodes: linear steps are folded into the whitening matrix and the cluster centres, and the
percentile table is a sum of clipped ramps (one matrix product) rather than a search.

``training.calibrate`` writes it after every calibration whose ``denoise`` view the graph can
compute; this command rebuilds it from a card and its ``ood.npz`` without calibrating again.
tests/training/test_ood_graph.py checks its percentiles against ``contract.ood`` on real images.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from contract import ood
from contract.card import graph_path, model_dirs, update_card

log = logging.getLogger(__name__)

MODELS_DIR = Path("models")
VIEW = "denoise"
# A graph whose percentiles stray further than this from contract.ood's (in percentile points,
# on the check images of ``write``) is not written, and the service scores in numpy instead. It
# guards a user's model against a graph that float32 cannot carry (an ill-conditioned whitening),
# not against rounding: the shipped graphs agree within 0.05 (tests/training/test_ood_graph.py),
# but a table of few validation images is steep, and float32's rounding of the value then moves
# the percentile more (0.13 on the 30 validation images of tests/training/test_own_images_end_to_end.py).
AGREEMENT = 0.5


class _Nodes:
    """Nodes and constants appended to a graph, every name under ``ood/``."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        name = f"ood/c{len(self.constants)}"
        self.constants.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        self._count += 1
        name = out or f"ood/{op_type.lower()}{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name


# Per picture, the graph's descriptor is contract.ood.descriptor before its last linear step:
# 49 pooled pixels, 7 grey-level shares, then the logs of the ink and edge *sums* (not means),
# each held above 784·eps. The 1/784 scaling and the stroke statistics' [log ink, log edge,
# difference] are a linear map of those two logs, folded into the whitening (_folded).
_CELLS, _LEVELS = 49, len(ood.HISTOGRAM_EDGES)
_RAW = _CELLS + _LEVELS + 2  # the graph's descriptor of one picture
_STROKE = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]])


def _descriptor(g: _Nodes, images: str, side: int = 28, pool: int = 4, scale: int = 1) -> str:
    """The raw descriptor of ``[m, 1, side, side]``: ``[m, 58, 1, 1]`` (see ``_RAW``), described
    after averaging each ``scale``×``scale`` square of pixels (``contract.ood.descriptor``)."""
    if scale > 1:
        images = g.op("AveragePool", images, kernel_shape=[scale, scale], strides=[scale, scale])
        side, pool = side // scale, pool // scale
    cells = side // pool
    pooled = g.op("AveragePool", images, kernel_shape=[pool, pool], strides=[pool, pool])
    pooled = g.op("Reshape", pooled, g.const([0, cells * cells, 1, 1]))
    edges = g.const(np.reshape(ood.level_edges(scale), (-1, 1, 1)), np.float32)  # [m, 7, side, side]
    above = g.op("Cast", g.op("Greater", images, edges), to=TensorProto.FLOAT)
    above = g.op("ReduceMean", above, g.const([2, 3]), keepdims=1)

    # The neighbour differences on views of the top-left (side-1)² pixels, as numpy takes them
    # (a 2x2 conv instead went through onnxruntime's blocked layout: twice the time at batch 32).
    def window(rows: int, cols: int) -> str:
        starts, ends = g.const([rows, cols]), g.const([rows + side - 1, cols + side - 1])
        return g.op("Slice", images, starts, ends, g.const([2, 3]))

    neighbours = g.op("Concat", window(0, 1), window(1, 0), axis=1)  # right of, below each pixel
    # Abs then ReduceSum: ReduceL1 in one node measured 3 µs slower at a batch of one
    edge = g.op("Abs", g.op("Sub", neighbours, window(0, 0)))
    edge = g.op("ReduceSum", edge, g.const([1, 2, 3]), keepdims=1)  # [m, 1, 1, 1]
    ink = g.op("ReduceSum", images, g.const([1, 2, 3]), keepdims=1)
    # log(max(sum, 0) + 784·eps) = log(max(mean, 0) + eps) + log 784 (edge >= 0 anyway)
    sums = g.op("Relu", g.op("Concat", ink, edge, axis=1))
    logs = g.op("Log", g.op("Add", sums, g.const(side * side * ood._STROKE_EPS, np.float32)))
    return g.op("Concat", pooled, above, logs, axis=1)


def _folded(distance: ood.Distance, pictures: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``distance``'s whitening and centres for the raw descriptors of ``pictures`` pictures.

    contract.ood's descriptor is ``raw @ A + a`` per picture (A: identity on the pixels and
    levels, the stroke map on the two logs; a: the log-784 shift), so ``descriptor @ W = raw @
    (A W) + a W``, and the constant moves into the centres."""
    per_picture = np.zeros((_RAW, _RAW + 1))
    per_picture[: _RAW - 2, : _RAW - 2] = np.eye(_RAW - 2)
    per_picture[_RAW - 2 :, _RAW - 2 :] = _STROKE
    shift = np.zeros(_RAW + 1)
    shift[_RAW - 2 :] = -np.log(side * side) * _STROKE.sum(axis=0)
    linear = np.kron(np.eye(pictures), per_picture)
    whiten = np.asarray(distance.whiten, np.float64)
    centres = np.asarray(distance.centres, np.float64) - np.tile(shift, pictures) @ whiten
    return linear @ whiten, centres


def _shared_basis(whitenings: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One projection ``P`` ``[r, r]`` and per-distance weights ``λ`` ``[r, J]`` with
    ``||x W_j||² = Σ_i λ_ij (x P)_i²`` for every raw vector ``x`` (``W_j``: ``[r, d]``, rank r).

    Two quadratic forms, one of them positive definite, are diagonal in one basis: with ``Q_1 = L
    Lᵀ`` and ``L⁻¹ Q_2 L⁻ᵀ = U Λ Uᵀ``, ``P = L U`` gives ``P Pᵀ = Q_1`` and ``P Λ Pᵀ = Q_2``. So the
    pictures' and the strokes' distances share one product with the vectors, where the
    whitenings side by side took twice the constant and twice the arithmetic (and at a batch of
    one the constant's bytes, read from memory on every request, are most of a product's cost).
    Where ``Λ`` spans many orders of magnitude (a barely trained model) float32 carries this
    basis less well than the whitenings themselves, and ``write`` falls back to those."""
    forms = [w @ w.T for w in whitenings]
    lower = np.linalg.cholesky(forms[0])
    if len(forms) == 1:
        return lower, np.ones((len(lower), 1))
    inverse = np.linalg.inv(lower)
    eigenvalues, rotation = np.linalg.eigh(inverse @ forms[1] @ inverse.T)
    return lower @ rotation, np.stack([np.ones_like(eigenvalues), eigenvalues], axis=1)


def _side_by_side(whitenings: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The whitenings side by side, ``[r, J·d]``, and weights ``[J·d, J]`` that sum each one's
    squared coordinates: the construction before :func:`_shared_basis`."""
    d = whitenings[0].shape[1]
    return np.concatenate(whitenings, axis=1), np.kron(np.eye(len(whitenings)), np.ones((d, 1)))


def _distances(
    g: _Nodes, vectors: str, distances: list[ood.Distance], pictures: int, side: int, shared: bool = True
) -> str:
    """``contract.ood.Distance`` of ``[n, pictures·58]`` raw descriptors (of ``side``×``side``
    pictures) for each of ``distances`` (one or two): log squared Mahalanobis distance to the
    nearest centre, ``[n, len(distances)]``. As numpy computes it, ``||y||² + min_c (-2 y·c +
    ||c||²)`` (held above 0), in the basis of :func:`_shared_basis`, ``z = x P``: ``||y_j||²`` is
    ``z² @ λ_j``, and ``y_j·c = x (A W_j) c = z (P⁻¹ A W_j c)``, a matrix product of the centres
    for all distances at once. ``shared=False``: ``z`` is the whitened vectors side by side
    (:func:`_side_by_side`), each distance's centres against its own block of ``z``."""
    if not 1 <= len(distances) <= 2:
        raise ValueError(f"the graph measures one or two distances of a vector, not {len(distances)}")
    folded = [_folded(d, pictures, side) for d in distances]
    project, weights = (_shared_basis if shared else _side_by_side)([w for w, _ in folded])
    count, k = len(folded), max(len(c) for _, c in folded)
    cross = np.zeros((project.shape[1], count * k))
    norms = np.zeros(count * k)
    for j, (whiten, centres) in enumerate(folded):
        # fewer centres than the others: the first one repeated, which leaves the nearest unchanged
        c = np.concatenate([centres, np.repeat(centres[:1], k - len(centres), axis=0)])
        if shared:
            cross[:, j * k : (j + 1) * k] = np.linalg.solve(project, -2.0 * whiten @ c.T)
        else:
            d = whiten.shape[1]
            cross[j * d : (j + 1) * d, j * k : (j + 1) * k] = -2.0 * c.T
        norms[j * k : (j + 1) * k] = np.square(c).sum(axis=1)
    z = g.op("MatMul", vectors, g.const(project, np.float32))  # [n, r]; side by side [n, J·d]
    to_centres = g.op("Gemm", z, g.const(cross, np.float32), g.const(norms, np.float32))  # [n, J·k]
    to_centres = g.op("Reshape", to_centres, g.const([-1, count, k]))
    nearest = g.op("ReduceMin", to_centres, g.const([2]), keepdims=0)
    own = g.op("MatMul", g.op("Mul", z, z), g.const(weights, np.float32))  # [n, J]
    # numpy's log(max(d², 0) + 1e-8), to within 1e-8 of d²: one node
    d2 = g.op("Max", g.op("Add", own, nearest), g.const(ood._EPS, np.float32))
    return g.op("Log", d2)  # [n, J]


def _noise(g: _Nodes, images: str, side: int = 28) -> str:
    """``contract.ood.noise_estimate``: Immerkær's kernel, mean absolute response, ``[n, 1]``.

    The kernel is the outer product of [1, -2, 1] with itself, so the response is a second
    difference along the rows of one along the columns: two small matrix products (a 3x3 conv
    went through onnxruntime's blocked layout, slower at every batch size)."""
    second = np.zeros((side, side - 2), np.float32)
    for j in range(side - 2):
        second[j : j + 3, j] = (1.0, -2.0, 1.0)
    across = g.op("MatMul", images, g.const(second * ood._IMMERKAER, np.float32))  # [n, 1, side, side-2]
    # Transposed, so that the second product is again one matrix product over the whole batch
    # (the response comes out transposed; its mean absolute value is the same).
    across = g.op("Transpose", across, perm=[0, 1, 3, 2])
    response = g.op("Abs", g.op("MatMul", across, g.const(second, np.float32)))  # [n, 1, side-2, side-2]
    return g.op("ReduceMean", response, g.const([2, 3]), keepdims=0)


def _weights(g: _Nodes, sigma: str, centres: list[float]) -> str:
    """``[n, len(centres)]``: each image's weights of the centres, as ``np.interp`` over them
    weighs its two neighbours (all on the nearest one beyond the outermost)."""
    c = np.asarray(centres, np.float64)
    gaps = np.maximum(np.diff(c), 1e-12)
    # a_j: how far past centre j toward j+1, in [0, 1]; w = [1 - a_0, a_0 - a_1, …, a_last]
    # (sigma - c_j) / gap_j as sigma · (1/gap_j) - c_j/gap_j: noise estimates and centres are
    # below 1 and the gaps not tiny, so float32 loses nothing that matters to the sum of weights
    shift = g.op("Gemm", sigma, g.const(1.0 / gaps[None, :], np.float32), g.const(-c[:-1] / gaps, np.float32))
    a = g.op("Clip", shift, g.const(0.0, np.float32), g.const(1.0, np.float32))
    steps = np.zeros((len(c) - 1, len(c)))
    steps[np.arange(len(c) - 1), np.arange(len(c) - 1)] = -1.0
    steps[np.arange(len(c) - 1), np.arange(1, len(c))] = 1.0
    first = np.eye(1, len(c))[0]
    return g.op("Gemm", a, g.const(steps, np.float32), g.const(first, np.float32))


def ramps(values: np.ndarray, percentiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.interp(v, values, percentiles, left=0, right=100)`` as a sum of clipped ramps:
    ``sum_k weight_k · clip((v - knot_k) · scale_k, 0, 1)`` (``values`` strictly increasing,
    ending at percentile 100). Every term is in [0, weight_k], so float32 loses nothing to
    cancellation. A first percentile above 0 (ties at the smallest value) is a step, here a ramp
    a millionth wide."""
    values, percentiles = np.asarray(values, np.float64), np.asarray(percentiles, np.float64)
    knots, widths, weights = values[:-1], np.diff(values), np.diff(percentiles)
    if percentiles[0] > 0:
        width = 1e-6 * max(1.0, abs(float(values[0])))
        knots = np.concatenate([[values[0] - width], knots])
        widths = np.concatenate([[width], widths])
        weights = np.concatenate([[percentiles[0]], weights])
    return knots, 1.0 / widths, weights


def _percentile(g: _Nodes, view: dict[str, Any], logs: str, mix: np.ndarray, sigma: str | None) -> str:
    """Steps 2 and 3 of ``contract.ood`` on the log distances ``[n, J]``, of which the view's
    signals are ``logs @ mix`` (``mix`` ``[J, signals]``): the standardised signals' largest,
    through the view's percentile table(s), ``[n]``."""
    names = view["signals"]
    median = np.array([view["standardise"][name]["median"] for name in names], np.float64).T  # [bins, s]
    iqr = np.array([view["standardise"][name]["iqr"] for name in names], np.float64).T
    tables = ood.percentile_tables(view)
    plain = mix.shape == (1, 1) and mix[0, 0] == 1.0
    fold = plain and len(median) == 1  # (v - m) / iqr - knot: one shift and scale
    if fold:
        value = logs
    elif len(median) == 1:
        # (logs @ mix - m) / iqr as one product and shift; log distances and their standardised
        # values are a few units, so float32 keeps its precision
        z = g.op("Gemm", logs, g.const(mix / iqr, np.float32), g.const(-median[0] / iqr[0], np.float32))
    else:
        assert sigma is not None
        stacked = logs if plain else g.op("MatMul", logs, g.const(mix, np.float32))  # [n, s]
        w = _weights(g, sigma, view["noise_centres"])
        z = g.op(
            "Div",
            g.op("Sub", stacked, g.op("MatMul", w, g.const(median, np.float32))),
            g.op("MatMul", w, g.const(iqr, np.float32)),
        )
    if not fold:
        value = z if len(names) == 1 else g.op("ReduceMax", z, g.const([1]), keepdims=1)  # [n, 1]
    knots, scales, weights, blocks = [], [], [], []
    for t, (table, percentiles) in enumerate(tables):
        k, sc, share = ramps(table, percentiles)
        if fold:
            k, sc = median[0, 0] + iqr[0, 0] * k, sc / iqr[0, 0]
        knots.append(k)
        scales.append(sc)
        weights.append(share)
        blocks += [t] * len(k)
    ramp = g.op("Mul", g.op("Sub", value, g.const(np.concatenate(knots)[None, :], np.float32)),
                g.const(np.concatenate(scales)[None, :], np.float32))  # fmt: skip
    ramp = g.op("Clip", ramp, g.const(0.0, np.float32), g.const(1.0, np.float32))
    per_table = np.zeros((len(blocks), len(tables)))
    per_table[np.arange(len(blocks)), blocks] = np.concatenate(weights)
    # a matrix, not a vector, as the second factor: the vector's product measured 3 µs per image
    # slower at a batch of 32
    percentile = g.op("MatMul", ramp, g.const(per_table, np.float32))  # [n, tables]
    if len(tables) == 1:
        return g.op("Reshape", percentile, g.const([-1]), out=ood.PERCENTILE_OUTPUT)
    assert sigma is not None
    w = _weights(g, sigma, view["table_noise_centres"])
    return g.op("ReduceSum", g.op("Mul", percentile, w), g.const([1]), keepdims=0, out=ood.PERCENTILE_OUTPUT)


def _mix(signals: list[str], measured: list[str]) -> np.ndarray:
    """``[J, S]``: each signal as a combination of the measured log distances (``contract.ood``:
    ``strokes`` is the pictures' less the strokes')."""
    mix = np.zeros((len(measured), len(signals)))
    for j, name in enumerate(signals):
        for distance, sign in (("pictures", 1.0), ("strokes", -1.0)) if name == "strokes" else ((name, 1.0),):
            mix[measured.index(distance), j] = sign
    return mix


def build(
    autoencoder: onnx.ModelProto,
    view: dict[str, Any],
    distances: dict[str, ood.Distance],
    scale: int = ood.SCALE,
    shared: bool = True,
) -> onnx.ModelProto:
    """A copy of ``autoencoder`` whose extra output is the view's percentile per image
    (``scale``: the calibration's, ``contract.ood.SCALES``; ``shared``: see :func:`_distances`)."""
    if not ood.graph_scorable(view):
        raise ValueError(f"signals {view['signals']} need more than the input and output")
    graph = autoencoder.graph
    image, denoised = graph.input[0].name, graph.output[0].name
    g = _Nodes()
    reads = sorted(ood.reads(view["signals"]))
    # Each kind of vector described once, and its distances measured together: the input alone,
    # or the input and output interleaved (each image's pair side by side; pictures, strokes).
    alone = [d for d in reads if d == "input"]
    groups = [names for names in (alone, [d for d in reads if d != "input"]) if names]
    measured, logs = [], []
    for names in groups:
        if names == ["input"]:
            vectors, pictures = g.op("Reshape", _descriptor(g, image, scale=scale), g.const([-1, _RAW])), 1
        else:
            pairs = g.op("Reshape", g.op("Concat", image, denoised, axis=1), g.const([-1, 1, 28, 28]))
            vectors = g.op("Reshape", _descriptor(g, pairs, scale=scale), g.const([-1, 2 * _RAW]))
            pictures = 2
        logs.append(_distances(g, vectors, [distances[d] for d in names], pictures, 28 // scale, shared))
        measured += names
    stacked = logs[0] if len(logs) == 1 else g.op("Concat", *logs, axis=1)  # [n, J]
    sigma = _noise(g, image) if ood.needs_noise(view) else None
    output = _percentile(g, view, stacked, _mix(view["signals"], measured), sigma)
    extra = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch"])
    scored = helper.make_graph(
        [*graph.node, *g.nodes],
        graph.name,
        list(graph.input),
        [*graph.output, extra],
        [*graph.initializer, *g.constants],
        doc_string=graph.doc_string,
    )
    model = helper.make_model(
        scored, opset_imports=list(autoencoder.opset_import), ir_version=autoencoder.ir_version
    )
    model.doc_string = autoencoder.doc_string
    for entry in autoencoder.metadata_props:
        model.metadata_props.add(key=entry.key, value=entry.value)
    onnx.checker.check_model(model)
    return model


def check_images(images: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """``[n, 1, 28, 28]`` images a built graph is checked on: ``images`` (e.g. validation's) clean
    and at σ = 0.3, pen strokes, and uniform noise (pen strokes alone where none are given)."""
    from training import outsiders
    from training.noise import noisy_numpy

    parts = [outsiders.strokes(100, seed), outsiders.uniform_noise(50, seed)]
    if images is not None:
        own = np.asarray(images, np.float32).reshape(-1, 28, 28)
        parts += [own, noisy_numpy("gaussian", own, 0.3, seed)]
    return np.concatenate(parts).astype(np.float32)[:, None]


def disagreement(model: onnx.ModelProto, calibration: ood.Calibration, images: np.ndarray) -> str:
    """What keeps a scored graph from scoring as ``calibration`` does in numpy on ``images``:
    a percentile more than ``AGREEMENT`` away, or a flag that differs where numpy's percentile is
    not within ``AGREEMENT`` of the threshold (there the two may round to either side). "" if none."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs, percentile = session.run(None, {session.get_inputs()[0].name: images})
    numpy = calibration.score(VIEW, images, outputs=outputs)
    graph = calibration.percentile_scores(VIEW, percentile)
    gap = np.abs(graph.percentile - numpy.percentile)
    if not np.isfinite(gap).all() or gap.max() > AGREEMENT:
        worst = int(np.argmax(np.where(np.isfinite(gap), gap, np.inf)))
        return (
            f"its percentile {float(graph.percentile[worst]):.3f} against numpy's "
            f"{float(numpy.percentile[worst]):.3f} (image {worst} of {len(images)})"
        )
    clear = np.abs(numpy.percentile - numpy.threshold) > AGREEMENT
    differ = int(((graph.in_distribution != numpy.in_distribution) & clear).sum())
    return f"{differ} of {len(images)} images flagged otherwise than numpy flags them" if differ else ""


def write(
    model_dir: Path,
    card: dict[str, Any],
    block: dict[str, Any],
    images: np.ndarray | None = None,
) -> dict[str, Any] | None:
    """Write ``scored.onnx`` for the card's ``denoise`` view and set ``block["graph"]`` to its
    reference (returned too); None, with no ``graph`` key and no file left behind, when the view
    reads more than input and output, or when the graph does not score the check images
    (:func:`check_images` of ``images``) as numpy does (:func:`disagreement`; logged): built with
    one projection for both distances, else with the whitenings side by side. The distances are
    the ones ``block``'s parameters file holds, which must be written already."""
    path = model_dir / ood.GRAPH_FILE
    view = block["views"].get(VIEW)
    block.pop("graph", None)
    if view is None or not ood.graph_scorable(view):
        path.unlink(missing_ok=True)
        return None
    source = graph_path(model_dir, card, "autoencoder")
    autoencoder = onnx.load(str(source))
    calibration = ood.load(model_dir, {**card, "ood": block})
    assert calibration is not None
    checked = check_images(images)
    for shared in (True, False):
        model = build(autoencoder, view, calibration.distances, ood.SCALES[block["version"]], shared)
        problem = disagreement(model, calibration, checked)
        if not problem:
            break
    else:
        log.warning("%s: no %s, the service will score in numpy: %s", model_dir, ood.GRAPH_FILE, problem)
        path.unlink(missing_ok=True)
        return None
    fd, tmp = tempfile.mkstemp(prefix=".scored.", suffix=".tmp", dir=model_dir)
    with os.fdopen(fd, "wb") as f:
        f.write(model.SerializeToString())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    block["graph"] = ood.graph_reference(
        model_dir, VIEW, view, card["sha256"][card["graphs"]["autoencoder"]], block["version"]
    )
    return block["graph"]


def rebuild(model_dir: Path) -> dict[str, Any] | None:
    """Rewrite ``scored.onnx`` and the card's ``ood.graph`` from the card and ``ood.npz`` as they are."""
    card = json.loads((model_dir / "card.json").read_text())
    block = card.get("ood")
    if block is None:
        raise SystemExit(
            f"{model_dir}: no 'ood' block to build from (python -m training.calibrate {model_dir})"
        )
    ref = write(model_dir, card, block)
    update_card(model_dir, ood=block)
    return ref


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.ood_graph",
        description="Rebuild scored.onnx (the autoencoder graph with its OOD signals) from a card.",
    )
    parser.add_argument("models", nargs="*", type=Path, help="model directories, e.g. models/mnist-s2d")
    parser.add_argument("--all", action="store_true", help=f"every model under {MODELS_DIR}/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    dirs = model_dirs(MODELS_DIR) if args.all else list(args.models)
    if not dirs:
        parser.error("name model directories or pass --all")
    for model_dir in dirs:
        ref = rebuild(model_dir)
        log.info(
            "%s: %s",
            model_dir,
            f"wrote {ood.GRAPH_FILE}" if ref else "its denoise view needs more than the graph",
        )


if __name__ == "__main__":
    main()
