"""training.quantize writes int8 model directories the service loads, and refuses lossy ones."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from service.registry import load_model
from tests.conftest import ROOT
from training import protocol
from training.data import load_mnist5k
from training.protocol import VAL_NOISE_SEED, psnr
from training.quantize import QuantConfig, QuantizeError, main, quantize_model
from training.score import run_onnx

SOURCE = ROOT / "models" / "mnist-s2d"


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(path).graph.node}


def test_int8_directory_follows_the_contract_and_denoises_like_the_float_model(tmp_path: Path) -> None:
    out = tmp_path / "mnist-s2d-int8"
    card = quantize_model(
        SOURCE,
        out,
        QuantConfig(calibration_images=40),
        max_loss=0.3,
        check_images=40,
        seeds=(VAL_NOISE_SEED,),
    )
    assert card["id"] == "mnist-s2d-int8" and card["quantization"]["source"] == "mnist-s2d"
    assert json.loads((out / "card.json").read_text()) == card
    graph = out / "autoencoder.onnx"
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(graph)
    # The sensitivity check keeps the costliest Convs float: not every Conv is quantized.
    assert 0 < len(card["quantization"]["int8_convs"]) < len(card["quantization"]["conv_sensitivity_db"])
    model = load_model(out, "cpu")  # the service's own checks: sha256, names, metadata
    assert model.id == "mnist-s2d-int8"
    clean = load_mnist5k().val_x[:40]
    noisy = protocol.noisy(clean, 0.3, VAL_NOISE_SEED)
    ours = psnr(clean, run_onnx(graph, noisy)).mean()
    theirs = psnr(clean, run_onnx(SOURCE / "autoencoder.onnx", noisy)).mean()
    assert abs(ours - theirs) < 0.3


def test_a_variant_that_loses_too_much_is_not_written(tmp_path: Path) -> None:
    out = tmp_path / "mnist-s2d-int8"
    # Every node in int8 (no sensitivity check) loses dBs at light noise.
    with pytest.raises(QuantizeError, match=r"more than 0\.1 dB"):
        quantize_model(
            SOURCE,
            out,
            QuantConfig(calibration_images=20, max_node_loss=None),
            check_images=20,
            seeds=(VAL_NOISE_SEED,),
        )
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_refuses_a_model_with_a_code(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="only codeless denoisers"):
        main([str(ROOT / "models" / "mnist-denoise"), "--out", str(tmp_path / "x-int8")])
