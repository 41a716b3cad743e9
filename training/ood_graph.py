"""``scored.onnx``: the autoencoder graph with its out-of-distribution signals as extra outputs.

    python -m training.ood_graph models/mnist-s2d
    python -m training.ood_graph --all

``contract.ood`` computes a ``denoise`` view's signals with numpy: the descriptor of the input and
of the output, a whitened distance to the training clusters, and for some views the noise
estimate. For a batch of one that is some twenty numpy calls of 3 to 25 µs each, as much CPU as
a third of the model itself; as ONNX nodes after the model's own they cost one call
(docs/benchmarks.md, "The score inside the graph"). This module appends those nodes to a copy of
``autoencoder.onnx``: the same first output (``denoised``, computed by the same nodes), then one
output per signal of the view (``ood_pictures``, ``ood_input``) and, when the view standardises
or looks up its percentile by noise level, ``ood_noise``. Standardising and the percentile tables
stay in ``contract.ood`` (``Calibration.scores``), so the card remains the one place they live.

``training.calibrate`` writes it after every calibration whose ``denoise`` view the graph can
compute; this command rebuilds it from a card and its ``ood.npz`` without calibrating again.
tests/training/test_ood_graph.py checks its outputs against ``contract.ood`` on real images.
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
from onnx import TensorProto, helper, numpy_helper

from contract import ood
from contract.card import graph_path, model_dirs, update_card

log = logging.getLogger(__name__)

MODELS_DIR = Path("models")
VIEW = "denoise"


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


def _descriptor(g: _Nodes, images: str, side: int = 28, pool: int = 4) -> str:
    """``contract.ood.descriptor`` of ``[m, 1, side, side]``: ``[m, (side/pool)² + 7 + 3]``.

    Few nodes, since at a batch of one each costs more than its arithmetic: the three stroke
    statistics are one product of the two logs."""
    cells = side // pool
    pooled = g.op("AveragePool", images, kernel_shape=[pool, pool], strides=[pool, pool])
    pooled = g.op("Reshape", pooled, g.const([0, cells * cells]))
    flat = g.op("Reshape", images, g.const([0, 1, side * side]))
    edges = g.const(np.reshape(ood.HISTOGRAM_EDGES, (1, -1, 1)), np.float32)
    above = g.op("Cast", g.op("Greater", flat, edges), to=TensorProto.FLOAT)
    above = g.op("ReduceMean", above, g.const([2]), keepdims=0)

    # The neighbour differences on views of the top-left (side-1)² pixels, as numpy takes them
    # (a 2x2 conv instead went through onnxruntime's blocked layout: twice the time at batch 32).
    def window(rows: int, cols: int) -> str:
        starts, ends = g.const([rows, cols]), g.const([rows + side - 1, cols + side - 1])
        return g.op("Slice", images, starts, ends, g.const([2, 3]))

    neighbours = g.op("Concat", window(0, 1), window(1, 0), axis=1)  # right of, below each pixel
    edge = g.op("Abs", g.op("Sub", neighbours, window(0, 0)))
    edge = g.op("ReduceSum", edge, g.const([1, 2, 3]), keepdims=1)  # [m, 1, 1, 1]
    ink = g.op("ReduceSum", images, g.const([1, 2, 3]), keepdims=1)
    # mean ink and mean edge: log(max(ink, 0) + eps), log(edge + eps) (edge >= 0), then
    # [log ink, log edge, their difference] as one product
    means = g.op("Mul", g.op("Concat", ink, edge, axis=1), g.const(1.0 / (side * side), np.float32))
    logs = g.op("Log", g.op("Add", g.op("Relu", means), g.const(ood._STROKE_EPS, np.float32)))
    stroke = g.op("MatMul", g.op("Flatten", logs), g.const([[1, 0, -1], [0, 1, 1]], np.float32))
    return g.op("Concat", pooled, above, stroke, axis=1)


def _distance(g: _Nodes, vectors: str, distance: ood.Distance, out: str) -> str:
    """``contract.ood.Distance``: log squared Mahalanobis distance to the nearest centre, ``[n]``."""
    y = g.op("MatMul", vectors, g.const(distance.whiten, np.float32))
    centres = distance.centres.astype(np.float32)
    # ||y - c||² = ||y||² - 2 y·c + ||c||², the last two for every centre in one Gemm
    cross = g.op(
        "Gemm", y, g.const(-2.0 * centres.T, np.float32), g.const(np.square(centres).sum(axis=1), np.float32)
    )
    d2 = g.op(
        "Add",
        g.op("ReduceMin", cross, g.const([1]), keepdims=0),
        g.op("ReduceSumSquare", y, g.const([1]), keepdims=0),
    )
    return g.op("Log", g.op("Add", g.op("Relu", d2), g.const(ood._EPS, np.float32)), out=out)


def _noise(g: _Nodes, images: str, side: int = 28) -> str:
    """``contract.ood.noise_estimate``: Immerkær's kernel, mean absolute response, ``[n]``.

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
    return g.op("ReduceMean", response, g.const([1, 2, 3]), keepdims=0, out=ood.NOISE_OUTPUT)


def build(
    autoencoder: onnx.ModelProto, view: dict[str, Any], distances: dict[str, ood.Distance]
) -> onnx.ModelProto:
    """A copy of ``autoencoder`` whose extra outputs are the view's signals (and noise estimate)."""
    if not ood.graph_scorable(view):
        raise ValueError(f"signals {view['signals']} need more than the input and output")
    graph = autoencoder.graph
    image, denoised = graph.input[0].name, graph.output[0].name
    g = _Nodes()
    outputs = []
    for name in view["signals"]:
        if name == "pictures":  # input and output interleaved, each image's pair side by side
            pairs = g.op("Reshape", g.op("Concat", image, denoised, axis=1), g.const([-1, 1, 28, 28]))
            vectors = g.op("Reshape", _descriptor(g, pairs), g.const([-1, 2 * (49 + 10)]))
        else:
            vectors = _descriptor(g, image)
        outputs.append(_distance(g, vectors, distances[name], ood.signal_output(name)))
    if ood.needs_noise(view):
        outputs.append(_noise(g, image))
    extra = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch"]) for name in outputs]
    scored = helper.make_graph(
        [*graph.node, *g.nodes],
        graph.name,
        list(graph.input),
        [*graph.output, *extra],
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


def write(
    model_dir: Path, card: dict[str, Any], block: dict[str, Any], distances: dict[str, ood.Distance]
) -> dict[str, str] | None:
    """Write ``scored.onnx`` for the card's ``denoise`` view and set ``block["graph"]`` to its
    reference (returned too); None, with no ``graph`` key and no file left behind, when the view
    reads more than input and output."""
    path = model_dir / ood.GRAPH_FILE
    view = block["views"].get(VIEW)
    block.pop("graph", None)
    if view is None or not ood.graph_scorable(view):
        path.unlink(missing_ok=True)
        return None
    source = graph_path(model_dir, card, "autoencoder")
    model = build(onnx.load(str(source)), view, distances)
    fd, tmp = tempfile.mkstemp(prefix=".scored.", suffix=".tmp", dir=model_dir)
    with os.fdopen(fd, "wb") as f:
        f.write(model.SerializeToString())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    block["graph"] = ood.graph_reference(model_dir, VIEW, card["sha256"][card["graphs"]["autoencoder"]])
    return block["graph"]


def rebuild(model_dir: Path) -> dict[str, str] | None:
    """Rewrite ``scored.onnx`` and the card's ``ood.graph`` from the card and ``ood.npz`` as they are."""
    card = json.loads((model_dir / "card.json").read_text())
    block = card.get("ood")
    if block is None:
        raise SystemExit(
            f"{model_dir}: no 'ood' block to build from (python -m training.calibrate {model_dir})"
        )
    calibration = ood.load(model_dir, {**card, "ood": {k: v for k, v in block.items() if k != "graph"}})
    assert calibration is not None
    ref = write(model_dir, card, block, calibration.distances)
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
