"""training.warmstart starts a run from an exported graph's weights, and training.train resumes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from training import protocol
from training.checkpoint import load_checkpoint, load_model
from training.config import TrainConfig
from training.data import load_mnist5k
from training.loop import train
from training.models import preset
from training.score import run_onnx
from training.warmstart import WarmStartError, main, warm_checkpoint

GRAPH = ROOT / "models" / "mnist-s2d" / "autoencoder.onnx"
CFG = TrainConfig(arch="s2d", data="mnist5k", epochs=1, batch_size=32, lr=1e-4, loss="psnr", train_limit=64)


def test_the_warm_network_computes_what_the_graph_computes(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    warm_checkpoint(CFG, preset("s2d"), GRAPH, ckpt)
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 0 and state["history"] == []
    model = load_model(state)
    noisy = protocol.noisy(load_mnist5k().val_x[:16], 0.3, 0)
    with torch.no_grad():
        ours = model(torch.from_numpy(noisy)[:, None]).numpy()[:, 0]
    np.testing.assert_allclose(ours, run_onnx(GRAPH, noisy), atol=1e-4)


def test_training_resumes_from_the_warm_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    warm_checkpoint(CFG, preset("s2d"), GRAPH, ckpt)
    summary = train(CFG, preset("s2d"), None, ckpt, resume=True, progress=False)
    assert summary["completed"] and summary["epochs_done"] == 1
    # From the shipped weights, one short epoch keeps a validation score a fresh network cannot reach.
    assert summary["val_psnr"]["0.05"] > 30.0


def test_a_graph_of_another_architecture_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WarmStartError, match="same architecture"):
        warm_checkpoint(
            CFG, preset("s2d"), ROOT / "models" / "mnist-unet" / "autoencoder.onnx", tmp_path / "c"
        )
    assert not (tmp_path / "c").exists()


def test_cli_does_not_overwrite_a_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"a run")
    with pytest.raises(SystemExit, match="exists"):
        main(["--init", str(GRAPH), "--arch", "s2d", "--checkpoint", str(ckpt)])
    assert ckpt.read_bytes() == b"a run"
