"""Shared fixtures: tiny real ONNX models that follow the artifact contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from contract import card as cards
from training.report import CLASSICAL


def write_scale_model(path: Path, scale: float) -> Path:
    """``denoised = scale * image``: scale 1 is the identity, which must score as the noisy input."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])
    denoised = helper.make_tensor_value_info("denoised", TensorProto.FLOAT, ["batch", 1, 28, 28])
    factor = helper.make_tensor("factor", TensorProto.FLOAT, [], [scale])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["image", "factor"], ["denoised"])], "scale", [image], [denoised], [factor]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def write_model_dir(models_dir: Path, model_id: str, scale: float, dataset: str = "mnist5k") -> Path:
    """A model directory as export writes it (only what the evaluation reads)."""
    model_dir = models_dir / model_id
    write_scale_model(model_dir / "autoencoder.onnx", scale)
    card = {
        "id": model_id,
        "arch": model_id.split("-", 1)[1],
        "dataset": dataset,
        "description": f"test model: output = {scale} x input",
        "code_shape": None,
        "graphs": {"autoencoder": "autoencoder.onnx"},
        "split": {"test": "X[perm[4000:]]"},
        "metrics": None,
        "sha256": {"autoencoder.onnx": cards.sha256(model_dir / "autoencoder.onnx")},
    }
    cards.write_card(model_dir, card)
    return model_dir


def rows_for(values: dict[str, tuple[list[float], list[float]]], n: int = 10) -> dict[str, dict]:
    """Report rows from (psnr, ssim) lists; ``subset_*`` equal the full means unless set later."""
    rows = {}
    for key, (p, q) in values.items():
        kind = "classical" if key in CLASSICAL else "model"
        kind = "lesson" if key == "lesson" else kind
        rows[key] = {
            "label": key,
            "kind": kind,
            "arch": key.split("-", 1)[-1],
            "test_images": n,
            "psnr": list(p),
            "ssim": list(q),
            "subset_psnr": list(p),
            "subset_ssim": list(q),
        }
    return rows


def constant(value: float, n: int = 7) -> list[float]:
    return list(np.full(n, value))


def sections(markdown: str) -> dict[str, list[str]]:
    """A report's lines by section: ``""`` for what precedes the first ``## `` heading."""
    parts: dict[str, list[str]] = {"": []}
    current = ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = line[3:]
            parts[current] = []
        else:
            parts[current].append(line)
    return parts


def stored_model_row(card: dict, label: str) -> dict:
    """A report row from a card's stored metrics: the means over every test image. The means over
    the BM3D subset are not stored; the full means stand in for them."""
    metrics = card["metrics"]
    return {
        "label": label,
        "kind": "model",
        "arch": card["arch"],
        "test_images": metrics["test_images"],
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "subset_psnr": metrics["psnr"],
        "subset_ssim": metrics["ssim"],
    }
