"""A garment classifier's features as a score against digits: AUROC on VALIDATION data only.

    python -m bench.ood_classifier models/fashion-s2d [--width 32] [--epochs 3]

Feature-space Mahalanobis distances of a classifier (Lee et al., 2018) are a common detector of
Fashion-MNIST against MNIST. Fashion-MNIST has labels, so this trains a small classifier on its
training split (four 3x3 convs at 14x14 and 7x7, global average pool, 10 classes; noisy inputs,
σ ~ U[0, 0.6], so that its features mean the same under noise) and scores, beside the served
``pictures`` signal of ``models/…``:

- the class-conditional Mahalanobis distance of the pooled features (one covariance shared by the
  ten classes, the distance to the nearest class mean),
- the same with ten k-means clusters in place of the classes (``contract.ood.fit_distance``),
- the classifier's maximum softmax probability and its energy (−logsumexp of the logits),
- the class-conditional distance beside the pictures (the larger standardised signal, as served).

Protocol as ``bench.ood_variants``: distances fitted to noisy training images, validation images
500-999 scored against 500 MNIST-5k *train* digits, letters (seed 12) and uniform noise at the
same noise level; the first 500 validation images standardise the combined signal. No test split.
Each cell: AUROC against digits / letters / uniform noise (docs/evaluation.md, "Descriptors and
density models tried", has the result).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.ood_signals import LEVELS
from contract import ood
from contract.card import read_card
from training import calibrate as cal
from training import outsiders
from training.data import load_dataset
from training.ood_eval import auroc

N = 500
FIT_IMAGES = 6000
BATCH = 128


class Classifier(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        half, double = width // 2, 2 * width
        layers: list[nn.Module] = []
        for c_in, c_out, stride in ((1, half, 2), (half, width, 1), (width, double, 2), (double, double, 1)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(double, 10)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))


def train(images: np.ndarray, labels: np.ndarray, width: int, epochs: int) -> Classifier:
    torch.manual_seed(0)
    net = Classifier(width)
    x, y = torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)
    steps = max(1, epochs * (len(x) // BATCH))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(len(x) // BATCH):
            idx = order[i * BATCH : (i + 1) * BATCH]
            level = torch.rand(len(idx), 1, 1, 1, generator=gen) * 0.6
            noisy = (x[idx] + level * torch.randn(x[idx].shape, generator=gen)).clamp(0, 1)
            loss = F.cross_entropy(net(noisy), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(
            f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    return net.eval()


def outputs(net: Classifier, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and logits, in chunks."""
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, len(images), 500):
            h = net.pooled(torch.from_numpy(np.ascontiguousarray(images[i : i + 500])).unsqueeze(1))
            feats.append(h.numpy())
            logits.append(net.head(h).numpy())
    return np.concatenate(feats), np.concatenate(logits)


def class_distance(feats: np.ndarray, labels: np.ndarray) -> ood.Distance:
    """Mahalanobis distance to the nearest class mean, one covariance shared by the classes."""
    flat = feats.astype(np.float64)
    means = np.stack([flat[labels == c].mean(axis=0) for c in range(10)])
    whiten = ood._whitening(flat - means[labels], 1e-3)
    return ood.Distance(whiten=whiten.astype(np.float32), centres=(means @ whiten).astype(np.float32))


def run(model_dir: Path, width: int, epochs: int) -> None:
    card = read_card(model_dir, served=False)
    if card["dataset"] != "fashion":
        raise SystemExit(f"{model_dir}: a model of {card['dataset']!r}; this compares Fashion models")
    split = load_dataset("fashion")
    net = train(split.train_x, split.train_y, width, epochs)
    with torch.no_grad():
        guess = net(torch.from_numpy(split.val_x[:2000]).unsqueeze(1)).argmax(dim=1).numpy()
    accuracy = float(np.mean(guess == split.val_y[:2000]))
    graph = cal.Graph(model_dir / "autoencoder.onnx")

    per_level = FIT_IMAGES // len(LEVELS)
    fit = np.concatenate(
        [
            cal.corrupt("gaussian", split.train_x[i * per_level : (i + 1) * per_level], s, 100 + i)
            for i, s in enumerate(LEVELS)
        ]
    )
    fit_labels = split.train_y[: len(fit)]
    fit_feats, _ = outputs(net, fit)
    by_class = class_distance(fit_feats, fit_labels)
    by_cluster = ood.fit_distance(fit_feats)
    pictures = ood.fit_distance(ood.features("pictures", fit, graph(fit).reshape(fit.shape), None))

    def signals(x: np.ndarray) -> dict[str, np.ndarray]:
        feats, logits = outputs(net, x)
        soft = torch.softmax(torch.from_numpy(logits), dim=1)
        return {
            "pictures (served)": pictures(ood.features("pictures", x, graph(x).reshape(x.shape), None)),
            "classifier features, nearest class": by_class(feats),
            "classifier features, 10 clusters": by_cluster(feats),
            "maximum softmax": -soft.max(dim=1).values.numpy().astype(np.float64),
            "energy": -torch.logsumexp(torch.from_numpy(logits), dim=1).numpy().astype(np.float64),
        }

    outside = {
        "digits": cal.load_data("mnist5k").train[:N],
        "letters": outsiders.letters(N, 12),
        "uniform": outsiders.uniform_noise(N, 11),
    }
    val = split.val_x[: 2 * N]
    calib = [signals(cal.corrupt("gaussian", val[:N], s, 900 + i)) for i, s in enumerate(LEVELS)]
    both = ("pictures (served)", "classifier features, nearest class")
    view = ood.fit_view({k: np.concatenate([c[k] for c in calib]) for k in both}, np.zeros(N * len(LEVELS)))
    rows: dict[str, list[str]] = {}
    for i, s in enumerate(LEVELS):
        inside = signals(cal.corrupt("gaussian", val[N:], s, 700 + i))
        others = {n: signals(cal.corrupt("gaussian", x, s, 800 + i)) for n, x in outside.items()}
        for name in [*inside, "classifier features + pictures (largest)"]:
            if name in inside:
                a, b = inside[name], {n: o[name] for n, o in others.items()}
            else:
                a = ood.combined(view, inside, np.zeros(N))
                b = {n: ood.combined(view, o, np.zeros(N)) for n, o in others.items()}
            rows.setdefault(name, []).append(" / ".join(f"{auroc(a, b[n]):.3f}" for n in outside))
    print(
        f"\n#### `{card['id']}` and a classifier of width {width}, {epochs} epochs "
        f"(validation accuracy {accuracy:.3f}): AUROC against digits / letters / uniform noise\n"
    )
    print("| candidate | " + " | ".join(f"σ={s:g}" for s in LEVELS) + " |")
    print("|---|" + "---|" * len(LEVELS))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_classifier")
    parser.add_argument("model", type=Path, help="a Fashion model directory, e.g. models/fashion-s2d")
    parser.add_argument("--width", type=int, default=32, help="channels of the classifier's 14x14 convs")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run(args.model, args.width, args.epochs)


if __name__ == "__main__":
    main()
