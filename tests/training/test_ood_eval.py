"""training.ood_eval: the AUROC, the table and its place in docs/evaluation.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import ood_eval


def test_auroc_counts_pairs_and_halves_ties() -> None:
    assert ood_eval.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert ood_eval.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert ood_eval.auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5
    # 3 of the 4 pairs ordered, none tied.
    assert ood_eval.auroc(np.array([0.0, 2.0]), np.array([1.0, 3.0])) == 0.75
    rng = np.random.default_rng(0)
    inside, outside = rng.normal(0, 1, 400), rng.normal(1, 1, 300)
    brute = np.mean([(o > i) + 0.5 * (o == i) for o in outside for i in inside])
    assert ood_eval.auroc(inside, outside) == pytest.approx(brute)


def _result(fpr: float, auroc: float) -> dict:
    n = len(ood_eval.LEVELS)
    sets = {"Fashion-MNIST": {"auroc": [auroc] * n, "flagged": [90.0] * n}}
    return {"id": "m", "dataset": "mnist5k", "views": {"denoise": {"fpr": [fpr] * n, "sets": sets}}}


def test_misses_name_each_target_missed_at_low_noise() -> None:
    assert ood_eval.misses([_result(0.5, 0.995)]) == []
    missed = ood_eval.misses([_result(1.5, 0.98)])
    assert len(missed) == 2 * sum(s <= 0.3 for s in ood_eval.LEVELS)
    assert "m (denoise): 1.5 % false positives at σ=0" in missed


def test_write_section_replaces_only_the_marked_table(tmp_path: Path) -> None:
    doc = tmp_path / "evaluation.md"
    doc.write_text(f"before\n{ood_eval.MARK_START}\nold\n{ood_eval.MARK_END}\nafter\n")
    ood_eval.write_section(doc, ood_eval.markdown([_result(0.5, 0.995)]))
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| `m` | denoise | Fashion-MNIST: AUROC (flagged) | 0.995 (90 %)" in text
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    with pytest.raises(SystemExit):
        ood_eval.write_section(plain, "x")


def test_the_most_flagged_class_is_the_one_with_the_largest_share_and_gets_a_row() -> None:
    from contract.ood import Scores

    labels = np.array([0, 0, 0, 0, 5, 5, 7, 7, 7, 7])
    flagged = np.array([1, 0, 0, 0, 1, 0, 1, 0, 0, 0], bool)
    scores = Scores(np.where(flagged, 100.0, 50.0), ~flagged, 99.5)
    assert ood_eval._most_flagged_class(scores, labels) == [50.0, 5]  # 1 of 2, above 1 of 4 twice
    result = _result(0.5, 0.995)
    result["views"]["denoise"]["most_flagged_class"] = [[2.0, 5]] * len(ood_eval.LEVELS)
    table = ood_eval.markdown([result])
    assert "| `m` | denoise | own test images: the most flagged class (its label) | 2.0 % (5) |" in table
    assert "most flagged" not in ood_eval.markdown([_result(0.5, 0.995)])  # no labels, no row
