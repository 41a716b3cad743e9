"""More ways to score a garment model against digits: AUROC on VALIDATION data only.

    python -m bench.ood_variants models/fashion-s2d

The served ``pictures`` distance fits one density over every noise level and takes the largest
standardised signal. This tries, for a Fashion model, what that leaves out
(docs/evaluation.md, "Descriptors and density models tried"):

- **noise-conditional densities**: the noise estimate (``contract.ood.noise_estimate``) appended to
  the vector (``joint``: one Gaussian mixture over both, i.e. a linear conditioning on it), or a
  density of its own per quartile of the estimate (``per-bin``);
- the same for the spatial means of three ReLU outputs of the graph (``bench.ood_signals
  --internal`` found them strong on clean images and weak under noise) beside the pictures;
- **PCA descriptors**: the first k principal components of the input and of the output (fitted to
  noisy training images and their outputs), with the log energy each leaves out;
- the code of the data set's autoencoder (a side graph), beside the pictures and PCA, combined by
  the largest standardised signal (served rule) or by their **sum**.

In-distribution: the first 500 validation images calibrate each candidate (``fit_view``), the next
500 are scored; outsiders, none from a test split: 500 MNIST-5k *train* digits, letters
(``training.outsiders``, seed 12) and uniform noise, at the same noise level as the insiders.
Each cell: insiders past the 99.5th percentile (%), then AUROC against digits / letters / uniform.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.ood_signals import LEVELS, PooledTap
from contract import ood
from contract.card import read_card
from training import calibrate as cal
from training import outsiders
from training.ood_eval import auroc

N = 500
FIT_IMAGES = 6000
SIDE_ENCODER = Path("models/fashion-denoise/encoder.onnx")
TAPS = ("relu_3", "relu_4", "relu_5")
PCA_SIZES = (16, 48)
Vectors = dict[str, np.ndarray]


class PCA:
    """The first ``k`` principal components of flattened images and the log energy left out."""

    def __init__(self, images: np.ndarray, k: int) -> None:
        x = images.reshape(len(images), -1).astype(np.float64)
        self.mean = x.mean(axis=0).astype(np.float32)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.basis = vt[:k].T.astype(np.float32)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        centred = images.reshape(len(images), -1) - self.mean
        z = centred @ self.basis
        left = np.log(np.square(centred - z @ self.basis.T).mean(axis=1) + 1e-6)
        return np.concatenate([z, left[:, None]], axis=1)


class PerBin:
    """One fitted distance per quartile of the noise estimate (edges from the fitting images)."""

    def __init__(self, vectors: np.ndarray, sigma: np.ndarray, bins: int = 4) -> None:
        self.edges = np.quantile(sigma, np.linspace(0, 1, bins + 1))
        which = self._bin(sigma)
        self.distances = [ood.fit_distance(vectors[which == b]) for b in range(bins)]

    def _bin(self, sigma: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.edges, sigma, side="right") - 1, 0, len(self.edges) - 2)

    def __call__(self, vectors: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        which, out = self._bin(sigma), np.empty(len(vectors))
        for b, distance in enumerate(self.distances):
            if (which == b).any():
                out[which == b] = distance(vectors[which == b])
        return out


def _with_sigma(vectors: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return np.concatenate([vectors, np.log(sigma + 1e-3)[:, None], sigma[:, None]], axis=1)


class Features:
    """Every vector a candidate reads, for a batch of (noisy) images."""

    def __init__(self, model_dir: Path, fit_noisy: np.ndarray) -> None:
        graph = model_dir / "autoencoder.onnx"
        self.ae = cal.Graph(graph)
        self.side = cal.Graph(SIDE_ENCODER)
        self.taps = {tap: PooledTap(graph, tap) for tap in TAPS}
        outputs = self.ae(fit_noisy)
        self.pca = {k: (PCA(fit_noisy, k), PCA(outputs, k)) for k in PCA_SIZES}

    def __call__(self, images: np.ndarray) -> tuple[Vectors, np.ndarray]:
        outputs = self.ae(images)
        v: Vectors = {"pictures": ood.features("pictures", images, outputs, None)}
        v["side code"] = self.side(images).reshape(len(images), -1)
        for tap, pooled in self.taps.items():
            v[f"pooled {tap}"] = np.concatenate([v["pictures"], pooled(images)], axis=1)
        for k, (pin, pout) in self.pca.items():
            v[f"PCA {k}"] = np.concatenate([pin(images), pout(outputs)], axis=1)
            v[f"pictures + PCA {k}"] = np.concatenate([v["pictures"], v[f"PCA {k}"]], axis=1)
        return v, ood.noise_estimate(images)


Signal = Callable[[Vectors, np.ndarray], np.ndarray]


def signals(features: Vectors, sigma: np.ndarray) -> dict[str, Signal]:
    """name → signal, each fitted to the training vectors ``features`` (noise estimates ``sigma``)."""

    def plain(d: ood.Distance, n: str) -> Signal:
        return lambda v, s: d(v[n])

    def joint(d: ood.Distance, n: str) -> Signal:
        return lambda v, s: d(_with_sigma(v[n], s))

    def binned(d: PerBin, n: str) -> Signal:
        return lambda v, s: d(v[n], s)

    out: dict[str, Signal] = {}
    for name, vectors in features.items():
        label = name if not name.startswith("pooled") else f"pictures + {name}"
        out[label] = plain(ood.fit_distance(vectors), name)
        if name == "pictures" or name.startswith("pooled"):
            out[f"{label}, joint with the noise estimate"] = joint(
                ood.fit_distance(_with_sigma(vectors, sigma)), name
            )
            out[f"{label}, one density per noise quartile"] = binned(PerBin(vectors, sigma), name)
    return out


# candidate → (signals combined, rule)
COMBINED: dict[str, tuple[tuple[str, ...], str]] = {
    "side code + pictures (largest)": (("side code", "pictures"), "max"),
    "side code + pictures (sum)": (("side code", "pictures"), "sum"),
    "side code + pictures + PCA 48 (largest)": (("side code", "pictures", "PCA 48"), "max"),
    "side code + pictures + PCA 48 (sum)": (("side code", "pictures", "PCA 48"), "sum"),
}


def _combine(view: dict, values: dict[str, np.ndarray], sigma: np.ndarray, rule: str) -> np.ndarray:
    if rule == "max":
        return ood.combined(view, values, sigma)
    return np.sum(ood.standardised(view, values, sigma), axis=0)


def run(model_dir: Path) -> None:
    card = read_card(model_dir, served=False)
    if card["dataset"] != "fashion":
        raise SystemExit(f"{model_dir}: a model of {card['dataset']!r}; this compares Fashion models")
    data = cal.load_data("fashion")
    noisy = cal.noisy_fit_images(data.train, [("gaussian", s) for s in LEVELS], limit=FIT_IMAGES)
    features = Features(model_dir, noisy)
    fitted = signals(*features(noisy))
    outside = {
        "digits": cal.load_data("mnist5k").train[:N],
        "letters": outsiders.letters(N, 12),
        "uniform": outsiders.uniform_noise(N, 11),
    }

    def score(x: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        v, s = features(x)
        return {name: signal(v, s) for name, signal in fitted.items()}, s

    val = data.validation[: 2 * N]
    parts = [score(cal.corrupt("gaussian", val[:N], s, 900 + i)) for i, s in enumerate(LEVELS)]
    fit_values = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    fit_sigma = np.concatenate([p[1] for p in parts])
    cands = {name: ((name,), "max") for name in fitted} | COMBINED
    views = {c: ood.fit_view({k: fit_values[k] for k in sig}, fit_sigma) for c, (sig, _) in cands.items()}
    rows: dict[str, list[str]] = {}
    for i, s in enumerate(LEVELS):
        inside = score(cal.corrupt("gaussian", val[N:], s, 700 + i))
        others = {n: score(cal.corrupt("gaussian", x, s, 800 + i)) for n, x in outside.items()}
        for c, (_, rule) in cands.items():
            view = views[c]
            fit_combined = _combine(view, fit_values, fit_sigma, rule)
            threshold = np.percentile(fit_combined, view["threshold_percentile"])
            a = _combine(view, *inside, rule)
            cell = [f"{100 * np.mean(a > threshold):.1f} %"]
            cell += [f"{auroc(a, _combine(view, *others[n], rule)):.3f}" for n in outside]
            rows.setdefault(c, []).append(" / ".join(cell))
    print(f"\n#### `{card['id']}`: insiders flagged / AUROC against digits / letters / uniform noise\n")
    print("| candidate | " + " | ".join(f"σ={s:g}" for s in LEVELS) + " |")
    print("|---|" + "---|" * len(LEVELS))
    for c, row in rows.items():
        print(f"| {c} | " + " | ".join(row) + " |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_variants")
    parser.add_argument("models", nargs="+", type=Path, help="Fashion model directories")
    for model_dir in parser.parse_args().models:
        run(model_dir)


if __name__ == "__main__":
    main()
