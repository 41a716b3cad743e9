"""Calibrate a model's out-of-distribution score on its validation split and write it into the card.

    python -m training.calibrate models/mnist-denoise
    python -m training.calibrate --all

The model's own ONNX graphs run on its data set's validation images, clean and at every noise
level it is evaluated at (validation's noise seed); for MNIST-5k models, whose validation split is
500 digits, also on ``UNSEEN_DIGITS`` MNIST training digits outside MNIST-5k where MNIST's files are
at hand (``make mnist-data``; training.data.mnist_unseen), so that the 99.5th percentile rests on
more than a few images per level; ``contract.ood`` turns their signals into the
card's ``ood`` block (docs/evaluation.md, "Out-of-distribution scores"). The code distance's mean
and inverse covariance come from the *training* images' codes (noisy as in training), so that the
validation images the percentiles are taken over are not the ones the distance was fitted to.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from contract import ood
from contract.card import model_dirs, update_card
from training import ood_graph

log = logging.getLogger(__name__)

MODELS_DIR = Path("models")
# Validation images per level, a bound on the time a large validation split (Fashion: 7,500)
# takes. With 1,000, the thresholds flagged 0.7-1.5 % of the 6,500 Fashion validation images they
# were not calibrated on at σ = 0 (0.3-1.0 % of the 1,000 they were); 3,000, as for MNIST-5k's
# 500 validation + 2,500 unseen digits, puts 15 images past the 99.5th percentile at each level.
MAX_VALIDATION = 3000
# MNIST training digits outside MNIST-5k beside its 500 validation digits: a 99.5th percentile
# over 500 images per level is the third highest, and on 10,000 such digits the thresholds
# calibrated on validation alone flagged up to 1.7 % at σ = 0 (docs/evaluation.md).
UNSEEN_DIGITS = 2500
MAX_FIT = 3000
# Validation images (clean and at σ = 0.3, beside pen strokes and noise) the scored graph must
# score as numpy does before it is written (training.ood_graph.write)
CHECK_IMAGES = 200
FIT_SEED = 5
BATCH = 500
# Chosen on validation (python -m bench.ood_signals; docs/evaluation.md): /denoise gets the
# distance of the input and output pictures, beside the code's for models that have one; /encode
# the code's; one noise bin (the noise estimate as a covariate gained nothing there).
DENOISE_SIGNALS = ("pictures",)
DENOISE_SIGNALS_WITH_CODE = ("code", "pictures")
ENCODE_SIGNALS = ("code",)
# Data sets whose models with a code score /denoise on the pictures alone: for digits the code
# added nothing on validation and cost an encoder run per request (docs/evaluation.md).
PICTURES_ONLY_DATASETS = frozenset({"mnist5k", "mnist"})
# Data sets whose /denoise view adds the strokes signal (contract.ood): the pictures' distance to
# the training images less their distance to random pen strokes. On validation (python -m
# bench.ood_strokes; docs/evaluation.md, "A background of pen strokes") it lifted the garment
# models' AUROC against digits from 0.95-0.99 to 0.996-0.999 at σ <= 0.3, and the digit models'
# against letters from 0.75-0.83 to 0.93-0.96, with the same share of insiders flagged. A data set
# of one's own is not in it: its pictures may be strokes themselves, and nothing has measured it.
STROKES_DATASETS = frozenset({"fashion", "mnist5k", "mnist"})
STROKES_SEED = 31  # training.outsiders.strokes(MAX_FIT, STROKES_SEED), not an evaluation seed
# A model made for several noise kinds sees pictures under salt-and-pepper and speckle noise that
# the strokes signal finds stroke-like: standardised in one bin, its 99.5th percentile on
# validation rose from 2.0 clean to 3.4 at σ = 0.4 (fashion-s2d-mixed), a threshold that uniform
# noise stayed under (10 % of it flagged on validation). Four noise bins standardise it per noise
# level (82 % flagged). Models of one noise kind keep one bin: four cost fashion-denoise digits at
# σ = 0.3 (86 % flagged against 60 %) and mnist-s2d letters (AUROC 0.966 against 0.927 clean).
# docs/evaluation.md, "A background of pen strokes".
STROKES_MIXED_NOISE_BINS = 4
NOISE_BINS = 1
# A view whose one pooled table flags more than FLAGGED_LIMIT of the validation images of some
# condition the targets cover (clean, Gaussian s <= 0.3, every level of other noises) keeps one
# table per quartile of the noise estimate instead (contract.ood, ``tables``): its false
# positives then stay near 1 - 99.5 % at every noise level, at the cost of a noise estimate per
# request. Views within the limit keep one table and skip that estimate. The limit is the 1 %
# target less about one standard error of a share measured on 1,000 images (0.3 points).
FLAGGED_LIMIT = 0.0075
NOISE_TABLES = 4
TARGET_MAX_GAUSSIAN = 0.3


@dataclass(frozen=True)
class Data:
    """What calibration and the OOD evaluation read of a data set: float32 ``[n, 28, 28]`` arrays."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray | None = None  # int64 [n], for the evaluation's per-class figures

    @classmethod
    def of(cls, split: Any) -> Data:
        """From a ``training.data.Split`` (what training.train has loaded already)."""
        return cls(train=split.train_x, validation=split.val_x, test=split.test_x, test_labels=split.test_y)


def load_data(dataset: str, data_dir: Path | None = None, **own: Any) -> Data:
    """The one place this module and training.ood_eval read training's data helpers."""
    from training.data import load_dataset

    split = load_dataset(dataset, data_dir, **own)
    return Data.of(split)


def noise_conditions(card: dict[str, Any]) -> list[tuple[str, float]]:
    """(kind, level) pairs the score is calibrated over: clean, then every evaluation level of
    every noise kind the model was made for (Gaussian: the protocol's seven)."""
    from training.noise import SPECS, kinds_of

    kind = (card.get("noise") or {}).get("kind", "gaussian")
    conditions: list[tuple[str, float]] = [("gaussian", 0.0)]
    for k in kinds_of(kind):
        conditions += [(k, level) for level in SPECS[k].eval_levels]
    return conditions


def corrupt(kind: str, clean: np.ndarray, level: float, seed: int) -> np.ndarray:
    """The evaluation protocol's corruption (training.noise), clean when the level is 0."""
    from training.noise import noisy_numpy

    if level == 0:
        return clean.astype(np.float32)
    return noisy_numpy(kind, clean, level, seed)  # type: ignore[arg-type]  # kinds_of gave a Kind


class Graph:
    """One ONNX graph on one CPU thread (the machine's cores are shared)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = images.reshape(-1, 1, 28, 28).astype(np.float32)
        parts = [self._session.run(None, {self._input: x[i : i + BATCH]})[0] for i in range(0, len(x), BATCH)]
        return np.concatenate(parts)


def has_encoder(card: dict[str, Any]) -> bool:
    """Whether the model directory has an encoder graph (a lesson export may have the code shape alone)."""
    return "encoder" in (card.get("graphs") or {})


def views_of(card: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The signals of each view a model serves (docs/evaluation.md has the measurements behind them)."""
    strokes = ("strokes",) if card.get("dataset") in STROKES_DATASETS else ()
    if not has_encoder(card):
        return {"denoise": (*DENOISE_SIGNALS, *strokes)}
    if card.get("dataset") in PICTURES_ONLY_DATASETS:
        return {"denoise": (*DENOISE_SIGNALS, *strokes), "encode": ENCODE_SIGNALS}
    return {"denoise": (*DENOISE_SIGNALS_WITH_CODE, *strokes), "encode": ENCODE_SIGNALS}


def _run(model_dir: Path, card: dict[str, Any], images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The autoencoder graph's outputs and (models with a code) the encoder's codes."""
    outputs = Graph(model_dir / "autoencoder.onnx")(images)
    codes = Graph(model_dir / "encoder.onnx")(images) if has_encoder(card) else None
    return outputs, codes


def noisy_fit_images(
    train: np.ndarray, conditions: Sequence[tuple[str, float]], limit: int = MAX_FIT
) -> np.ndarray:
    """Up to ``limit`` training images in a seeded order, each corrupted at one seeded condition:
    what the distances are fitted to."""
    rng = np.random.default_rng(FIT_SEED)
    images = train[rng.permutation(len(train))[:limit]]
    pick = rng.integers(0, len(conditions), len(images))
    noisy = np.empty_like(images)
    for i, (kind, level) in enumerate(conditions):
        if (pick == i).any():
            noisy[pick == i] = corrupt(kind, images[pick == i], level, FIT_SEED + i)
    return noisy


def fit_distances(
    model_dir: Path, card: dict[str, Any], train: np.ndarray, strokes_seed: int = STROKES_SEED
) -> dict[str, ood.Distance]:
    """The distances the views use, fitted to up to MAX_FIT training images, each at one of the
    calibration's conditions (a seeded draw), as the model saw them in training; the strokes
    signal's background, to as many random pen strokes (``strokes_seed``) drawn in the same way."""
    from training import outsiders

    conditions = noise_conditions(card)
    noisy = noisy_fit_images(train, conditions)
    outputs, codes = _run(model_dir, card, noisy)
    signals = {s for names in views_of(card).values() for s in names}
    wanted = ood.reads(signals) - {"strokes"}
    distances = {name: ood.fit_distance(ood.features(name, noisy, outputs, codes)) for name in sorted(wanted)}
    if "strokes" in signals:
        pictures = noisy_fit_images(outsiders.strokes(MAX_FIT, strokes_seed), conditions)
        drawn = Graph(model_dir / "autoencoder.onnx")(pictures)  # the output alone: no code read
        distances["strokes"] = ood.fit_distance(ood.features("pictures", pictures, drawn, None))
    return distances


def validation_signals(
    model_dir: Path, card: dict[str, Any], validation: np.ndarray, distances: dict[str, ood.Distance]
) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
    """Each view's signals and the noise estimates of the validation images at every condition."""
    from training.protocol import VAL_NOISE_SEED

    per_view: dict[str, dict[str, list[np.ndarray]]] = {view: {} for view in views_of(card)}
    sigma: list[np.ndarray] = []
    for kind, level in noise_conditions(card):
        noisy = corrupt(kind, validation, level, VAL_NOISE_SEED)
        outputs, codes = _run(model_dir, card, noisy)
        sigma.append(ood.noise_estimate(noisy))
        for view, names in views_of(card).items():
            values = ood.signals(names, noisy, distances, outputs=outputs, codes=codes)
            for name, v in values.items():
                per_view[view].setdefault(name, []).append(v)
    joined = {view: {k: np.concatenate(v) for k, v in values.items()} for view, values in per_view.items()}
    return joined, np.concatenate(sigma)


def calibration_images(
    card: dict[str, Any], data: Data, mnist_dir: Path | None = None
) -> tuple[np.ndarray, str]:
    """The images the percentiles are taken over, and the card's words for them."""
    from training.data import MNIST_DIR, mnist_unseen

    validation = data.validation[:MAX_VALIDATION]
    if card["dataset"] != "mnist5k":
        return validation, "validation"
    unseen = mnist_unseen(UNSEEN_DIGITS, mnist_dir or MNIST_DIR)
    if unseen is None:
        log.warning("MNIST's files are not at hand (make mnist-data): calibrating on validation alone")
        return validation, "validation"
    return (
        np.concatenate([validation, unseen]),
        f"validation + {UNSEEN_DIGITS} MNIST training digits outside MNIST-5k (training.data.mnist_unseen)",
    )


def calibrate(
    model_dir: Path, data: Data | None = None, data_dir: Path | None = None, mnist_dir: Path | None = None
) -> dict[str, Any]:
    """Calibrate one exported model: write ``ood.npz``, ``scored.onnx`` (where the ``denoise`` view
    reads only input and output) and the card's ``ood`` block; return the block."""
    card = json.loads((model_dir / "card.json").read_text())
    if data is None:
        data = load_data(card["dataset"], data_dir, **own_data_options(card))
    # One BLAS thread, as the service scores: the sums of the fits then come out the same on any
    # number of cores (with one per core the tables moved by 2e-4 between a 1- and a 2-core run).
    with threadpool_limits(limits=1, user_api="blas"):
        distances = fit_distances(model_dir, card, data.train)
        validation, split = calibration_images(card, data, mnist_dir)
        values, sigma = validation_signals(model_dir, card, validation, distances)
    conditions = noise_conditions(card)
    block: dict[str, Any] = {
        "version": ood.VERSION,
        "views": {
            view: fit_view(v, sigma, conditions, noise_bins(card, list(v))) for view, v in values.items()
        },
        "calibrated_on": {
            "split": split,
            "images": len(validation),
            "conditions": [[kind, level] for kind, level in conditions],
            "noise_seed": "validation's (training.protocol.VAL_NOISE_SEED)",
            "distances_fitted_on": f"up to {MAX_FIT} training images, each at one seeded condition"
            + (
                f"; strokes: {MAX_FIT} pen strokes (training.outsiders.strokes, seed {STROKES_SEED}), "
                "the same way"
                if "strokes" in distances
                else ""
            ),
        },
        "parameters": ood.save_distances(model_dir, distances),
        "command": f"python -m training.calibrate {_shown(model_dir)}",
    }
    # The denoise view's signals as nodes after the autoencoder graph, for the service's hot path.
    ood_graph.write(model_dir, card, block, validation[:CHECK_IMAGES])
    update_card(model_dir, ood=block)  # checked as the registry checks it, written atomically
    log.info(
        "calibrated %s on %d images (%s) x %d conditions", model_dir, len(validation), split, len(conditions)
    )
    return block


def flagged_per_condition(
    view: dict[str, Any], values: dict[str, np.ndarray], sigma: np.ndarray, n: int
) -> np.ndarray:
    """The share of validation images past the view's threshold, per condition (``n`` images each)."""
    past = ood.to_percentiles(view, ood.combined(view, values, sigma), sigma).in_distribution == 0
    return past.reshape(-1, n).mean(axis=1)


def fit_view(
    values: dict[str, np.ndarray],
    sigma: np.ndarray,
    conditions: list[tuple[str, float]],
    bins: int = NOISE_BINS,
) -> dict[str, Any]:
    """One pooled table, or per-noise tables where the pooled one flags too many at some condition;
    the signals standardised in ``bins`` noise bins."""
    view = ood.fit_view(values, sigma, bins=bins)
    flagged = flagged_per_condition(view, values, sigma, len(sigma) // len(conditions))
    covered = [k != "gaussian" or level <= TARGET_MAX_GAUSSIAN for k, level in conditions]
    if flagged[covered].max() > FLAGGED_LIMIT:
        view = ood.fit_view(values, sigma, bins=bins, table_bins=NOISE_TABLES)
    return view


def noise_bins(card: dict[str, Any], signals: Sequence[str]) -> int:
    """The standardising bins of a view: ``STROKES_MIXED_NOISE_BINS`` where it has the strokes
    signal and the model was made for several noise kinds, else ``NOISE_BINS``."""
    kinds = {kind for kind, _ in noise_conditions(card)}
    return STROKES_MIXED_NOISE_BINS if "strokes" in signals and len(kinds) > 1 else NOISE_BINS


def _shown(model_dir: Path) -> str:
    """The directory as the command would be typed here: relative to the working directory when inside it."""
    try:
        return str(model_dir.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(model_dir)


def own_data_options(card: dict[str, Any]) -> dict[str, Any]:
    """The loader options an own-data model (folder:, npz:, npy:) was trained with."""
    if ":" not in card["dataset"]:
        return {}
    train = (card.get("config") or {}).get("train") or {}
    return {k: train[k] for k in ("skip_bad", "invert") if k in train}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.calibrate",
        description="Calibrate exported models' out-of-distribution scores on their validation split.",
    )
    parser.add_argument("models", nargs="*", type=Path, help="model directories, e.g. models/mnist-s2d")
    parser.add_argument("--all", action="store_true", help=f"every model under {MODELS_DIR}/")
    parser.add_argument("--data-dir", type=Path, help="IDX files of the data set (mnist)")
    parser.add_argument(
        "--mnist-dir",
        type=Path,
        help="MNIST's IDX files, for MNIST-5k models' unseen digits (default data/mnist)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    dirs = model_dirs(MODELS_DIR) if args.all else list(args.models)
    if not dirs:
        parser.error("name model directories or pass --all")
    cache: dict[str, Data] = {}
    for model_dir in dirs:
        card = json.loads((model_dir / "card.json").read_text())
        key = card["dataset"]
        if key not in cache:
            cache[key] = load_data(key, args.data_dir, **own_data_options(card))
        calibrate(model_dir, cache[key], mnist_dir=args.mnist_dir)


if __name__ == "__main__":
    main()
