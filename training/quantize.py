"""`python -m training.quantize`: an int8 variant of an exported denoiser, calibrated on validation.

    python -m training.quantize models/mnist-s2d --out models/mnist-s2d-int8

Static quantization with onnxruntime's tools, in the QDQ format: weights int8 per output channel,
activations uint8 with ranges calibrated on noisy images of the validation split (every protocol
level, validation's noise seed), never on test images. The variant is then scored against its
float graph on the validation split with several noise seeds; `--max-loss` (default 0.1 dB)
refuses to write a variant that loses more than that at any level and seed. The model directory
gets the quantized `autoencoder.onnx` (input `image`, output `denoised`, dynamic batch, the
metadata the service checks) and a card copied from the float model's with its own id, sha256,
description and a `quantization` block (method, calibration images, the validation loss).
Evaluate it like any model: `python -m training.evaluate --model models/mnist-s2d-int8`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from training import protocol
from training.data import DataError, load_dataset
from training.export import strip_build_info
from training.protocol import NOISE_LEVELS, VAL_NOISE_SEED, psnr
from training.score import run_onnx

log = logging.getLogger("training.quantize")

# Validation images the activation ranges are calibrated on (each at every protocol level), and
# the extra noise seeds, beside validation's own, that the quality check scores.
CALIBRATION_IMAGES = 500
CHECK_IMAGES = 2000
CHECK_SEEDS = (VAL_NOISE_SEED, 1, 2)
SENSITIVITY_IMAGES = 200
SENSITIVITY_LEVELS = (0.05, 0.3, 0.6)
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class QuantizeError(Exception):
    """The source model cannot be quantized, or its int8 variant loses too much."""


@dataclass(frozen=True)
class QuantConfig:
    method: str = "minmax"
    per_channel: bool = True
    calibration_images: int = CALIBRATION_IMAGES
    # Sensitivity: each Conv is quantized alone and scored on validation (SENSITIVITY_LEVELS); a
    # Conv that alone costs more than this many dB at any of those levels stays in float, with the
    # nodes that only it feeds. None: quantize every node.
    max_node_loss: float | None = 0.02


class NoisyImages(CalibrationDataReader):
    """Batches of validation images at every protocol level, noise from default_rng(VAL_NOISE_SEED)."""

    def __init__(self, clean: np.ndarray, levels: Sequence[float] = NOISE_LEVELS, batch: int = 100) -> None:
        self._batches = [
            {"image": noisy[i : i + batch, None].astype(np.float32)}
            for s in levels
            for noisy in [protocol.noisy(clean, s, VAL_NOISE_SEED)]
            for i in range(0, len(clean), batch)
        ]
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def _quantize(
    prepared: Path, dst: Path, calibration: np.ndarray, cfg: QuantConfig, exclude: list[str]
) -> None:
    quantize_static(
        str(prepared),
        str(dst),
        NoisyImages(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=cfg.per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=METHODS[cfg.method],
        nodes_to_exclude=exclude,
    )


def _followers(graph: onnx.GraphProto, conv: onnx.NodeProto) -> list[str]:
    """The elementwise nodes (Relu) that read only `conv`'s output: quantized or not with it."""
    return [n.name for n in graph.node if n.op_type == "Relu" and list(n.input) == [conv.output[0]]]


def sensitivity(prepared: Path, images: np.ndarray, cfg: QuantConfig) -> dict[str, float]:
    """Validation PSNR lost (dB, worst of SENSITIVITY_LEVELS) when each Conv alone is quantized."""
    graph = onnx.load(str(prepared)).graph
    names = [n.name for n in graph.node]
    base = _level_psnr(prepared, images)
    losses: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        for conv in (n for n in graph.node if n.op_type == "Conv"):
            keep = {conv.name, *_followers(graph, conv)}
            out = Path(tmp) / "one.onnx"
            _quantize(prepared, out, images, cfg, [n for n in names if n not in keep])
            losses[conv.name] = float((base - _level_psnr(out, images)).max())
    return losses


def _level_psnr(graph: Path, clean: np.ndarray) -> np.ndarray:
    return np.array(
        [
            float(psnr(clean, run_onnx(graph, protocol.noisy(clean, s, VAL_NOISE_SEED))).mean())
            for s in SENSITIVITY_LEVELS
        ]
    )


def quantize_graph(src: Path, dst: Path, calibration: np.ndarray, cfg: QuantConfig) -> dict[str, float]:
    """Write the QDQ int8 version of graph `src` to `dst`, calibrated on `calibration` images.

    Returns each Conv's sensitivity (empty when every node is quantized); the Convs over
    `cfg.max_node_loss` stay in float.
    """
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph optimisation first, as onnxruntime's docs advise.
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        losses: dict[str, float] = {}
        exclude: list[str] = []
        if cfg.max_node_loss is not None:
            losses = sensitivity(prepared, calibration[:SENSITIVITY_IMAGES], cfg)
            chosen = {name for name, loss in losses.items() if loss <= cfg.max_node_loss}
            keep = set(chosen)
            for conv in (n for n in graph.node if n.name in chosen):
                keep.update(_followers(graph, conv))
            exclude = [n.name for n in graph.node if n.name not in keep]
        _quantize(prepared, dst, calibration, cfg, exclude)
    # The service checks the metadata against the card; the tools drop it.
    source = onnx.load(str(src))
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    for prop in source.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    model.doc_string = ""
    strip_build_info(model)  # what the tools carry over from the source graph's nodes
    onnx.save(model, str(dst))
    return losses


def set_metadata(path: Path, **entries: str) -> None:
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key in entries:
            prop.value = entries.pop(prop.key)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def psnr_by_seed(graph: Path, clean: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
    """Mean PSNR [seed, level] of one graph over `clean` at every protocol level."""
    return np.array(
        [
            [float(psnr(clean, run_onnx(graph, protocol.noisy(clean, s, seed))).mean()) for s in NOISE_LEVELS]
            for seed in seeds
        ]
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quantize_model(
    src_dir: Path,
    out_dir: Path,
    cfg: QuantConfig,
    *,
    data_dir: Path | None = None,
    max_loss: float | None = 0.1,
    check_images: int = CHECK_IMAGES,
    seeds: Sequence[int] = CHECK_SEEDS,
) -> dict[str, Any]:
    """Quantize `src_dir`'s autoencoder.onnx into the model directory `out_dir`; returns the card.

    Raises QuantizeError, writing nothing, when the int8 graph loses more than `max_loss` dB of
    validation PSNR at any level and seed.
    """
    card: dict[str, Any] = json.loads((src_dir / "card.json").read_text())
    if card.get("code_shape") is not None:
        raise QuantizeError(f"{src_dir}: only codeless denoisers (autoencoder.onnx alone) are quantized here")
    split = load_dataset(card["dataset"], data_dir)
    val = split.val_x
    model_id = out_dir.name
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{model_id}.", dir=out_dir.parent))
    try:
        graph = stage / "autoencoder.onnx"
        losses = quantize_graph(src_dir / "autoencoder.onnx", graph, val[: cfg.calibration_images], cfg)
        description = (
            f"{card['description']} Int8 (static QDQ, calibrated on validation images) of {card['id']}."
        )
        set_metadata(graph, model_id=model_id, description=description)
        check = val[:check_images]
        ours = psnr_by_seed(graph, check, seeds)
        theirs = psnr_by_seed(src_dir / "autoencoder.onnx", check, seeds)
        loss = theirs - ours  # [seed, level], positive = the int8 graph is worse
        worst = float(loss.max())
        log.info(
            "%s: validation PSNR loss per level (worst over seeds %s): %s dB",
            model_id,
            list(seeds),
            " ".join(f"{v:+.3f}" for v in loss.max(axis=0)),
        )
        if max_loss is not None and worst > max_loss:
            raise QuantizeError(
                f"{model_id}: loses {worst:.3f} dB of validation PSNR (level "
                f"{NOISE_LEVELS[int(loss.max(axis=0).argmax())]}), more than {max_loss} dB; not written"
            )
        card = {
            **card,
            "id": model_id,
            "description": description,
            "graphs": {"autoencoder": "autoencoder.onnx"},
            "outputs": {"autoencoder.onnx": "denoised"},
            "sha256": {"autoencoder.onnx": _sha256(graph)},
            "quantization": {
                "source": card["id"],
                "source_sha256": card["sha256"]["autoencoder.onnx"],
                "format": "QDQ, weights int8 "
                + ("per channel" if cfg.per_channel else "per tensor")
                + ", activations uint8",
                "calibration": f"{cfg.method} over the first {cfg.calibration_images} validation images at "
                f"every protocol level (noise default_rng({VAL_NOISE_SEED}))",
                "int8_convs": sorted(k for k, v in losses.items() if v <= (cfg.max_node_loss or 0.0))
                if losses
                else "all",
                "conv_sensitivity_db": {k: round(v, 4) for k, v in losses.items()},
                "sensitivity": (
                    f"each Conv quantized alone, worst PSNR loss at s = {list(SENSITIVITY_LEVELS)} on "
                    f"the first {SENSITIVITY_IMAGES} validation images; "
                    f"Convs over {cfg.max_node_loss} dB stay float"
                )
                if losses
                else None,
                "validation_loss_db": {
                    "images": len(check),
                    "seeds": list(seeds),
                    "levels": list(NOISE_LEVELS),
                    "worst_over_seeds": [round(float(v), 4) for v in loss.max(axis=0)],
                    "mean_over_seeds": [round(float(v), 4) for v in loss.mean(axis=0)],
                },
                "command": "python -m training.quantize " + " ".join(_cli_args(src_dir, out_dir, cfg)),
            },
        }
        card.pop("metrics", None)  # the float model's test figures; training.evaluate writes these
        card.pop("parity_max_abs_diff", None)  # torch-vs-onnx parity does not apply to int8
        # The float model's out-of-distribution calibration belongs to its own graph (and its
        # ood.npz): the int8 graph gets its own from `python -m training.calibrate`.
        card.pop("ood", None)
        (stage / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        for path in (graph, stage / "card.json"):
            os.chmod(path, 0o644)
        if (out_dir / "report").is_dir():
            shutil.copytree(out_dir / "report", stage / "report")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(stage, out_dir)
        os.chmod(out_dir, 0o755)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return card


def _cli_args(src_dir: Path, out_dir: Path, cfg: QuantConfig) -> list[str]:
    args = [str(src_dir), "--out", str(out_dir), "--method", cfg.method]
    if not cfg.per_channel:
        args.append("--per-tensor")
    if cfg.max_node_loss is None:
        args.append("--all-nodes")
    elif cfg.max_node_loss != QuantConfig.max_node_loss:
        args += ["--max-node-loss", str(cfg.max_node_loss)]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.quantize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, help="float model directory, e.g. models/mnist-s2d")
    parser.add_argument(
        "--out", type=Path, required=True, help="int8 model directory, e.g. models/mnist-s2d-int8"
    )
    parser.add_argument("--method", choices=sorted(METHODS), default="minmax", help="activation calibration")
    parser.add_argument(
        "--per-tensor", action="store_true", help="one weight scale per tensor, not per channel"
    )
    parser.add_argument(
        "--max-node-loss",
        type=float,
        default=QuantConfig.max_node_loss,
        help="dB a Conv quantized alone may cost on validation; costlier Convs stay float",
    )
    parser.add_argument("--all-nodes", action="store_true", help="quantize every node (no sensitivity check)")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES)
    parser.add_argument(
        "--check-images", type=int, default=CHECK_IMAGES, help="validation images of the check"
    )
    parser.add_argument(
        "--max-loss", type=float, default=0.1, help="dB of validation PSNR the variant may lose"
    )
    parser.add_argument("--data-dir", type=Path, help="IDX directory (mnist; fashion has a default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = QuantConfig(
        args.method,
        not args.per_tensor,
        args.calibration_images,
        None if args.all_nodes else args.max_node_loss,
    )
    try:
        quantize_model(
            args.model,
            args.out,
            cfg,
            data_dir=args.data_dir,
            max_loss=args.max_loss,
            check_images=args.check_images,
        )
    except (QuantizeError, DataError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
