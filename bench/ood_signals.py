"""Which out-of-distribution signals to calibrate: AUROC of candidate views on VALIDATION data.

    python -m bench.ood_signals models/mnist-s2d models/mnist-denoise \
        models/fashion-denoise models/fashion-s2d

In-distribution: the model's validation images (the first half calibrates each candidate view with
contract.ood.fit_view, the second half is scored); distances are fitted to training images as
training.calibrate fits them. Outsiders, none from a test split: the other data set's train split,
uniform noise, letters (training.outsiders, another seed than the evaluation's) and the inverted
second half, all at every noise level (clean and the protocol's seven) with the same corruption
as the insiders. Codeless denoisers also try the code of the data set's blind autoencoder (a side
graph). Prints one markdown table per model: AUROC per candidate and level, and the share of
insiders past each candidate's 99.5th percentile.

``--descriptors`` compares, instead, other picture descriptors and density models for the
``pictures`` signal (docs/evaluation.md, "Descriptors and density models tried"):

    python -m bench.ood_signals --descriptors models/fashion-s2d models/mnist-s2d

``--internal`` tries, instead, the denoiser's own features: the spatial mean of every ReLU's output
in the autoencoder graph (one vector per layer, no extra graph run), each as a distance alone, with
8 noise bins, and beside the pictures (docs/evaluation/ood_descriptors.md):

    python -m bench.ood_signals --internal models/fashion-s2d

``--ablation`` scores the served descriptor against itself less its grey-level shares, less its
stroke statistics, and less both (10 clusters; docs/evaluation.md, "What each part of the
descriptor adds"):

    python -m bench.ood_signals --ablation models/mnist-s2d models/fashion-s2d
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from contract import ood
from contract.card import read_card
from training import calibrate as cal
from training import outsiders
from training.ood_eval import auroc

LEVELS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
N = 500
SIDE = {"mnist5k": "models/mnist-denoise", "fashion": "models/fashion-denoise"}
OTHER = {"mnist5k": "fashion", "fashion": "mnist5k"}
Features = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
FEATURES: dict[str, Features] = {
    "input pictures": lambda x, o, c: ood.descriptor(x),
    "output pictures": lambda x, o, c: ood.descriptor(o),
    "pictures (input+output)": lambda x, o, c: ood.features("pictures", x, o, None),
}


# How a candidate's distance is fitted to its training vectors (``--descriptors`` varies it).
FIT: Callable[[str, np.ndarray], ood.Distance] = lambda name, vectors: ood.fit_distance(vectors)  # noqa: E731


class PooledTap:
    """The spatial mean of one intermediate tensor of an autoencoder graph, ``[n, channels]``."""

    def __init__(self, graph: Path, tap: str) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import helper, numpy_helper

        proto = onnx.load(str(graph))
        axes = f"{tap}__axes"
        proto.graph.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), axes))
        proto.graph.node.append(helper.make_node("ReduceMean", [tap, axes], [f"{tap}__mean"], keepdims=0))
        proto.graph.output.append(helper.make_tensor_value_info(f"{tap}__mean", onnx.TensorProto.FLOAT, None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self._output = f"{tap}__mean"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = images.reshape(-1, 1, 28, 28).astype(np.float32)
        return np.concatenate(
            [
                self._session.run([self._output], {"image": x[i : i + cal.BATCH]})[0]
                for i in range(0, len(x), cal.BATCH)
            ]
        )


def relu_taps(graph: Path) -> list[str]:
    import onnx

    return [node.output[0] for node in onnx.load(str(graph)).graph.node if node.op_type == "Relu"]


INTERNAL = False


class Model:
    """The graphs of one model (and a side encoder), the fitted distances, its signals."""

    def __init__(self, model_dir: Path, card: dict, train: np.ndarray) -> None:
        self.ae = cal.Graph(model_dir / "autoencoder.onnx")
        self.encoders: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        if INTERNAL:
            for tap in relu_taps(model_dir / "autoencoder.onnx"):
                self.encoders[f"pooled {tap}"] = PooledTap(model_dir / "autoencoder.onnx", tap)
        elif card.get("code_shape"):
            self.encoders["code"] = cal.Graph(model_dir / "encoder.onnx")
        elif card["dataset"] in SIDE:
            self.encoders["side code"] = cal.Graph(Path(SIDE[card["dataset"]]) / "encoder.onnx")
        noisy = cal.noisy_fit_images(train, [("gaussian", s) for s in LEVELS])
        outputs = self.ae(noisy)
        self.distances = {name: FIT(name, f(noisy, outputs, None)) for name, f in FEATURES.items()}
        for name, enc in self.encoders.items():
            self.distances[name] = ood.fit_distance(enc(noisy))

    def signals(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        out = self.ae(images)
        values = {
            "reconstruction": ood.reconstruction_signal(images, out),
            "residual": ood.residual_signal(images, out),
        }
        for name, f in FEATURES.items():
            values[name] = self.distances[name](f(images, out, None))
        for name, enc in self.encoders.items():
            values[name] = self.distances[name](enc(images).reshape(len(images), -1))
        return values, ood.noise_estimate(images)


def candidates(code: str | None) -> dict[str, tuple[tuple[str, ...], int]]:
    """name → (signals, noise bins)."""
    c: dict[str, tuple[tuple[str, ...], int]] = {
        "reconstruction, 8 noise bins": (("reconstruction",), 8),
        "residual, 8 noise bins": (("residual",), 8),
        "reconstruction + residual, 8 noise bins": (("reconstruction", "residual"), 8),
        "input pictures": (("input pictures",), 1),
        "output pictures": (("output pictures",), 1),
        "pictures (input+output)": (("pictures (input+output)",), 1),
        "pictures (input+output), 8 noise bins": (("pictures (input+output)",), 8),
    }
    if code is not None:
        c[code] = ((code,), 1)
        c[f"{code}, 8 noise bins"] = ((code,), 8)
        c[f"{code} + input pictures"] = ((code, "input pictures"), 1)
        c[f"{code} + pictures (input+output)"] = ((code, "pictures (input+output)"), 1)
    return c


def internal_candidates(taps: list[str]) -> dict[str, tuple[tuple[str, ...], int]]:
    """name → (signals, noise bins) for ``--internal``: the pictures, then each pooled layer."""
    c: dict[str, tuple[tuple[str, ...], int]] = {"pictures (input+output)": (("pictures (input+output)",), 1)}
    for tap in taps:
        c[tap] = ((tap,), 1)
        c[f"{tap}, 8 noise bins"] = ((tap,), 8)
        c[f"{tap} + pictures (input+output)"] = ((tap, "pictures (input+output)"), 1)
    return c


def run(model_dir: Path) -> None:
    card = read_card(model_dir, served=False)
    dataset = card["dataset"]
    data = cal.load_data(dataset)
    model = Model(model_dir, card, data.train)
    val = data.validation[: 2 * N]
    half = len(val) // 2
    fit_part, score_part = val[:half], val[half:]
    sets = {
        "other data set (train split)": cal.load_data(OTHER[dataset]).train[:N],
        "uniform noise": outsiders.uniform_noise(N, 11),
        "letters": outsiders.letters(N, 12),
        "inverted": outsiders.inverted(score_part),
    }
    code = next(iter(model.encoders), None)
    cands = internal_candidates(list(model.encoders)) if INTERNAL else candidates(code)
    parts = [model.signals(cal.corrupt("gaussian", fit_part, s, 900 + i)) for i, s in enumerate(LEVELS)]
    fit_values = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    fit_sigma = np.concatenate([p[1] for p in parts])
    views = {
        name: ood.fit_view({k: fit_values[k] for k in signals}, fit_sigma, bins=bins)
        for name, (signals, bins) in cands.items()
    }
    table: dict[tuple[str, str], list[str]] = {}
    for i, s in enumerate(LEVELS):
        inside_v, inside_s = model.signals(cal.corrupt("gaussian", score_part, s, 700 + i))
        outside = {name: model.signals(cal.corrupt("gaussian", x, s, 800 + i)) for name, x in sets.items()}
        for cname, view in views.items():
            inside = ood.combined(view, inside_v, inside_s)
            table.setdefault((cname, "insiders past the 99.5th"), []).append(
                f"{100 * np.mean(inside > view['threshold']):.1f} %"
            )
            for oname, (ov, os_) in outside.items():
                table.setdefault((cname, oname), []).append(
                    f"{auroc(inside, ood.combined(view, ov, os_)):.3f}"
                )
    sizes = f"{half} validation images calibrate, {len(score_part)} scored; {N} per outsider set"
    print(f"\n#### `{card['id']}` ({sizes})\n")
    print("| candidate | against | " + " | ".join(f"σ={s:g}" for s in LEVELS) + " |")
    print("|---|---|" + "---|" * len(LEVELS))
    for (cname, oname), row in sorted(table.items(), key=lambda kv: (list(cands).index(kv[0][0]), kv[0][1])):
        print(f"| {cname} | {oname} | " + " | ".join(row) + " |")
    sys.stdout.flush()


def _pool(x: np.ndarray, p: int) -> np.ndarray:
    n, c = len(x), 28 // p
    return x.reshape(n, c, p, 28).sum(axis=2).reshape(n, c, c, p).sum(axis=3).reshape(n, c * c) / (p * p)


def _gradient(x: np.ndarray) -> np.ndarray:
    """|dx| + |dy| per pixel (the last row and column left at zero)."""
    g = np.zeros_like(x)
    g[:, :27, :27] = np.abs(np.diff(x, axis=2))[:, :27, :] + np.abs(np.diff(x, axis=1))[:, :, :27]
    return g


def _version_1(x: np.ndarray, pool: int = 4) -> np.ndarray:
    """contract.ood's descriptor without the three stroke statistics version 2 added last."""
    return ood.descriptor(x, pool=pool)[:, :-3]


DESCRIPTORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "7x7 pooled + grey levels (version 1)": _version_1,
    "14x14 pooled + grey levels": lambda x: _version_1(x, pool=2),
    "version 1 + pooled gradient": lambda x: np.concatenate([_version_1(x), _pool(_gradient(x), 4)], 1),
    "version 1 + row and column profiles": lambda x: np.concatenate([_version_1(x), x.mean(1), x.mean(2)], 1),
    "version 1 + stroke statistics (version 2)": ood.descriptor,
}
# k-means clusters of the shared-covariance distance; "nn": every fitted vector is a centre (1-NN).
DENSITIES: tuple[int | str, ...] = (10, 50, 200, "nn")


def _fit_density(vectors: np.ndarray, density: int | str) -> ood.Distance:
    if density == "nn":
        whiten = ood.fit_distance(vectors, clusters=1).whiten
        return ood.Distance(whiten, (np.asarray(vectors, dtype=np.float32) @ whiten).astype(np.float32))
    return ood.fit_distance(vectors, clusters=int(density))


def _densities(name: str) -> tuple[int | str, ...]:
    return DENSITIES if name.startswith("7x7 pooled") else (10, "nn")


def use_descriptor_candidates(
    descriptors: dict[str, Callable[[np.ndarray], np.ndarray]] = DESCRIPTORS,
    densities: Callable[[str], tuple[int | str, ...]] = _densities,
    levels: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5),
) -> None:
    """Swap the candidates for descriptor x density pairs, each on input and output (no codes)."""
    global FEATURES, FIT, candidates, LEVELS
    pairs = {
        f"{name}, {density}": (describe, density)
        for name, describe in descriptors.items()
        for density in densities(name)
    }

    def on_pair(describe: Callable[[np.ndarray], np.ndarray]) -> Features:
        return lambda x, o, c: np.concatenate([describe(ood._images(x)), describe(ood._images(o))], 1)

    FEATURES = {name: on_pair(describe) for name, (describe, _) in pairs.items()}
    FIT = lambda name, vectors: _fit_density(vectors, pairs[name][1])  # noqa: E731
    candidates = lambda code: {name: ((name,), 1) for name in FEATURES}  # noqa: E731
    LEVELS = levels
    SIDE.clear()


def _served_without(*parts: str) -> Callable[[np.ndarray], np.ndarray]:
    """contract.ood's descriptor less some of its parts (``grey levels``, ``stroke``)."""
    columns = {"pooled": np.r_[0:49], "grey levels": np.r_[49:56], "stroke": np.r_[56:59]}
    keep = np.concatenate([c for name, c in columns.items() if name not in parts])
    return lambda x: ood.descriptor(x)[:, keep]


# What each part of the served descriptor adds (``--ablation``): the 7x7 pooled pixels, the 7
# grey-level shares, the 3 stroke statistics; each costs the scored graph nodes at a batch of one
# (docs/benchmarks.md, "The whole score in the graph").
ABLATION: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "served (pooled + grey levels + stroke)": ood.descriptor,
    "pooled + stroke (no grey levels)": _served_without("grey levels"),
    "pooled + grey levels (no stroke; version 1)": _served_without("stroke"),
    "pooled alone": _served_without("grey levels", "stroke"),
}


def use_ablation_candidates() -> None:
    """Swap the candidates for the served descriptor and its parts, on input and output, 10 clusters."""
    use_descriptor_candidates(ABLATION, lambda name: (10,), (0.0, 0.1, 0.2, 0.3, 0.5))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_signals")
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument(
        "--descriptors", action="store_true", help="compare picture descriptors and density models"
    )
    parser.add_argument(
        "--internal", action="store_true", help="try the spatial means of the graph's ReLU outputs"
    )
    parser.add_argument(
        "--ablation", action="store_true", help="the served descriptor against itself less each part"
    )
    args = parser.parse_args()
    if args.internal:
        global INTERNAL
        INTERNAL = True
    if args.descriptors:
        use_descriptor_candidates()
    elif args.ablation:
        use_ablation_candidates()
    for model_dir in args.models:
        run(model_dir)


if __name__ == "__main__":
    main()
