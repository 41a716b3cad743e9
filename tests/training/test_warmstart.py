"""training.warmstart starts a run from an exported graph's weights, and training.train resumes it."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from training import protocol
from training.checkpoint import load_checkpoint, load_model
from training.config import TrainConfig, default_description
from training.data import load_mnist5k
from training.loop import train
from training.models import ModelConfig
from training.score import run_onnx
from training.warmstart import WarmStartError, main, warm_checkpoint

GRAPH = ROOT / "models" / "mnist-s2d" / "autoencoder.onnx"
# The shipped network, as its card describes it (a warm start must rebuild the same one).
NET = ModelConfig.from_dict(json.loads((GRAPH.parent / "card.json").read_text())["config"]["model"])
CFG = TrainConfig(arch="s2d", data="mnist5k", epochs=1, batch_size=32, lr=1e-4, loss="psnr", train_limit=64)


def test_the_warm_network_computes_what_the_graph_computes(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    warm_checkpoint(CFG, NET, GRAPH, ckpt)
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 0 and state["history"] == []
    model = load_model(state)
    noisy = protocol.noisy(load_mnist5k().val_x[:16], 0.3, 0)
    with torch.no_grad():
        ours = model(torch.from_numpy(noisy)[:, None]).numpy()[:, 0]
    np.testing.assert_allclose(ours, run_onnx(GRAPH, noisy), atol=1e-4)


def test_training_resumes_from_the_warm_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    warm_checkpoint(CFG, NET, GRAPH, ckpt)
    summary = train(CFG, NET, None, ckpt, resume=True, progress=False)
    assert summary["completed"] and summary["epochs_done"] == 1
    # From the shipped weights, one short epoch keeps a validation score a fresh network cannot reach.
    assert summary["val_psnr"]["0.05"] > 30.0
    # The card will name what the run continued (no path of this machine), and say so in words.
    shipped = json.loads((GRAPH.parent / "card.json").read_text())
    assert summary["warm_start"] == {
        "sha256": shipped["sha256"]["autoencoder.onnx"],
        "model_id": "mnist-s2d",
        "epochs": shipped["training"]["epochs_done"],
    }
    sentence = default_description(CFG, NET, summary["warm_start"])
    assert sentence.endswith(
        f"1 epochs, continuing a {shipped['training']['epochs_done']}-epoch run (mnist-s2d) from its weights."
    )


def test_a_graph_of_another_network_of_the_same_shapes_is_refused(tmp_path: Path) -> None:
    # Dilations change no weight's shape: only the card beside the graph can tell.
    other = replace(NET, lowres_dilations=() if NET.lowres_dilations else (1, 2, 4, 2, 1, 1))
    with pytest.raises(WarmStartError, match=r"another network .*lowres_dilations"):
        warm_checkpoint(CFG, other, GRAPH, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_graph_of_another_architecture_is_refused(tmp_path: Path) -> None:
    unet = tmp_path / "unet"  # the graph alone, without the card that would name its network
    unet.mkdir()
    shutil.copy(ROOT / "models" / "mnist-unet" / "autoencoder.onnx", unet)
    with pytest.raises(WarmStartError, match="same architecture"):
        warm_checkpoint(CFG, NET, unet / "autoencoder.onnx", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_cli_does_not_overwrite_a_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"a run")
    with pytest.raises(SystemExit, match="exists"):
        main(["--init", str(GRAPH), "--arch", "s2d", "--checkpoint", str(ckpt)])
    assert ckpt.read_bytes() == b"a run"
