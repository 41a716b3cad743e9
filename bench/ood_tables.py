"""One pooled percentile table or per-noise tables: false positives per noise level, on VALIDATION.

    python -m bench.ood_tables models/fashion-denoise models/mnist-conv models/mnist-dense

For each view of each model: its validation signals (as ``training.calibrate`` computes them, with
the card's fitted distances) at every calibration condition; the first half of the images
calibrates the view with 1, 4 and 8 tables (``contract.ood.fit_view(table_bins=...)``), and the
share of the second half past the threshold is printed per condition, in percent. docs/evaluation.md
("Per-noise percentile tables") has what it showed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from contract import ood
from contract.card import read_card
from training import calibrate as cal

TABLES = (1, 4, 8)


def run(model_dir: Path) -> None:
    card = read_card(model_dir, served=False)
    calibration = ood.load(model_dir, card)
    if calibration is None:
        raise SystemExit(f"{model_dir}: its card has no 'ood' block")
    data = cal.load_data(card["dataset"], **cal.own_data_options(card))
    validation = data.validation[: cal.MAX_VALIDATION]
    conditions = cal.noise_conditions(card)
    with threadpool_limits(limits=1, user_api="blas"):
        values, sigma = cal.validation_signals(model_dir, card, validation, calibration.distances)
    n, half = len(validation), len(validation) // 2
    first = np.concatenate([np.arange(i * n, i * n + half) for i in range(len(conditions))])
    second = np.concatenate([np.arange(i * n + half, (i + 1) * n) for i in range(len(conditions))])
    print(f"\n#### `{card['id']}` ({half} images calibrate, {n - half} counted, per condition)\n")
    print("| view | tables | " + " | ".join(f"{kind} {level:g}" for kind, level in conditions) + " |")
    print("|---|---|" + "---|" * len(conditions))
    for view, v in values.items():
        fit = {k: a[first] for k, a in v.items()}
        held = {k: a[second] for k, a in v.items()}
        for tables in TABLES:
            fitted = ood.fit_view(fit, sigma[first], bins=cal.NOISE_BINS, table_bins=tables)
            flagged = cal.flagged_per_condition(fitted, held, sigma[second], n - half)
            print(f"| {view} | {tables} | " + " | ".join(f"{100 * f:.1f} %" for f in flagged) + " |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_tables")
    parser.add_argument("models", nargs="+", type=Path, help="model directories with an 'ood' block")
    for model_dir in parser.parse_args().models:
        run(model_dir)


if __name__ == "__main__":
    main()
