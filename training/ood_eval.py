"""Evaluate the calibrated out-of-distribution scores on TEST data and outsiders.

    python -m training.ood_eval --all --write docs/evaluation.md

Per shipped model and view (``denoise``: what /denoise serves; ``encode``: /encode), at every noise
level (clean and the protocol's seven, test noise seed): the AUROC of the score against each set of
outsiders with the share of them flagged at the served threshold, and the false-positive rate on
the model's own test images (and, where the test images have labels, in the class it is highest
in: a detector's false positives gather where a class looks most like what it watches for).
Outsiders: the other data set's test split (MNIST-5k ↔ Fashion-MNIST), uniform noise, letters
rendered with a font (training.outsiders; another seed than the one signals were chosen with) and
the inverted test images. MNIST-5k's test split is 1,000 digits; where MNIST's own IDX files are at
``--mnist-dir`` (``make mnist-data``), the MNIST-5k models' false-positive rate is also measured on
all 10,000 MNIST test digits (t10k, none of them among MNIST-5k's). Nothing here
feeds back into a calibration.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contract import ood
from contract.card import model_dirs
from training import calibrate as cal
from training import outsiders
from training.data import MNIST_DIR

log = logging.getLogger(__name__)

LEVELS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
N = 1000
OTHER = {"mnist5k": "fashion", "fashion": "mnist5k"}
OTHER_NAME = {"mnist5k": "Fashion-MNIST", "fashion": "MNIST-5k"}
# More test images of the same source, for the false-positive rate alone: name → data set.
MORE_TESTS = {"mnist5k": ("MNIST t10k", "mnist")}
LETTER_SEED = 22
UNIFORM_SEED = 21
NOISE_SEED = 4321  # the outsiders' noise; the insiders get the test protocol's seed
MARK_START, MARK_END = "<!-- ood-table:start -->", "<!-- ood-table:end -->"
# Targets (issue 20): AUROC against the other data set and FPR on own test images, at σ <= 0.3.
TARGET_AUROC, TARGET_FPR, TARGET_LEVEL = 0.99, 1.0, 0.3


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an outsider scores above an insider), ties counted half (the Mann-Whitney statistic)."""
    both = np.concatenate([inside, outside])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # mid-ranks: the rank of each distinct value is the mean of the positions it occupies
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ranks = (starts + (counts + 1) / 2.0)[inverse]
    n_out = len(outside)
    return float((ranks[len(inside) :].sum() - n_out * (n_out + 1) / 2) / (len(inside) * n_out))


def _scores(
    calibration: ood.Calibration, model_dir: Path, card: dict[str, Any], images: np.ndarray
) -> dict[str, ood.Scores]:
    outputs = cal.Graph(model_dir / "autoencoder.onnx")(images)
    codes = cal.Graph(model_dir / "encoder.onnx")(images) if cal.has_encoder(card) else None
    return {view: calibration.score(view, images, outputs=outputs, codes=codes) for view in calibration.views}


def _flagged_share(scores: ood.Scores) -> float:
    """Percent of a batch past the served threshold."""
    return 100.0 * float(np.mean(~scores.in_distribution))


def _most_flagged_class(scores: ood.Scores, labels: np.ndarray) -> list[float | int]:
    """``[percent flagged, label]`` of the class with the largest flagged share."""
    classes = np.unique(labels)
    shares = [100.0 * float(np.mean(~scores.in_distribution[labels == k])) for k in classes]
    worst = int(np.argmax(shares))
    return [shares[worst], int(classes[worst])]


def evaluate(
    model_dir: Path,
    data: cal.Data,
    other: np.ndarray,
    n: int = N,
    more_tests: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Per view: insiders' FPR and each outsider set's AUROC and flagged share, per level.

    ``more_tests`` (name → images, used whole) are further in-distribution test images whose
    false-positive rate is reported beside the test split's.
    """
    from training.protocol import TEST_NOISE_SEED

    card = json.loads((model_dir / "card.json").read_text())
    calibration = ood.load(model_dir, card)
    if calibration is None:
        raise SystemExit(
            f"{model_dir}: no 'ood' calibration in the card; run python -m training.calibrate first"
        )
    test = data.test[:n]
    labels = None if data.test_labels is None else data.test_labels[:n]
    sets = {
        OTHER_NAME.get(card["dataset"], "other"): other[:n],
        "uniform noise": outsiders.uniform_noise(n, UNIFORM_SEED),
        "letters": outsiders.letters(n, LETTER_SEED),
        "inverted": outsiders.inverted(test),
    }
    more_tests = more_tests or {}
    result: dict[str, Any] = {
        view: {
            "fpr": [],
            "most_flagged_class": [],
            "more_fpr": {name: [] for name in more_tests},
            "sets": {name: {"auroc": [], "flagged": []} for name in sets},
        }
        for view in calibration.views
    }
    for i, level in enumerate(LEVELS):
        inside = _scores(calibration, model_dir, card, cal.corrupt("gaussian", test, level, TEST_NOISE_SEED))
        outside = {
            name: _scores(calibration, model_dir, card, cal.corrupt("gaussian", x, level, NOISE_SEED + i))
            for name, x in sets.items()
        }
        for name, images in more_tests.items():
            noisy = cal.corrupt("gaussian", images, level, TEST_NOISE_SEED)
            more = _scores(calibration, model_dir, card, noisy)
            for view, s_more in more.items():
                result[view]["more_fpr"][name].append(_flagged_share(s_more))
        for view, s_in in inside.items():
            result[view]["fpr"].append(_flagged_share(s_in))
            if labels is not None:
                result[view]["most_flagged_class"].append(_most_flagged_class(s_in, labels))
            for name, per_view in outside.items():
                s_out = per_view[view]
                assert s_in.value is not None and s_out.value is not None  # numpy scores carry it
                result[view]["sets"][name]["auroc"].append(auroc(s_in.value, s_out.value))
                result[view]["sets"][name]["flagged"].append(_flagged_share(s_out))
        log.info("%s s=%g done", card["id"], level)
    return {
        "id": card["id"],
        "dataset": card["dataset"],
        "test_images": len(test),
        "more_test_images": {name: len(images) for name, images in more_tests.items()},
        "views": result,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    head = "| model | view | inputs | " + " | ".join(f"σ={s:g}" for s in LEVELS) + " |"
    lines = [head, "|---|---|---|" + "---|" * len(LEVELS)]
    for r in results:
        for view, v in r["views"].items():
            fpr = " | ".join(f"{x:.1f} %" for x in v["fpr"])
            lines.append(f"| `{r['id']}` | {view} | own test images: false positives | {fpr} |")
            if v.get("most_flagged_class"):
                cells = " | ".join(f"{x:.1f} % ({k})" for x, k in v["most_flagged_class"])
                inputs = "own test images: the most flagged class (its label)"
                lines.append(f"| `{r['id']}` | {view} | {inputs} | {cells} |")
            for name, shares in v.get("more_fpr", {}).items():
                cells = " | ".join(f"{x:.1f} %" for x in shares)
                count = r["more_test_images"][name]
                inputs = f"{name} ({count:,} images): false positives"
                lines.append(f"| `{r['id']}` | {view} | {inputs} | {cells} |")
            for name, s in v["sets"].items():
                cells = " | ".join(
                    f"{a:.3f} ({f:.0f} %)" for a, f in zip(s["auroc"], s["flagged"], strict=True)
                )
                lines.append(f"| `{r['id']}` | {view} | {name}: AUROC (flagged) | {cells} |")
    return "\n".join(lines)


def misses(results: list[dict[str, Any]]) -> list[str]:
    """The targets each model misses at σ <= 0.3, in words."""
    out = []
    for r in results:
        for view, v in r["views"].items():
            other = OTHER_NAME.get(r["dataset"])
            tests = [("", v["fpr"])] + [(f" on {name}", x) for name, x in v.get("more_fpr", {}).items()]
            for on, shares in tests:
                for level, fpr in zip(LEVELS, shares, strict=True):
                    if level <= TARGET_LEVEL and fpr > TARGET_FPR:
                        out.append(f"{r['id']} ({view}): {fpr:.1f} % false positives{on} at σ={level:g}")
            if other is None:
                continue
            for level, a in zip(LEVELS, v["sets"][other]["auroc"], strict=True):
                if level <= TARGET_LEVEL and a < TARGET_AUROC:
                    out.append(f"{r['id']} ({view}): AUROC {a:.3f} against {other} at σ={level:g}")
    return out


def write_section(path: Path, table: str) -> None:
    """Replace the table between the markers in ``path`` (they must be there)."""
    text = path.read_text()
    pattern = re.compile(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: has no {MARK_START} … {MARK_END} section to replace")
    path.write_text(pattern.sub(lambda _: f"{MARK_START}\n{table}\n{MARK_END}", text))


def _more_tests(dataset: str, mnist_dir: Path, data: dict[str, cal.Data]) -> dict[str, np.ndarray]:
    """The further test images for ``dataset``'s models, loaded into ``data`` once."""
    if dataset not in MORE_TESTS:
        return {}
    name, source = MORE_TESTS[dataset]
    if source not in data:
        if not mnist_dir.is_dir():
            log.warning("%s: not there (make mnist-data); no false positives on %s", mnist_dir, name)
            return {}
        data[source] = cal.load_data(source, mnist_dir)
    return {name: data[source].test}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.ood_eval", description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help=f"every model under {cal.MODELS_DIR}/")
    parser.add_argument(
        "--write", type=Path, help="put the table into this markdown file, between its markers"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--images", type=int, default=N, help="test images and outsiders per set and level")
    parser.add_argument(
        "--mnist-dir",
        type=Path,
        default=MNIST_DIR,
        help=f"MNIST's IDX files: the MNIST-5k models' false positives on all of t10k (default {MNIST_DIR})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    dirs = model_dirs(cal.MODELS_DIR) if args.all else list(args.models)
    if not dirs:
        parser.error("name model directories or pass --all")
    data: dict[str, cal.Data] = {}
    results = []
    for model_dir in dirs:
        dataset = json.loads((model_dir / "card.json").read_text())["dataset"]
        for name in (dataset, OTHER.get(dataset)):
            if name is not None and name not in data:
                data[name] = cal.load_data(name)
        other = data[OTHER[dataset]].test if dataset in OTHER else np.empty((0, 28, 28), np.float32)
        more = _more_tests(dataset, args.mnist_dir, data)
        results.append(evaluate(model_dir, data[dataset], other, args.images, more))
    table = markdown(results)
    if args.write:
        write_section(args.write, table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    missed = misses(results)
    log.info("targets missed: %s", "; ".join(missed) if missed else "none")
    if not args.write:
        import sys

        sys.stdout.write(table + "\n")


if __name__ == "__main__":
    main()
