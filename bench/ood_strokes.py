"""The strokes signal (a background of pen strokes) against the pictures alone: AUROC on VALIDATION data.

    python -m bench.ood_strokes models/fashion-s2d models/fashion-unet models/fashion-s2d-mixed \
        models/fashion-denoise models/mnist-s2d

The ``strokes`` signal (contract.ood) is the ``pictures`` distance less the distance of the same
vector to random pen strokes (``training.outsiders.strokes``) run through the model: a log
likelihood ratio against a background of drawings. Both distances are fitted as
``training.calibrate`` fits them (its fit images, conditions and seeds). In-distribution: the
model's validation images, the first ``HALF`` calibrating each candidate
(``contract.ood.fit_view``, one noise bin), the rest scored (MNIST-5k: see ``insiders``);
outsiders, none from a test split: the other data set's train split, uniform noise, letters
(another seed than the evaluation's), the inverted scored images, each at every level with the
same corruption as the insiders. Prints two markdown tables per model: AUROC per candidate,
outsider set and level, with the share of scored insiders past each candidate's 99.5th
percentile; then, for labelled insiders, that share per class (a detector's false positives
gather where a class looks most like what it watches for). ``--strokes-seed`` draws another
background, to see that the figures do not hang on one draw; ``--scale 1`` describes the pictures
at full resolution, as calibrations of version 2 did. docs/evaluation.md, "A background of pen
strokes" and "Version 3: the pictures at half resolution".
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from contract import ood
from contract.card import read_card
from training import calibrate as cal
from training import outsiders
from training.data import load_dataset
from training.ood_eval import auroc

LEVELS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
OTHER_DATASET = {"mnist5k": "fashion", "fashion": "mnist5k"}
OUTSIDERS_EACH = 1000
HALF = 1500  # validation images that calibrate (Fashion-MNIST has 7,500)
PER_CLASS = ("pictures", "pictures + strokes")


def candidates(has_code: bool) -> dict[str, tuple[str, ...]]:
    """name → the signals whose largest standardised value it scores."""
    found = {
        "pictures": ("pictures",),
        "strokes alone": ("strokes",),
        "pictures + strokes": ("pictures", "strokes"),
    }
    if has_code:
        found |= {
            "code + pictures": ("code", "pictures"),
            "code + pictures + strokes": ("code", "pictures", "strokes"),
        }
    return found


def insiders(card: dict, data: cal.Data) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The images that calibrate, those scored as insiders and their labels (None: unlabelled).

    The first ``HALF`` validation images calibrate and the rest are scored; for MNIST-5k, whose
    validation split is 500 digits, the calibration's own images calibrate (those 500 and 2,500
    MNIST training digits outside MNIST-5k) and 3,000 further such digits are scored, unlabelled,
    as ``bench.ood_splits`` takes them."""
    if card["dataset"] == "mnist5k":
        from training.data import mnist_unseen

        fresh = mnist_unseen(3000, skip=cal.UNSEEN_DIGITS)
        if fresh is None:
            raise SystemExit("MNIST's files are not in data/mnist (make mnist-data)")
        return cal.calibration_images(card, data)[0], fresh, None
    labels = load_dataset(card["dataset"]).val_y
    half = min(HALF, len(data.validation) // 2)
    return data.validation[:half], data.validation[half:], labels[half:]


def run(model_dir: Path, strokes_seed: int, limit: int | None = None) -> None:
    card = read_card(model_dir, served=False)
    data = cal.load_data(card["dataset"])
    # the pictures', the code's (models with one) and the strokes' distances, as calibration fits them
    distances = cal.fit_distances(model_dir, card, data.train, strokes_seed)
    names = ["code", "pictures", "strokes"] if "code" in distances else ["pictures", "strokes"]

    def signals(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs, codes = cal._run(model_dir, card, images)
        return ood.signals(names, images, distances, outputs=outputs, codes=codes)

    fit_part, score_part, score_labels = insiders(card, data)
    score_part = score_part[:limit]
    score_labels = None if score_labels is None else score_labels[:limit]
    each = min(OUTSIDERS_EACH, limit or OUTSIDERS_EACH)
    sets = {
        "other data set (train split)": cal.load_data(OTHER_DATASET[card["dataset"]]).train[:each],
        "uniform noise": outsiders.uniform_noise(each, 11),
        "letters": outsiders.letters(each, 12),
        "inverted": outsiders.inverted(score_part),
    }
    parts = [signals(cal.corrupt("gaussian", fit_part, s, 900 + i)) for i, s in enumerate(LEVELS)]
    fitted = {k: np.concatenate([p[k] for p in parts]) for k in names}
    one_bin = np.zeros(len(fitted["pictures"]))
    cands = candidates("code" in distances)
    views = {c: ood.fit_view({k: fitted[k] for k in s}, one_bin, bins=1) for c, s in cands.items()}
    table: dict[tuple[str, str], list[str]] = {}
    classes = np.unique(score_labels) if score_labels is not None else np.empty(0)
    per_class: dict[str, list[list[float]]] = {c: [] for c in PER_CLASS}
    for i, s in enumerate(LEVELS):
        inside = signals(cal.corrupt("gaussian", score_part, s, 700 + i))
        outside = {k: signals(cal.corrupt("gaussian", x, s, 800 + i)) for k, x in sets.items()}
        for c, view in views.items():
            a = ood.combined(view, inside, np.zeros(len(score_part)))
            flagged = a > view["threshold"]
            if c in per_class and score_labels is not None:
                per_class[c].append([100 * float(flagged[score_labels == k].mean()) for k in classes])
            table.setdefault((c, "insiders past the 99.5th"), []).append(f"{100 * np.mean(flagged):.1f} %")
            for k, values in outside.items():
                b = ood.combined(view, values, np.zeros(len(sets[k])))
                table.setdefault((c, k), []).append(f"{auroc(a, b):.3f}")
    sizes = f"{len(fit_part)} images calibrate, {len(score_part)} scored; strokes seed {strokes_seed}"
    print(f"\n#### `{card['id']}` ({sizes})\n")
    print("| candidate | against | " + " | ".join(f"σ={s:g}" for s in LEVELS) + " |")
    print("|---|---|" + "---|" * len(LEVELS))
    order = list(cands)
    for (c, k), row in sorted(table.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        print(f"| {c} | {k} | " + " | ".join(row) + " |", flush=True)
    if score_labels is None:
        return
    print(f"\nShare of the {len(score_part)} scored validation images flagged, per class (label):\n")
    print("| candidate | σ | " + " | ".join(str(int(k)) for k in classes) + " |")
    print("|---|---|" + "---|" * len(classes))
    for c, rows in per_class.items():
        for s, shares in zip(LEVELS, rows, strict=True):
            print(f"| {c} | {s:g} | " + " | ".join(f"{v:.1f} %" for v in shares) + " |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_strokes", description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--strokes-seed", type=int, default=cal.STROKES_SEED, help="the background's seed")
    parser.add_argument("--limit", type=int, help="score at most N insiders and N of each outsider set")
    parser.add_argument(
        "--scale",
        type=int,
        choices=sorted(set(ood.SCALES.values())),
        default=ood.SCALE,
        help=f"describe the pictures after averaging SCALE×SCALE squares of pixels (default {ood.SCALE}, "
        "this version's; 1: version 2's full-resolution descriptor)",
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    # Every descriptor this run computes (the fits, the calibrations, the scores) at that scale.
    ood.SCALE = args.scale
    print(f"pictures described at scale {args.scale} (contract.ood.descriptor)\n")
    for model_dir in args.models:
        run(model_dir, args.strokes_seed, args.limit)


if __name__ == "__main__":
    main()
