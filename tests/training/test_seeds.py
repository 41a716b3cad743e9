"""training.seeds scores models under several noise seeds and reports the worst seed's gap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from training import protocol
from training.data import load_mnist5k
from training.protocol import NOISE_LEVELS, VAL_NOISE_SEED, psnr
from training.score import run_onnx
from training.seeds import main, markdown, resolve_graph

S2D = ROOT / "models" / "mnist-s2d"
UNET = ROOT / "models" / "mnist-unet"


def test_each_seed_is_a_fresh_generator_per_level(tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    main([str(S2D), "--limit", "10", "--seeds", str(VAL_NOISE_SEED), "7", "--json", str(out)])
    table = json.loads(out.read_text())["psnr"][str(S2D)]
    clean = load_mnist5k().val_x[:10]
    for row, seed in zip(table, (VAL_NOISE_SEED, 7), strict=True):
        noisy = protocol.noisy(clean, 0.3, seed)
        expected = psnr(clean, run_onnx(S2D / "autoencoder.onnx", noisy)).mean()
        assert row[NOISE_LEVELS.index(0.3)] == pytest.approx(expected, abs=1e-4)
    assert table[0] != table[1]


def test_the_worst_seed_is_the_smallest_paired_difference() -> None:
    ref = np.array([[30.0, 20.0], [31.0, 21.0]])
    other = np.array([[30.5, 19.0], [30.0, 21.5]])
    text = markdown({"ref": ref, "other": other}, "ref", [1, 2], (0.1, 0.2))
    assert "| difference to ref: mean (worst seed) | -0.25 (-1.00) | -0.25 (-1.00) |" in text


def test_a_model_can_be_read_from_a_git_revision(tmp_path: Path) -> None:
    # The U-Net as committed at 883b244 (the bar the cheap denoisers are held to).
    graph = resolve_graph("883b244:models/mnist-unet", tmp_path)
    assert graph.is_file() and graph.stat().st_size > 100_000
    assert graph.read_bytes() != (UNET / "autoencoder.onnx").read_bytes()
    with pytest.raises(SystemExit, match="no such model"):
        resolve_graph(str(tmp_path / "absent"), tmp_path)
