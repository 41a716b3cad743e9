"""training.score, and `evaluate validate`: models compared on the validation split, never on test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from training import protocol
from training.data import load_mnist5k
from training.evaluate import main
from training.protocol import NOISE_LEVELS, TEST_NOISE_SEED, VAL_NOISE_SEED, psnr
from training.score import run_onnx, validation_scores

GRAPH = ROOT / "models" / "mnist-s2d" / "autoencoder.onnx"


def test_scores_the_validation_images_with_the_validation_noise() -> None:
    split = load_mnist5k()
    val = split.val_x[:40]
    (score,) = validation_scores(GRAPH, val, levels=(0.3,))["psnr"]
    expected = psnr(val, run_onnx(GRAPH, protocol.noisy(val, 0.3, VAL_NOISE_SEED)[:, None])[:, 0])
    assert score == pytest.approx(float(expected.mean()))
    test = split.test_x[:40]
    on_test = psnr(test, run_onnx(GRAPH, protocol.noisy(test, 0.3, TEST_NOISE_SEED)[:, None])[:, 0])
    assert score != pytest.approx(float(on_test.mean()))


def test_cli_prints_one_row_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    main(["validate", "--limit", "20", str(GRAPH.parent)])
    out = capsys.readouterr().out
    assert "validation split of mnist5k: 20 images" in out
    row = next(line for line in out.splitlines() if line.startswith(f"| {GRAPH.parent} |"))
    assert len(row.split("|")) == len(NOISE_LEVELS) + 3


def test_cli_names_a_missing_graph(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such graph"):
        main(["validate", str(tmp_path / "nothing")])
