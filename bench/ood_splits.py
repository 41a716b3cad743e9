"""The served out-of-distribution threshold on every split of a model's data: train, validation, test.

    python -m bench.ood_splits models/mnist-s2d models/mnist-unet models/mnist-denoise models/mnist-conv
    python -m bench.ood_splits --view encode models/mnist-conv models/mnist-dense

Each model's ``/denoise`` score (``--view encode``: its ``/encode`` score; the card's calibration,
numpy) on all of its data set's training images (and apart, those left out of the distances'
fit), validation and test images, clean and
at σ = 0.1 and 0.3 (the test noise seed for every split): the share flagged past the card's
threshold. The threshold is the 99.5th percentile of the calibration images (validation; for
MNIST-5k models with 2,500 unseen MNIST digits beside it), so about 0.5 % of validation is
flagged by construction; the training images are what the model (and, all but the
ones apart, the distance) was fitted to, so if anything more typical. A test split flagged well
above all of them says its images are less typical than the rest of the data set, not that the
threshold is off (docs/evaluation.md, "More calibration images, and a second test set").

For MNIST-5k models, where MNIST's files are at hand (``make mnist-data``), two more sets: MNIST
training digits outside MNIST-5k that the calibration did not take (it takes
``training.calibrate.UNSEEN_DIGITS`` of them), and MNIST's 10,000 test digits (t10k).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from contract import ood
from contract.card import read_card
from training import calibrate as cal
from training.protocol import TEST_NOISE_SEED

LEVELS = (0.0, 0.1, 0.3)


class Scorer:
    """A model's score for one view (``denoise``: /denoise, ``encode``: /encode) as its card
    calibrates it, loaded once for every split."""

    def __init__(self, model_dir: Path, view: str = "denoise") -> None:
        self.card = read_card(model_dir, served=False)
        calibration = ood.load(model_dir, self.card)
        if calibration is None:
            raise SystemExit(f"{model_dir}: no out-of-distribution calibration")
        if view not in calibration.views:
            raise SystemExit(f"{model_dir}: no {view!r} view (it has {', '.join(calibration.views)})")
        self.calibration, self.view = calibration, view
        needs = calibration.needs(view)
        self.autoencoder = cal.Graph(model_dir / "autoencoder.onnx") if "output" in needs else None
        self.encoder = cal.Graph(model_dir / "encoder.onnx") if "code" in needs else None

    def flagged(self, images: np.ndarray, levels: tuple[float, ...] = LEVELS) -> list[float]:
        """Percent of ``images`` past the card's threshold for the view, per noise level."""
        shares = []
        for level in levels:
            x = cal.corrupt("gaussian", images, level, TEST_NOISE_SEED)[:, None]
            outputs = self.autoencoder(x) if self.autoencoder else None
            codes = self.encoder(x) if self.encoder else None
            scores = self.calibration.score(self.view, x, outputs=outputs, codes=codes)
            shares.append(100.0 * float(np.mean(~scores.in_distribution)))
        return shares


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_splits", description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--limit", type=int, help="score only the first N images of each split")
    parser.add_argument("--view", default="denoise", choices=("denoise", "encode"), help="the route's score")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    names = (*SPLITS, *MNIST_SETS)
    head = " | ".join(f"{split} σ={s:g}" for split in names for s in LEVELS)
    print(f"| model | {head} |\n|---|" + "---|" * (len(names) * len(LEVELS)))
    for model_dir in args.models:
        scorer = Scorer(model_dir, args.view)
        data = cal.load_data(scorer.card["dataset"])
        sets = dict(
            zip(SPLITS, (data.train, outside_fit(data.train), data.validation, data.test), strict=True)
        )
        if scorer.card["dataset"] == "mnist5k":
            sets |= mnist_sets(args.limit)
        cells = []
        for name in names:
            if name not in sets:
                cells += ["—"] * len(LEVELS)
                continue
            images = sets[name][: args.limit]
            cells += [f"{share:.1f} % ({len(images)})" for share in scorer.flagged(images)]
        print(f"| `{model_dir.name}` | " + " | ".join(cells) + " |", flush=True)


SPLITS = ("train", "train outside the distance fit", "validation", "test")
MNIST_SETS = ("MNIST outside MNIST-5k, not calibrated on", "MNIST t10k")


def mnist_sets(limit: int | None) -> dict[str, np.ndarray]:
    """MNIST digits no MNIST-5k model saw and its calibration did not take, and MNIST's test
    digits; none without MNIST's files."""
    from training.data import MNIST_DIR, load_dataset, mnist_unseen

    fresh = mnist_unseen(limit or 10_000, skip=cal.UNSEEN_DIGITS)
    if fresh is None:
        return {}
    return dict(zip(MNIST_SETS, (fresh, load_dataset("mnist", MNIST_DIR).test_x), strict=True))


def outside_fit(train: np.ndarray) -> np.ndarray:
    """The training images ``training.calibrate`` leaves out of the distances' fit (it fits the
    first ``MAX_FIT`` of a seeded permutation); the model itself was still trained on them."""
    order = np.random.default_rng(cal.FIT_SEED).permutation(len(train))
    return train[order[cal.MAX_FIT :]]


if __name__ == "__main__":
    main()
