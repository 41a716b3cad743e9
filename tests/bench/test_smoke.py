"""The benchmark scripts still run end to end (briefly): they print their tables and lose no request.

Figures are not checked here (a shared machine makes them noise); docs/benchmarks.md records them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MNIST_DIR, ROOT, fashion_dir_or_skip

pytestmark = pytest.mark.slow


# bench.denoisers, briefly: one round of 50 ms windows at batch 1
ONE_QUICK_ROUND = ("--rounds", "1", "--seconds", "0.05", "--batches", "1")


def _run(module: str, *args: str, json_out: Path | None = None) -> str:
    argv = [sys.executable, "-m", f"bench.{module}", *args]
    if json_out is not None:
        argv += ["--json", str(json_out)]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def wrk() -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: `make test` installs it (scripts/system-deps.sh)")


def test_onnxruntime_alone_fills_its_table(tmp_path: Path) -> None:
    out = _run(
        "ort_alone",
        "--seconds",
        "0.05",
        "--repeats",
        "1",
        "--batches",
        "1",
        "16",
        json_out=tmp_path / "o.json",
    )
    assert "| mnist-denoise/autoencoder | 1 |" in out
    rows = json.loads((tmp_path / "o.json").read_text())
    assert rows and all(value > 0 for value in _numbers(rows))


def test_denoisers_compares_graphs_side_by_side(tmp_path: Path) -> None:
    out = _run(
        "denoisers",
        "--models",
        "mnist-unet",
        "mnist-denoise",
        "--rounds",
        "1",
        "--seconds",
        "0.05",
        json_out=tmp_path / "d.json",
    )
    assert "| mnist-unet | 68.3 |" in out  # the U-Net's multiply-adds, counted from the graph
    results = json.loads((tmp_path / "d.json").read_text())["results"]
    assert results["mnist-unet"]["ratio1"] == 1.0 and results["mnist-denoise"]["batch32"] > 0


def test_frontier_plots_quality_against_speed_from_a_denoisers_run(tmp_path: Path) -> None:
    _run(
        "denoisers",
        "--models",
        "mnist-unet",
        "mnist-s2d",
        "mnist-s2d-int8",
        *ONE_QUICK_ROUND,
        json_out=tmp_path / "d.json",
    )
    out = _run("frontier", str(tmp_path / "d.json"), "--out", str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every model of the run has a row, its PSNR read from its card
    card = json.loads((ROOT / "models" / "mnist-s2d-int8" / "card.json").read_text())
    mean = sum(card["metrics"]["psnr"]) / 7
    assert "| mnist-s2d-int8 | " in out and f"| {mean:.2f} |" in out
    assert "on the frontier (mean PSNR): " in out


def test_the_frontier_is_every_model_nothing_beats_on_both_counts() -> None:
    from bench.frontier import frontier

    rows = [
        {"id": "slow-best", "images_per_s": 100.0, "q": 30.0},
        {"id": "fast-good", "images_per_s": 400.0, "q": 29.0},
        {"id": "fast-worse", "images_per_s": 300.0, "q": 28.0},  # fast-good beats it on both
        {"id": "fastest-poor", "images_per_s": 900.0, "q": 20.0},
    ]
    assert frontier(rows, "q") == ["fastest-poor", "fast-good", "slow-best"]


def test_denoisers_prices_an_untrained_candidate_beside_the_models(tmp_path: Path) -> None:
    out = _run(
        "denoisers",
        "--models",
        "mnist-unet",
        "mnist-s2d",
        "--candidate",
        "s2d-7x7",
        "s2d",
        "deep_width=32",
        "lowres_convs=4",
        *ONE_QUICK_ROUND,
        json_out=tmp_path / "d.json",
    )
    results = json.loads((tmp_path / "d.json").read_text())["results"]
    # The shipped s2d's multiply-adds, and the candidate's: two 14x14 convs fewer, a 7x7 level more.
    assert results["mnist-s2d"]["mflop"] == pytest.approx(24.2, abs=0.1)
    assert results["s2d-7x7"]["mflop"] == pytest.approx(20.0, abs=0.1)
    assert "| s2d-7x7 |" in out and results["s2d-7x7"]["batch1"] > 0


def test_throughput_measures_echo_denoise_and_efficiency(wrk: None, tmp_path: Path) -> None:
    out = _run(
        "throughput", "--concurrency", "8", "--seconds", "1", "--rounds", "1", json_out=tmp_path / "t.json"
    )
    assert "**efficiency**" in out
    assert "non-2xx responses and socket errors over all runs: 0" in out


def test_batching_compares_both_variants(wrk: None) -> None:
    out = _run("batching", "--seconds", "1", "--rounds", "1")
    assert "| 64 | batched |" in out and "| 64 | batch size 1 |" in out and "**ratio**" in out
    assert "non-2xx 0, errors 0" in out


def test_stages_prints_every_stage() -> None:
    out = _run("stages", "--seconds", "0.05", "--windows", "1")
    for stage in (
        "decode the upload, usual path",
        "onnxruntime, autoencoder, batch 1",
        "/denoise, whole request",
    ):
        assert stage in out


def test_ood_splits_counts_the_flagged_share_of_every_split() -> None:
    out = _run("ood_splits", "models/mnist-s2d", "--limit", "40")
    assert "| model | train σ=0 |" in out and "test σ=0.3 |" in out
    (row,) = [line for line in out.splitlines() if line.startswith("| `mnist-s2d` |")]
    cells = row.strip("|").split("|")[1:]
    # Four MNIST-5k splits, then (with `make mnist-data`) unseen MNIST digits and t10k; 3 levels each.
    sets = 6 if (MNIST_DIR / "t10k-images-idx3-ubyte").is_file() else 4
    assert len(cells) == 3 * sets and all(cell.strip().endswith("% (40)") for cell in cells)


def test_ood_strokes_compares_the_candidates_and_counts_false_positives_per_class() -> None:
    fashion_dir_or_skip()
    out = _run("ood_strokes", "models/fashion-s2d", "--limit", "60")
    assert "#### `fashion-s2d` (1500 images calibrate, 60 scored; strokes seed 31)" in out
    for candidate in ("pictures", "strokes alone", "pictures + strokes"):
        rows = [line for line in out.splitlines() if line.startswith(f"| {candidate} | other data set")]
        assert len(rows) == 1 and all(0.0 <= float(c) <= 1.0 for c in rows[0].strip("|").split("|")[2:])
    # the per-class table: one row per candidate and level, one cell per label
    per_class = [line for line in out.splitlines() if line.startswith("| pictures + strokes | 0.3 |")]
    assert len(per_class) == 1 and per_class[0].count("%") == 10


def test_ood_splits_scores_the_encode_view_where_a_model_has_one() -> None:
    out = _run("ood_splits", "--view", "encode", "models/mnist-dense", "--limit", "40")
    (row,) = [line for line in out.splitlines() if line.startswith("| `mnist-dense` |")]
    assert all(cell.strip().endswith("% (40)") for cell in row.strip("|").split("|")[1:])
    argv = [sys.executable, "-m", "bench.ood_splits", "--view", "encode", "models/mnist-s2d"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1 and "no 'encode' view (it has denoise)" in result.stderr


@pytest.mark.parametrize("concurrency", ["1", "8"])
def test_ood_request_cost_times_the_score_on_and_off(concurrency: str) -> None:
    out = _run("ood_request_cost", "--requests", "16", "--rounds", "2", "--concurrency", concurrency)
    for row in ("| score on |", "| score off |", "| on − off, paired by round |", "run_all scored.onnx"):
        assert row in out
    # 16 requests in each of 2 rounds (the warm-up is not counted): 32 graph calls one at a time,
    # fewer with 8 in flight (shared batches)
    (calls,) = [int(line.split("|")[2]) for line in out.splitlines() if "scores on |" in line]
    assert calls == 32 if concurrency == "1" else 0 < calls < 32


def test_ood_request_cost_graph_only_runs_the_scored_graph_without_the_score() -> None:
    out = _run("ood_request_cost", "--requests", "8", "--rounds", "2", "--graph-only")
    for row in (
        "| score graph only |",
        "| graph only − off, paired by round |",
        "| on − graph only, paired by round |",
    ):
        assert row in out
    calls = {
        line.split("|")[1].strip(): int(line.split("|")[2])
        for line in out.splitlines()
        if line.startswith(("| batch function", "| run"))
    }
    # 8 requests in each of 2 rounds, one at a time: the third app's batches ran the scored graph
    # as the "on" app's did, and the plain graph ran only for "off"
    assert (
        calls["batch function, autoencoder, graph only"]
        == calls["batch function, autoencoder, scores on"]
        == 16
    )
    assert calls["run_all scored.onnx"] == 32
    assert calls["run autoencoder.onnx"] == 16


def test_after_run_times_the_step_after_a_run_again_and_alone() -> None:
    out = _run("after_run", "--rounds", "5")
    rows = [line for line in out.splitlines() if line.startswith(("| 1 |", "| 32 |"))]
    assert len(rows) == 2
    for row in rows:
        cells = [float(c) for c in row.strip("|").split("|")[1:]]
        assert len(cells) == 3 and all(c > 0 for c in cells)


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def test_targets_measures_every_contender_and_prints_the_ratios(wrk: None, tmp_path: Path) -> None:
    out = _run("targets", "--rounds", "1", "--seconds", "1", json_out=tmp_path / "t.json")
    result = json.loads((tmp_path / "t.json").read_text())
    assert set(result["runs"]) == {"echo", "denoise", "v2"}
    for label, runs in result["runs"].items():
        assert runs[0]["requests"] > 0 and runs[0]["non_2xx"] == 0 and runs[0]["errors"] == 0, label
    assert "efficiency (denoise ÷ ideal)" in out and "v2 binary ÷ denoise PNG" in out
