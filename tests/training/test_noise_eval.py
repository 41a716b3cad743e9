"""The evaluation under other noises: real graphs on real test images, the report through the one writer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from contract import card as cards
from tests.conftest import ROOT, fashion_dir_or_skip
from tests.training.conftest import sections, write_model_dir
from training import noise
from training.data import load_dataset
from training.noise_eval import evaluate_noise_model, noise_report
from training.protocol import TEST_NOISE_SEED, psnr
from training.report import render
from training.score import run_onnx

N_TEST = 6


def test_a_salt_and_pepper_model_is_scored_per_level_and_reported_with_its_tuned_baselines(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    model_dir = write_model_dir(models, "mnist-sp", 0.8)
    write_model_dir(models, "mnist-unet", 1.0)  # a peer on the same data: compared in every table
    cards.update_card(model_dir, noise=noise.card_entry("salt-pepper", 0.0, 0.3))
    card = cards.read_card(model_dir)

    result = evaluate_noise_model(model_dir, card, test_limit=N_TEST, tune_images=4)

    text = (model_dir / "report" / "README.md").read_text()
    assert text.startswith(
        "# mnist-sp: evaluation under the noise it was made for\n\ntest model: output = 0.8"
    )
    assert list(sections(text)) == ["", "salt-pepper (p)", "Plots", "Reproduce"]
    # The model's own row: its graph on the test images with the evaluation's noise, scored here.
    clean = load_dataset("mnist5k").test_x[:N_TEST]
    levels = noise.SPECS["salt-pepper"].eval_levels
    own = [
        float(psnr(clean, run_onnx(model_dir / "autoencoder.onnx", noisy)).mean())
        for noisy in (noise.noisy_numpy("salt-pepper", clean, p, TEST_NOISE_SEED) for p in levels)
    ]
    row = next(line for line in text.splitlines() if line.startswith("| **mnist-sp** |"))
    cells = [float(c.split(" / ")[0]) for c in row.strip("|").split("|")[1:]]
    np.testing.assert_allclose(cells, own, atol=0.006)
    assert "| mnist-unet |" in text and "| median 3×3 |" in text and "| NL-means" in text
    assert "| method | p=0.01 | p=0.02 | p=0.05 | p=0.1 | p=0.2 | p=0.3 |" in text
    tuned = text.split("each on the validation split:\n\n")[1]
    assert re.match(r"\| method \| p=0.01 .*\n\|---\|.*\n\| gaussian \| sigma [\d.]+ \|", tuned)
    command = f"python -m training.evaluate --model {model_dir} --test-limit {N_TEST} --tune-images 4"
    assert text.endswith(f"## Reproduce\n\n    {command}\n")
    metrics = json.loads((model_dir / "card.json").read_text())["metrics"]
    np.testing.assert_allclose(metrics["by_noise"]["salt-pepper"]["psnr"], own, atol=1e-4)
    assert result["metrics"] == metrics
    for png in ("psnr_vs_noise.png", "examples.png"):
        assert (model_dir / "report" / png).read_bytes()[:4] == b"\x89PNG"


def _own_row(model_id: str, by_noise: dict[str, Any], n: int) -> dict[str, Any]:
    return {"label": model_id, "kind": "model", "test_images": n, **by_noise}


def test_the_shipped_noise_report_regenerates_from_the_stored_card_and_baseline_cache() -> None:
    """fashion-s2d-mixed's report through the one writer, from what the evaluation stored: the card
    (its metrics per noise kind) and docs/evaluation/baselines-fashion.json (the Gaussian section's
    classical rows). The other models' rows under other noises, the classical rows and parameters
    tuned for them, and the means over the BM3D subset are not stored: not compared."""
    models = ROOT / "models"
    card = json.loads((models / "fashion-s2d-mixed" / "card.json").read_text())
    cache = json.loads((ROOT / "docs" / "evaluation" / "baselines-fashion.json").read_text())
    metrics = card["metrics"]
    n = metrics["test_images"]
    fashion_dir_or_skip()
    test_source = load_dataset("fashion").info["test_source"]
    results = []
    for kind, stored in metrics["by_noise"].items():
        mine = {k: stored[k] for k in ("psnr", "ssim")}
        rows = {
            card["id"]: _own_row(
                card["id"], {**mine, "subset_psnr": mine["psnr"], "subset_ssim": mine["ssim"]}, n
            )
        }
        if kind == "gaussian":
            for other in sorted(models.glob("fashion-*/card.json")):
                peer = json.loads(other.read_text())
                if peer["id"] != card["id"]:
                    both = {k: peer["metrics"][k] for k in ("psnr", "ssim")}
                    subset = {"subset_psnr": both["psnr"], "subset_ssim": both["ssim"]}
                    rows[peer["id"]] = _own_row(
                        peer["id"], {**both, **subset}, peer["metrics"]["test_images"]
                    )
            rows.update({k: {"kind": "classical", **e} for k, e in cache["methods"].items()})
        results.append(
            {
                "kind": kind,
                "level_name": stored["level_name"],
                "levels": stored["levels"],
                "rows": rows,
                "subset_images": cache["subset_images"],
                "tuned": {"stored": [0.0] * len(stored["levels"])} if kind != "gaussian" else {},
                "baselines_from": "cache" if kind == "gaussian" else "tuned on validation",
            }
        )
    made = sections(render(noise_report(card, results, test_source, n, metrics["command"])))
    shipped = sections((models / "fashion-s2d-mixed" / "report" / "README.md").read_text())

    assert list(made) == list(shipped)
    for same in ("", "Plots", "Reproduce"):
        assert made[same] == shipped[same], same
    for heading, lines in made.items():
        rows_made = [x for x in lines if x.startswith("| ") and "stored" not in x]
        if heading == "gaussian (s)":  # the paired table's model rows are the full means here
            models_paired = {
                f"| {m}" for m in ("**fashion-s2d-mixed**", "fashion-denoise", "fashion-s2d", "fashion-unet")
            }
            half = len(rows_made) // 2
            rows_made = rows_made[:half] + [
                r for r in rows_made[half:] if not r.startswith(tuple(models_paired))
            ]
        assert set(rows_made) <= set(shipped[heading]), heading
        assert [x for x in lines if not x.startswith("|")] == [
            x for x in shipped[heading] if not x.startswith("|")
        ], heading
