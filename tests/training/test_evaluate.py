"""The evaluation CLI: real ONNX graphs through real onnxruntime, the reports it writes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.training.conftest import sections, stored_model_row, write_model_dir, write_scale_model
from training import protocol
from training.baselines import compute_baselines, write_json
from training.data import load_mnist5k
from training.evaluate import main
from training.gaussian_eval import Context, EvaluationError, gaussian_report
from training.protocol import psnr
from training.report import check_targets, render
from training.score import evaluate_onnx, run_onnx

N_TEST = 6


@pytest.fixture(scope="module")
def evaluation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline cache on the first 6 test images; BM3D left out (seconds per image)."""
    directory = tmp_path_factory.mktemp("evaluation")
    cache = compute_baselines(
        "mnist5k",
        test_limit=N_TEST,
        tune_images=4,
        bm3d_test_images=3,
        methods=["noisy", "gaussian", "median", "nl_means"],
        workers=1,
    )
    write_json(directory / "baselines-mnist5k.json", cache)
    write_scale_model(directory / "lesson-mnist5k" / "autoencoder.onnx", 0.9)
    return directory


def test_run_onnx_applies_the_graph(tmp_path: Path) -> None:
    path = write_scale_model(tmp_path / "half.onnx", 0.5)
    images = np.random.default_rng(0).random((7, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(path, images, batch=3), images * 0.5, rtol=1e-6)


def test_identity_model_scores_exactly_as_the_noisy_input(tmp_path: Path, evaluation_dir: Path) -> None:
    path = write_scale_model(tmp_path / "identity.onnx", 1.0)
    test = load_mnist5k().test_x[:N_TEST]
    row, examples = evaluate_onnx(path, test, subset=3)
    noisy_row = json.loads((evaluation_dir / "baselines-mnist5k.json").read_text())["methods"]["noisy"]
    np.testing.assert_allclose(row["psnr"], noisy_row["psnr"], rtol=1e-12)
    np.testing.assert_allclose(row["ssim"], noisy_row["ssim"], rtol=1e-12)
    np.testing.assert_allclose(row["subset_psnr"], noisy_row["subset_psnr"], rtol=1e-12)
    noisy, out = examples[0.3]
    np.testing.assert_array_equal(out, noisy)
    np.testing.assert_array_equal(noisy, protocol.noisy(test, 0.3, 1234)[: len(noisy)])


def test_a_worse_model_scores_lower(tmp_path: Path) -> None:
    test = load_mnist5k().test_x[:N_TEST]
    good, _ = evaluate_onnx(write_scale_model(tmp_path / "a.onnx", 1.0), test, subset=3)
    bad, _ = evaluate_onnx(write_scale_model(tmp_path / "b.onnx", 0.5), test, subset=3)
    assert bad["psnr"][0] < good["psnr"][0] - 3  # at s=0.05 halving the image costs far more than noise
    expected = psnr(test, 0.5 * protocol.noisy(test, 0.6, 1234)).mean()
    assert bad["psnr"][-1] == pytest.approx(expected, rel=1e-6)


def test_all_writes_reports_card_metrics_and_summary(tmp_path: Path, evaluation_dir: Path) -> None:
    models = tmp_path / "models"
    denoise = write_model_dir(models, "mnist-denoise", 1.0)
    write_model_dir(models, "mnist-unet", 0.95)
    summary = tmp_path / "evaluation.md"
    onnx_bytes = (denoise / "autoencoder.onnx").read_bytes()
    main(
        ["--all", "--models-dir", str(models), "--evaluation-dir", str(evaluation_dir),
         "--test-limit", str(N_TEST), "--summary", str(summary)]
    )  # fmt: skip
    for model_id in ("mnist-denoise", "mnist-unet"):
        report = models / model_id / "report"
        assert (report / "psnr_vs_noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (report / "examples.png").stat().st_size > 1000
    text = (denoise / "report" / "README.md").read_text()
    for label in ("mnist-unet", "lesson conv AE", "noisy input", "median 3×3", "NL-means", "Gaussian blur"):
        assert label in text
    assert f"first **{N_TEST}** test images" in text
    # Where each tuned optimum fell, on validation, and that none is on a grid edge.
    assert "## Classical parameters, tuned per level by mean PSNR on the validation split" in text
    assert "| Gaussian blur (σ tuned per s) | sigma |" in text and "first 4 validation images" in text
    assert "| NL-means (h, patch size and distance tuned per s) | patch_distance |" in text
    assert "**no optimum sits on a grid edge**" in text and "train images" not in text
    assert "**NOT met**: PSNR ≥ 19.5 dB at s = 0.5" in text  # an identity model cannot meet it
    card = json.loads((denoise / "card.json").read_text())
    cache = json.loads((evaluation_dir / "baselines-mnist5k.json").read_text())
    assert card["metrics"]["test_images"] == N_TEST
    assert card["metrics"]["noise_levels"] == [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    np.testing.assert_allclose(card["metrics"]["psnr"], cache["methods"]["noisy"]["psnr"], atol=1e-4)
    assert card["sha256"] == {"autoencoder.onnx": hashlib.sha256(onnx_bytes).hexdigest()}
    assert (denoise / "autoencoder.onnx").read_bytes() == onnx_bytes
    assert cache["models"]["lesson"]["psnr"][0] < cache["methods"]["noisy"]["psnr"][0]  # 0.9 x input
    summary_text = summary.read_text()
    assert "## mnist5k" in summary_text and "mnist-unet (unet)" in summary_text
    assert "--summary" in summary_text
    assert "- mnist-denoise [issue 4]: 0 of 4 met; NOT met:" in summary_text
    assert "### Classical parameters (mnist5k), tuned per level on the validation split" in summary_text
    assert "**no optimum sits on a grid edge**" in summary_text


def test_an_s2d_report_compares_with_the_883b244_unet(tmp_path: Path, evaluation_dir: Path) -> None:
    models = tmp_path / "models"
    s2d = write_model_dir(models, "mnist-s2d", 1.0)
    summary = tmp_path / "evaluation.md"
    with pytest.raises(SystemExit, match="--summary writes the summary of every model and needs --all"):
        main(["--model", str(s2d), "--summary", str(summary)])
    assert not summary.exists()
    main(
        ["--all", "--models-dir", str(models), "--evaluation-dir", str(evaluation_dir),
         "--test-limit", str(N_TEST), "--summary", str(summary)]
    )  # fmt: skip
    text = (s2d / "report" / "README.md").read_text()
    assert "| mnist-unet at 883b244 | 35.08 | 30.49 | 26.40 | 23.94 | 21.99 | 20.35 | 18.91 |" in text
    assert "**NOT met**: PSNR within 0.3 dB of the U-Net at 883b244" in text  # the identity is far below
    assert "[issue 12]" in text
    assert "| mnist-unet at 883b244 |" in summary.read_text()
    # The shipped report's layout, written by the same writer: the same sections in the same order.
    shipped = (ROOT / "models" / "mnist-s2d" / "report" / "README.md").read_text()
    assert _headings(text) == _headings(shipped)


def _headings(markdown: str) -> list[str]:
    return [re.sub(r"\d+", "N", line) for line in markdown.splitlines() if line.startswith("#")]


def test_lesson_rows_are_rescored_when_the_lesson_model_changes(tmp_path: Path, evaluation_dir: Path) -> None:
    directory = tmp_path / "evaluation"
    directory.mkdir()
    (directory / "baselines-mnist5k.json").write_bytes(
        (evaluation_dir / "baselines-mnist5k.json").read_bytes()
    )
    lesson = write_scale_model(directory / "lesson-mnist5k" / "autoencoder.onnx", 1.0)
    first = Context(directory, test_limit=N_TEST).baselines("mnist5k")["models"]["lesson"]
    write_scale_model(lesson, 0.5)
    second = Context(directory, test_limit=N_TEST).baselines("mnist5k")["models"]["lesson"]
    assert second["sha256"] != first["sha256"]
    assert second["psnr"][0] < first["psnr"][0] - 3
    cached = json.loads((directory / "baselines-mnist5k.json").read_text())["models"]["lesson"]
    assert cached["sha256"] == second["sha256"]


def test_a_cache_for_another_test_size_is_refused(evaluation_dir: Path) -> None:
    with pytest.raises(EvaluationError, match=r"computed on 6 test images.*--recompute-baselines"):
        Context(evaluation_dir, test_limit=N_TEST + 1).baselines("mnist5k")


def test_missing_card_exits_with_a_message_naming_it(tmp_path: Path, evaluation_dir: Path) -> None:
    with pytest.raises(SystemExit, match=r"nowhere/card\.json: missing"):
        main(["--model", str(tmp_path / "nowhere"), "--evaluation-dir", str(evaluation_dir)])


GAUSSIAN_SHIPPED = ("mnist-s2d", "mnist-denoise", "mnist-conv", "mnist-dense", "mnist-unet", "fashion-s2d",
                    "fashion-denoise", "fashion-unet")  # fmt: skip


def _table(lines: list[str]) -> dict[str, list[str]]:
    """A markdown table's rows (header and rule left out): label -> cells."""
    rows = {}
    for line in lines:
        if line.startswith("| ") and not line.startswith(("| method |", "| PSNR (dB) |")):
            label, *cells = [c.strip() for c in line.strip("|").split("|")]
            rows[label] = cells
    return rows


def _numbers(cells: list[str]) -> np.ndarray:
    return np.array([float(x) for c in cells for x in c.split(" / ")])


def _same_table(made: dict[str, list[str]], shipped: dict[str, list[str]], stored_exactly: set[str]) -> None:
    """Rows from the baseline cache read as in the shipped file. Rows from the cards' metrics (means
    rounded to 4 decimals there) agree within one unit of the shown decimal."""
    for label, cells in made.items():
        if label in stored_exactly:
            assert cells == shipped[label], label
        else:
            diff = np.abs(_numbers(cells) - _numbers(shipped[label]))
            assert diff.max() <= 0.0101, (label, cells, shipped[label])


@pytest.mark.parametrize("model_id", GAUSSIAN_SHIPPED)
def test_a_shipped_report_regenerates_from_the_stored_card_and_baseline_cache(model_id: str) -> None:
    """Through the one writer, from what the evaluation stored: the card's metrics (every shipped
    model's means over all test images) and docs/evaluation/baselines-<dataset>.json. The models'
    means over the BM3D subset are not stored: the paired table's model rows and the targets'
    closest calls are not compared."""
    models = ROOT / "models"
    card = json.loads((models / model_id / "card.json").read_text())
    dataset = card["dataset"]
    cache = json.loads((ROOT / "docs" / "evaluation" / f"baselines-{dataset}.json").read_text())
    rows = {model_id: stored_model_row(card, f"**{model_id}** (this model)")}
    for other in sorted(models.glob("*/card.json")):
        peer = json.loads(other.read_text())
        if peer["id"] != model_id and peer["dataset"] == dataset:
            rows[peer["id"]] = stored_model_row(peer, peer["id"])
    rows["lesson"] = {"kind": "lesson", **cache["models"]["lesson"]}
    rows.update({key: {"kind": "classical", **entry} for key, entry in cache["methods"].items()})
    targets = check_targets(model_id, rows)
    sources = (f"docs/evaluation/baselines-{dataset}.json", f"docs/evaluation/lesson-{dataset}/")
    made = sections(render(gaussian_report(card, rows, cache, targets, card["metrics"]["command"], sources)))
    shipped = sections((models / model_id / "report" / "README.md").read_text())

    assert list(made) == list(shipped)
    for same in ("", "Classical parameters, tuned per level by mean PSNR on the validation split", "Plots",
                 "Reproduce"):  # fmt: skip
        assert made[same] == shipped[same], same
    from_cache = {r["label"] for r in rows.values() if r["kind"] != "model"}
    from_cache |= {f"{label} (first {cache['subset_images']} images)" for label in from_cache}
    full = f"PSNR (dB) / SSIM, first {cache['test_images']} test images"
    made_rows, shipped_rows = _table(made[full]), _table(shipped[full])
    # The same rows in the same order; the shipped table may also hold models removed since.
    removed = [label for label in shipped_rows if label not in made_rows]
    assert all(not (models / label).exists() for label in removed), removed
    assert list(made_rows) == [label for label in shipped_rows if label not in removed]
    _same_table(made_rows, shipped_rows, from_cache)
    paired = f"PSNR (dB) / SSIM, first {cache['subset_images']} test images (every method, paired with BM3D)"
    made_paired = {k: v for k, v in _table(made[paired]).items() if k in from_cache}
    assert len(made_paired) == len(from_cache) // 2
    _same_table(made_paired, _table(shipped[paired]), from_cache)
    target_lines = [line for line in shipped["Targets"] if line.startswith("- **")]
    assert len(target_lines) == len(targets)
    for t, line in zip(targets, target_lines, strict=True):
        assert f"**: {t.text} (" in line and line.endswith(f"[{t.source}]"), line
    assert made["Targets"][-4:] == shipped["Targets"][-4:]  # the closing paragraph
    made_ref, shipped_ref = _table(made["Targets"]), _table(shipped["Targets"])  # the 883b244 comparison
    assert list(made_ref) == list(shipped_ref)
    numeric = {k: v for k, v in made_ref.items() if not k.startswith("within")}
    _same_table(numeric, shipped_ref, {label for label in made_ref if "883b244" in label})
