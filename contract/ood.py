"""Out-of-distribution scores: how far a request's input is from what a model learned.

Pure numpy, shared by training (which calibrates a model on its validation split and writes the
card's ``ood`` block, ``training/calibrate.py``) and the service (which scores every request with
it). docs/evaluation.md, "Out-of-distribution scores", has the measurements behind the choices.

A score is built in three steps:

1. **Signals**, one number per image, from what the request computed anyway (no extra graph):

   - ``pictures``: the distance of the input and the model's output, each summarised by a small
     ``descriptor`` (7×7 average-pooled pixels, the share of pixels above 7 grey levels, and three
     stroke statistics: log ink, log edge length and their ratio), to
     those of the training images: log squared Mahalanobis distance to the nearest of k clusters
     (k-means, one shared covariance). The output is the model's own view of the input; the pair
     separates what the model knows from what it merely redraws. Since version 3 each picture is
     described at half resolution (2×2 squares of pixels averaged first).
   - ``strokes``: the ``pictures`` distance less the distance of the same vector to random pen
     strokes (``training.outsiders.strokes`` run through the model, fitted like the training
     images): a log likelihood ratio, high where a picture looks more like a drawing in strokes
     than like the training images. The shipped models serve it beside ``pictures``: digits and
     letters are simple pictures that sit close enough to garments in the ``pictures`` distance
     alone, but much closer to strokes; and a letter is a stroke drawing further from the digits
     than from strokes (docs/evaluation.md, "A background of pen strokes").
   - ``code``: the same distance for the model's latent code (models with an encoder).
   - ``input``: the distance of the input's descriptor alone (beside the code on ``/encode``,
     which has no output).
   - ``reconstruction`` (log mean squared output − input) and ``residual`` (lag-one
     autocorrelation of input − output) are measured candidates the shipped cards do not use.

2. **Standardise** each signal by the median and interquartile range of validation images, per
   bin of an estimated noise level (``noise_estimate``; linear interpolation between the bins'
   centres; one bin when the calibration says so), and take the largest standardised signal:
   an input is an outsider when any signal says so.
3. **Calibrate**: the percentile of that combined value among the validation images (all noise
   levels pooled), and ``in_distribution = percentile <= threshold_percentile`` (the card's,
   e.g. 99.5). A view whose pooled table flags too many validation images at some noise level
   keeps one table per quartile of the noise estimate instead (``tables``, at
   ``table_noise_centres``): a request's percentile is then among validation images of about its
   own noise, interpolated between the two nearest quartiles.

A *view* is one calibration over the signals one route has at hand: ``denoise`` (the input and
the autoencoder graph's output) and ``encode`` (the input and the code). The card holds the
small numbers; each distance's whitening matrix and cluster centres live in ``ood.npz`` next to
the card, named with its sha256 in the card.

**The scored graph.** When the ``denoise`` view reads only the input and the output (``pictures``,
``input``), calibration also writes ``scored.onnx`` (``training/ood_graph.py``): the autoencoder
graph with all three steps appended as ONNX nodes, the view's standardising and percentile tables
built in as constants, whose one extra output is each image's percentile (``ood_percentile``).
The service runs it in place of the autoencoder graph, so a batch's scores cost one onnxruntime
call and one comparison (docs/benchmarks.md, "The score inside the graph"). The card stays the
one place the calibration lives: its ``ood.graph`` names the file, its sha256, the sha256 of the
autoencoder graph it was built from and the sha256 of the view it builds in (:func:`view_digest`);
a graph whose view or autoencoder differs from the card's is not used.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# 2: the descriptor gained the stroke statistics (calibrations of version 1 no longer apply).
# 3: pictures are described at half resolution, each 2x2 square of pixels averaged first (the
# same separation on validation for a third less of the scored graph's work; docs/evaluation.md,
# "Version 3: the pictures at half resolution"). Version 2 cards are still read and scored as
# they were calibrated.
VERSION = 3
# Per version this code reads: the side of the squares of pixels averaged before a picture is
# described (1: every pixel).
SCALES = {2: 1, 3: 2}
SCALE = SCALES[VERSION]
DISTANCES = ("pictures", "code", "input")
# The distances (fitted, in ood.npz) each signal reads; "strokes" is a ratio of two.
READS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in DISTANCES},
    "strokes": ("pictures", "strokes"),
}
SIGNALS = (*DISTANCES, "strokes", "reconstruction", "residual")


def reads(signals: Iterable[str]) -> set[str]:
    """The fitted distances (``ood.npz``'s names) that ``signals`` read."""
    return {d for s in signals if s in READS for d in READS[s]}


VIEWS = ("denoise", "encode")
# What each signal reads beside the input.
NEEDS = {
    "pictures": "output",
    "code": "code",
    "input": "input",
    "strokes": "output",
    "reconstruction": "output",
    "residual": "output",
}
PARAMETERS_FILE = "ood.npz"
GRAPH_FILE = "scored.onnx"
# The signals the scored graph computes (from the input and the output alone), and the name of its
# one extra output: each image's percentile.
GRAPH_SIGNALS = ("pictures", "input", "strokes")
PERCENTILE_OUTPUT = "ood_percentile"
THRESHOLD_PERCENTILE = 99.5
CLUSTERS = 10
# Percentiles stored for the combined value: every whole one, then tenths through the tail, where
# the threshold and the figures a client acts on live.
TABLE_PERCENTILES: tuple[float, ...] = tuple(
    sorted({float(p) for p in range(100)} | {round(95 + 0.1 * i, 1) for i in range(50)})
)
HISTOGRAM_EDGES = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)
_EPS = 1e-8
# Immerkær (1996): the kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] has L2 norm 6, so white noise of std s
# gives a mean absolute response of 6·s·sqrt(2/pi).
_IMMERKAER = float(np.sqrt(np.pi / 2.0) / 6.0)


class CalibrationError(ValueError):
    """A card's ``ood`` block or its parameters file is missing, malformed or does not match."""


def _images(x: np.ndarray) -> np.ndarray:
    """``[n, 28, 28]`` float32 from ``[n, 1, 28, 28]`` or ``[n, 28, 28]``."""
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(x.shape[0], x.shape[-2], x.shape[-1])


def noise_estimate(images: np.ndarray) -> np.ndarray:
    """Per image, an estimate of the std of additive white noise (Immerkær's fast estimator).

    Edges add to it, so clean images read above zero: a covariate calibrated per model, not a
    measurement of the noise.
    """
    x = _images(images)
    c = x[:, 1:-1, 1:-1]
    n, s, e, w = x[:, :-2, 1:-1], x[:, 2:, 1:-1], x[:, 1:-1, 2:], x[:, 1:-1, :-2]
    ne, nw, se, sw = x[:, :-2, 2:], x[:, :-2, :-2], x[:, 2:, 2:], x[:, 2:, :-2]
    response = 4 * c - 2 * (n + s + e + w) + (ne + nw + se + sw)
    return np.abs(response).mean(axis=(1, 2)).astype(np.float64) * _IMMERKAER


def descriptor(images: np.ndarray, pool: int = 4, scale: int | None = None) -> np.ndarray:
    """``[n, (28/pool)² + 7 + 3]``: average-pooled pixels, the share of pixels above each grey level,
    and the stroke statistics: log of the mean ink, log of the mean edge (|horizontal| + |vertical|
    differences of neighbours) and their difference. Thin pen strokes have much edge per unit of
    ink, filled shapes little: on validation these three numbers lifted the AUROC against printed
    letters from 0.70 to 0.85 for ``mnist-s2d`` (docs/evaluation.md).

    ``scale``: each ``scale``×``scale`` square of pixels is averaged first, and the picture described
    at that resolution (the pooled cells stay ``pool``×``pool`` of the original pixels); None: this
    version's :data:`SCALE`."""
    x = _images(images)
    scale = SCALE if scale is None else scale
    if scale > 1:
        n, side = len(x), x.shape[-1] // scale
        x = x.reshape(n, side, scale, side, scale).mean(axis=(2, 4), dtype=np.float32)
        pool //= scale
    n, side = len(x), x.shape[-1]
    cells = side // pool
    # Few numpy calls whatever the batch (a request scores one image; bench/ood_cost.py): the
    # pooling as two small matrix products (half the time of strided sums), one broadcast
    # comparison for the grey levels, the edges on views of the top-left (side-1)² pixels.
    sums = _pooling(side, pool)
    pooled = sums.T @ x @ sums
    above = np.count_nonzero(x.reshape(n, 1, side * side) > level_edges(scale)[None, :, None], axis=2)
    ink = pooled.reshape(n, cells * cells).sum(axis=1) * (1.0 / (side * side))
    corner = x[:, : side - 1, : side - 1]
    edge = (
        np.abs(x[:, : side - 1, 1:] - corner).sum(axis=(1, 2))
        + np.abs(x[:, 1:, : side - 1] - corner).sum(axis=(1, 2))
    ) * (1.0 / (side * side))
    # A graph's output may dip below 0: its mean ink is held at 0 so that the log stays finite.
    log_ink, log_edge = np.log(np.maximum(ink, 0.0) + _STROKE_EPS), np.log(edge + _STROKE_EPS)
    return np.concatenate(
        [
            pooled.reshape(n, cells * cells) * (1.0 / (pool * pool)),
            (above / (side * side)).astype(np.float32),
            np.stack([log_ink, log_edge, log_edge - log_ink], axis=1).astype(np.float32),
        ],
        axis=1,
    )


_STROKE_EPS = 1e-3


@functools.cache
def level_edges(scale: int) -> np.ndarray:
    """The grey levels the descriptor counts pixels above, float32, for pictures averaged in
    ``scale``×``scale`` squares. Averaged, an 8-bit picture's values are multiples of
    1/(255·scale²), and :data:`HISTOGRAM_EDGES` are among them (0.05 = 51/1020): a square exactly at
    a level would fall on either side of it by the rounding of the average, which numpy and
    onnxruntime do in different orders. Raised by half that step, no 8-bit average is within
    0.0004 of a level."""
    edges = np.asarray(HISTOGRAM_EDGES, dtype=np.float64)
    if scale > 1:
        edges = edges + 0.5 / (255 * scale * scale)
    return edges.astype(np.float32)


@functools.cache
def _pooling(side: int, pool: int) -> np.ndarray:
    """``[side, side // pool]`` of 0/1: ``Sᵀ x S`` sums each ``pool``×``pool`` cell of ``x``."""
    sums = np.zeros((side, side // pool), dtype=np.float32)
    sums[np.arange(side), np.arange(side) // pool] = 1.0
    return sums


def features(
    name: str,
    images: np.ndarray,
    outputs: np.ndarray | None,
    codes: np.ndarray | None,
    scale: int | None = None,
) -> np.ndarray:
    """The vectors a distance signal measures, ``[n, d]`` (``scale``: :func:`descriptor`'s)."""
    if name == "pictures":
        if outputs is None:
            raise CalibrationError("signal 'pictures' needs the model's output")
        n = len(images)
        # Input and output interleaved, described in one call, each image's pair side by side.
        pairs = np.stack([_images(images), _images(outputs)], axis=1).reshape(2 * n, 28, 28)
        return descriptor(pairs, scale=scale).reshape(n, -1)
    if name == "code":
        if codes is None:
            raise CalibrationError("signal 'code' needs the model's code")
        return np.asarray(codes).reshape(len(codes), -1)
    if name == "input":
        return descriptor(images, scale=scale)
    raise CalibrationError(f"{name!r} is not a distance signal; those are {', '.join(DISTANCES)}")


def reconstruction_signal(images: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """log mean squared difference between output and input, per image."""
    diff = _images(outputs) - _images(images)
    return np.log(np.square(diff).mean(axis=(1, 2)).astype(np.float64) + _EPS)


def residual_signal(images: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Lag-one autocorrelation of input − output (rows and columns): ≈ 0 when the model removed
    white noise, toward 1 when it rewrote the picture."""
    r = _images(images) - _images(outputs)
    r = r - r.mean(axis=(1, 2), keepdims=True)
    lag = (r[:, :, 1:] * r[:, :, :-1]).sum(axis=(1, 2)) + (r[:, 1:, :] * r[:, :-1, :]).sum(axis=(1, 2))
    return (lag / (2 * np.square(r).sum(axis=(1, 2)) + _EPS)).astype(np.float64)


@dataclass(frozen=True)
class Distance:
    """A fitted distance: ``whiten`` ``[d, d]`` maps a vector to coordinates where the clusters'
    shared covariance is the identity; ``centres`` ``[k, d]`` are the cluster means there."""

    whiten: np.ndarray
    centres: np.ndarray
    _minus_2ct: np.ndarray = field(init=False, repr=False, compare=False)
    _norms: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # ||y - c||² = ||y||² - 2 y·c + ||c||²: the centres' part is fixed, and -2c is folded in.
        object.__setattr__(self, "_minus_2ct", (-2.0 * self.centres.T).astype(np.float32))
        object.__setattr__(self, "_norms", np.square(self.centres).sum(axis=1).astype(np.float32))

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """log squared Mahalanobis distance of each vector to the nearest cluster."""
        y = np.asarray(vectors, dtype=np.float32) @ self.whiten
        d2 = (y @ self._minus_2ct + self._norms).min(axis=1) + (y * y).sum(axis=1)
        return np.log(np.maximum(d2, 0.0).astype(np.float64) + _EPS)


def _whitening(deviations: np.ndarray, shrinkage: float) -> np.ndarray:
    cov = np.atleast_2d(np.cov(deviations, rowvar=False))
    scale = float(np.trace(cov)) / len(cov)
    cov = (1 - shrinkage) * cov + shrinkage * scale * np.eye(len(cov))
    # precision = W Wᵀ, so ||x W||² is the squared Mahalanobis length of x.
    return np.linalg.cholesky(np.linalg.inv(cov))


def _nearest(y: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d2 = np.square(y).sum(axis=1)[:, None] - 2 * y @ centres.T + np.square(centres).sum(axis=1)[None, :]
    return np.asarray(d2.argmin(axis=1))


def fit_distance(
    vectors: np.ndarray,
    clusters: int = CLUSTERS,
    shrinkage: float = 1e-3,
    seed: int = 0,
    iterations: int = 25,
) -> Distance:
    """Fit a :class:`Distance` to training vectors ``[n, d]``.

    k-means (seeded k-means++ start) in coordinates that whiten all the vectors, then one
    covariance shared by the clusters (each vector less its cluster's mean), shrunk toward its
    average variance by ``shrinkage`` so that constant features (dead code channels, a border
    that is always black) still invert. ``clusters=1`` is the Mahalanobis distance to the mean.
    """
    flat = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
    # Small own data sets: at least 20 vectors per cluster, and one cluster whatever the count.
    clusters = max(1, min(clusters, len(flat) // 20))
    y = (flat - flat.mean(axis=0)) @ _whitening(flat - flat.mean(axis=0), shrinkage)
    rng = np.random.default_rng(seed)
    centres = y[[int(rng.integers(len(y)))]]
    while len(centres) < clusters:  # k-means++: a far point is likelier to be the next centre
        d2 = np.maximum(np.min(np.square(y[:, None, :] - centres[None]).sum(axis=2), axis=1), 0)
        if d2.sum() <= 0:  # every vector sits on a centre already
            break
        centres = np.vstack([centres, y[int(rng.choice(len(y), p=d2 / d2.sum()))]])
    clusters = len(centres)
    for _ in range(iterations):
        label = _nearest(y, centres)
        centres = np.stack(
            [y[label == c].mean(axis=0) if (label == c).any() else centres[c] for c in range(clusters)]
        )
    label = _nearest(y, centres)
    means = np.stack(
        [flat[label == c].mean(axis=0) if (label == c).any() else flat.mean(axis=0) for c in range(clusters)]
    )
    whiten = _whitening(flat - means[label], shrinkage)
    return Distance(whiten=whiten.astype(np.float32), centres=(means @ whiten).astype(np.float32))


def signals(
    names: list[str] | tuple[str, ...],
    images: np.ndarray,
    distances: dict[str, Distance],
    *,
    outputs: np.ndarray | None = None,
    codes: np.ndarray | None = None,
    scale: int | None = None,
) -> dict[str, np.ndarray]:
    """The named signals for a batch (each ``[n]`` float64; ``scale``: :func:`descriptor`'s)."""
    values: dict[str, np.ndarray] = {}
    vectors: dict[str, np.ndarray] = {}  # each kind of vector described once

    def distance(name: str, kind: str) -> np.ndarray:
        if name not in distances:
            raise CalibrationError(f"signal {name!r} has no fitted distance")
        if kind not in vectors:
            vectors[kind] = features(kind, images, outputs, codes, scale)
        return distances[name](vectors[kind])

    for name in names:
        if name in DISTANCES:
            values[name] = distance(name, name)
        elif name == "strokes":
            # log of the ratio of the squared distances: to the training images, to the strokes
            fitted = values["pictures"] if "pictures" in values else distance("pictures", "pictures")
            values[name] = fitted - distance("strokes", "pictures")
        elif name in ("reconstruction", "residual"):
            if outputs is None:
                raise CalibrationError(f"signal {name!r} needs the model's output")
            signal = reconstruction_signal if name == "reconstruction" else residual_signal
            values[name] = signal(images, outputs)
        else:
            raise CalibrationError(f"unknown signal {name!r}; known: {', '.join(SIGNALS)}")
    return values


def _noise_bins(sigma: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges at quantiles of ``sigma`` (at least two) and each value's bin."""
    edges = np.unique(np.quantile(sigma, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([float(sigma.min()), float(sigma.min()) + 1e-6])
    which = np.clip(np.searchsorted(edges, sigma, side="right") - 1, 0, len(edges) - 2)
    return edges, which


def _percentile_table(value: np.ndarray) -> list[float]:
    return [_short(q) for q in np.percentile(value, TABLE_PERCENTILES)] + [_short(value.max())]


def fit_view(
    values: dict[str, np.ndarray],
    sigma: np.ndarray,
    *,
    bins: int = 1,
    threshold: float = THRESHOLD_PERCENTILE,
    table_bins: int = 1,
) -> dict[str, Any]:
    """A view's calibration from validation signals and noise estimates (all ``[n]``).

    Per signal and noise bin (edges at quantiles of ``sigma``): median and interquartile range;
    then the percentiles of the combined (largest standardised) signal over all of them, and with
    ``table_bins`` > 1 also over each of that many bins of ``sigma`` (``tables``).
    """
    edges, which = _noise_bins(sigma, bins)
    centres = ((edges[:-1] + edges[1:]) / 2).tolist()
    standardise: dict[str, dict[str, list[float]]] = {}
    for name, v in values.items():
        med, iqr = [], []
        for b in range(len(centres)):
            q25, q50, q75 = np.quantile(v[which == b], [0.25, 0.5, 0.75])
            med.append(float(q50))
            iqr.append(float(max(q75 - q25, 1e-6)))
        standardise[name] = {"median": med, "iqr": iqr}
    view: dict[str, Any] = {
        "signals": list(values),
        "noise_centres": centres,
        "standardise": standardise,
        "threshold_percentile": threshold,
        "validation_values": len(sigma),
    }
    value = combined(view, values, sigma)
    view["percentiles"] = [*TABLE_PERCENTILES, 100.0]
    view["table"] = _percentile_table(value)
    view["threshold"] = _short(np.percentile(value, threshold))
    if table_bins > 1:
        _, where = _noise_bins(sigma, table_bins)
        kept = [b for b in range(int(where.max()) + 1) if (where == b).any()]
        view["table_noise_centres"] = [_short(np.median(sigma[where == b])) for b in kept]
        view["tables"] = [_percentile_table(value[where == b]) for b in kept]
    for params in standardise.values():
        for key in params:
            params[key] = [_short(x) for x in params[key]]
    view["noise_centres"] = [_short(x) for x in centres]
    return view


def _short(x: float) -> float:
    """Seven significant digits: the card stays readable and float32 holds no more."""
    return float(f"{float(x):.7g}")


def combined(view: dict[str, Any], values: dict[str, np.ndarray], sigma: np.ndarray) -> np.ndarray:
    """The largest of the standardised signals, per image (larger: less like validation)."""
    z = standardised(view, values, sigma)
    return z[0] if len(z) == 1 else np.max(np.stack(z), axis=0)


def standardised(view: dict[str, Any], values: dict[str, np.ndarray], sigma: np.ndarray) -> list[np.ndarray]:
    """Each of the view's signals less its validation median, over its interquartile range (both
    at the image's noise estimate when the view has several noise bins)."""
    centres = view["noise_centres"]
    z = []
    for name in view["signals"]:
        params = view["standardise"][name]
        if len(centres) == 1:  # one bin: plain numbers (the request path's usual case)
            med, iqr = params["median"][0], params["iqr"][0]
        else:
            med = np.interp(sigma, centres, params["median"])
            iqr = np.interp(sigma, centres, params["iqr"])
        z.append((values[name] - med) / iqr)
    return z


@dataclass(frozen=True)
class Scores:
    """Per image: the percentile of its combined signal among validation images, and the flag."""

    percentile: np.ndarray
    in_distribution: np.ndarray
    threshold: float
    # The combined signal the percentile was read from; None where the scored graph gave the
    # percentile itself.
    value: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.percentile)

    @classmethod
    def flagged(cls, view: dict[str, Any], percentile: np.ndarray, value: np.ndarray | None = None) -> Scores:
        """Percentiles flagged against the view's threshold: an image is in distribution up to it."""
        threshold = float(view["threshold_percentile"])
        return cls(percentile, percentile <= threshold, threshold, value)


def to_percentiles(view: dict[str, Any], value: np.ndarray, sigma: np.ndarray | None = None) -> Scores:
    """Map combined values through a view's table: 0 below the smallest validation value, 100 past
    the largest, linear between the stored percentiles (a tie maps to the upper end of its run).

    A view with per-noise ``tables`` maps each value through the tables of the two quartiles
    whose centres bracket its noise estimate ``sigma`` and interpolates linearly between them
    (the nearest one's alone beyond the outermost centres)."""
    tables = percentile_tables(view)
    if len(tables) == 1:
        percentile = np.interp(value, *tables[0], left=0.0, right=100.0)
    else:
        if sigma is None:
            raise CalibrationError("a view with per-noise tables needs the noise estimate")
        per_bin = np.stack([np.interp(value, t, p, left=0.0, right=100.0) for t, p in tables])
        at = np.interp(sigma, view["table_noise_centres"], np.arange(len(tables)))
        low = np.floor(at).astype(int)
        high = np.minimum(low + 1, len(tables) - 1)
        rows = np.arange(len(value))
        percentile = (1 - (at - low)) * per_bin[low, rows] + (at - low) * per_bin[high, rows]
    return Scores.flagged(view, percentile, value)


def percentile_tables(view: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The view's table (or per-noise tables) as (values, percentiles) arrays, a run of equal
    values (ties in validation) kept at its upper end so that such a value is never called more
    typical than it is; computed once per view."""
    key = id(view)
    cached = _TABLES.get(key)
    if cached is None or cached[0] is not view:
        pct = np.asarray(view["percentiles"])
        arrays = []
        for table in view.get("tables") or [view["table"]]:
            values = np.asarray(table)
            last = np.append(np.diff(values) > 0, True)
            arrays.append((values[last], pct[last]))
        cached = _TABLES[key] = (view, arrays)
    return cached[1]


# id(view) → (the view, its tables' arrays); the view is kept so that its id is not reused. The
# card stays plain JSON (GET /models serves it as it is).
_TABLES: dict[int, tuple[dict[str, Any], list[tuple[np.ndarray, np.ndarray]]]] = {}


def needs_noise(view: dict[str, Any]) -> bool:
    """Whether scoring the view needs each image's noise estimate (several bins, or tables)."""
    return len(view["noise_centres"]) > 1 or "tables" in view


def graph_scorable(view: dict[str, Any]) -> bool:
    """Whether the scored graph can compute every signal of the view (input and output alone)."""
    return all(name in GRAPH_SIGNALS for name in view["signals"])


@dataclass(frozen=True)
class ScoredGraph:
    """``scored.onnx`` as the card names it: the file, and its outputs after the autoencoder's."""

    path: Path
    view: str
    outputs: tuple[str, ...] = (PERCENTILE_OUTPUT,)
    # Why it must not be used, or "": built from another autoencoder graph or another calibration
    # of the view than the card names (a re-export, a copy whose card was edited, or a graph of an
    # older form, without rebuilding it). The model is still served, through autoencoder.onnx and
    # the numpy scores.
    stale: str = ""


@dataclass(frozen=True)
class Calibration:
    """A model's ``ood`` block with its fitted distances, ready to score requests."""

    block: dict[str, Any]
    distances: dict[str, Distance]
    graph: ScoredGraph | None = None

    @property
    def views(self) -> list[str]:
        return list(self.block["views"])

    @property
    def scale(self) -> int:
        """The resolution its pictures are described at (:data:`SCALES`, by the block's version;
        a block built in memory, with no version, is this version's)."""
        return SCALES[self.block.get("version", VERSION)]

    def needs(self, view: str) -> set[str]:
        """What the view reads beside the input: ``output`` and/or ``code``."""
        return {NEEDS[name] for name in self.block["views"][view]["signals"]} - {"input"}

    def score(
        self,
        view: str,
        images: np.ndarray,
        *,
        outputs: np.ndarray | None = None,
        codes: np.ndarray | None = None,
    ) -> Scores:
        """Score a batch: ``images`` as the model took them, with its ``outputs`` and/or ``codes``."""
        spec = self.block["views"][view]
        values = signals(
            spec["signals"], images, self.distances, outputs=outputs, codes=codes, scale=self.scale
        )
        # One noise bin and one table: nothing depends on the noise level, so skip the estimate.
        sigma = noise_estimate(images) if needs_noise(spec) else None
        return self.scores(view, values, sigma)

    def scores(self, view: str, values: dict[str, np.ndarray], sigma: np.ndarray | None) -> Scores:
        """Steps 2 and 3 on signals already computed (by :meth:`score`); ``sigma`` may be None
        when the view does not need the noise estimate."""
        spec = self.block["views"][view]
        n = len(next(iter(values.values())))
        noise = np.zeros(n) if sigma is None else np.asarray(sigma, dtype=np.float64)
        return to_percentiles(spec, combined(spec, values, noise), noise)

    @functools.cached_property
    def _thresholds(self) -> dict[str, float]:
        return {name: float(spec["threshold_percentile"]) for name, spec in self.block["views"].items()}

    def threshold(self, view: str) -> float:
        """The view's threshold: an image is in distribution up to this percentile."""
        return self._thresholds[view]

    def percentile_scores(self, view: str, percentile: np.ndarray) -> Scores:
        """The scores of a batch whose percentiles are known (the scored graph's
        ``ood_percentile``): each flagged against the view's threshold."""
        return Scores.flagged(self.block["views"][view], percentile)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(model_dir: Path, card: dict[str, Any]) -> Calibration | None:
    """The calibration of an exported model, or None when its card has no ``ood`` block.

    Raises CalibrationError when the block is not one this code reads, or names a parameters
    file that is missing or altered.
    """
    block = card.get("ood")
    if block is None:
        return None
    where = f"{model_dir}/card.json"
    if (
        not isinstance(block, dict)
        or not isinstance(block.get("version"), int)
        or block["version"] not in SCALES
        or not isinstance(block.get("views"), dict)
    ):
        versions = " or ".join(str(v) for v in SCALES)
        raise CalibrationError(f"{where}: 'ood' is not a version-{versions} calibration")
    wanted: set[str] = set()
    for name, view in block["views"].items():
        if name not in VIEWS or not view.get("signals") or any(s not in SIGNALS for s in view["signals"]):
            raise CalibrationError(f"{where}: 'ood' view {name!r} is not one this code scores")
        tables, centres = view.get("tables"), view.get("table_noise_centres")
        if tables is not None and (
            not isinstance(tables, list)
            or not isinstance(centres, list)
            or len(tables) != len(centres)
            or any(not isinstance(t, list) or len(t) != len(view["percentiles"]) for t in tables)
        ):
            raise CalibrationError(f"{where}: 'ood' view {name!r} has malformed per-noise tables")
        wanted |= reads(view["signals"])
    distances: dict[str, Distance] = {}
    if wanted:
        params = block.get("parameters") or {}
        path = Path(model_dir) / str(params.get("file", PARAMETERS_FILE))
        if not path.is_file():
            raise CalibrationError(f"{path}: missing ({where}'s 'ood' needs it)")
        if _sha256(path) != params.get("sha256"):
            raise CalibrationError(f"{path}: its sha256 differs from {where}'s 'ood'")
        with np.load(path) as arrays:
            for name in sorted(wanted):
                if f"{name}.whiten" not in arrays:
                    raise CalibrationError(f"{path}: has no distance {name!r}")
                distances[name] = Distance(arrays[f"{name}.whiten"], arrays[f"{name}.centres"])
    return Calibration(block, distances, _scored_graph(Path(model_dir), card, block, where))


def _scored_graph(
    model_dir: Path, card: dict[str, Any], block: dict[str, Any], where: str
) -> ScoredGraph | None:
    """The card's ``ood.graph``, checked: the file is there and unaltered (else CalibrationError),
    and built from the autoencoder graph the card names (else marked ``stale``)."""
    ref = block.get("graph")
    if ref is None:
        return None
    view = block["views"].get(ref.get("view")) if isinstance(ref, dict) else None
    if view is None or not graph_scorable(view):
        raise CalibrationError(f"{where}: 'ood.graph' does not name a view the scored graph can compute")
    path = model_dir / str(ref.get("file", GRAPH_FILE))
    if not path.is_file():
        raise CalibrationError(f"{path}: missing ({where}'s 'ood.graph' needs it)")
    if _sha256(path) != ref.get("sha256"):
        raise CalibrationError(f"{path}: its sha256 differs from {where}'s 'ood.graph'")
    filename = (card.get("graphs") or {}).get("autoencoder")
    stale = ""
    if ref.get("autoencoder_sha256") != (card.get("sha256") or {}).get(filename):
        stale = f"{path}: built from another {filename} than {where} names"
    elif ref.get("view_sha256") != view_digest(view):
        stale = f"{path}: built from another calibration of view {ref['view']!r} than {where} holds"
    elif ref.get("version", 2) != block["version"]:
        # (graphs written before version 3 name no version: they are version 2's)
        built = ref.get("version", 2)
        stale = f"{path}: built for version {built} of the score, {where} holds version {block['version']}"
    if stale:
        stale += f" (rebuild it: python -m training.ood_graph {model_dir})"
    return ScoredGraph(path, str(ref["view"]), stale=stale)


def view_digest(view: dict[str, Any]) -> str:
    """sha256 of a view as the card holds it: what a scored graph built the view in from."""
    text = json.dumps(view, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def graph_reference(
    model_dir: Path, view_name: str, view: dict[str, Any], autoencoder_sha256: str, version: int = VERSION
) -> dict[str, Any]:
    """The card's ``ood.graph`` for a ``scored.onnx`` just written next to it from ``view``, by
    version ``version`` of the score (whose :data:`SCALES` entry its descriptor nodes follow)."""
    return {
        "file": GRAPH_FILE,
        "sha256": _sha256(Path(model_dir) / GRAPH_FILE),
        "view": view_name,
        "autoencoder_sha256": autoencoder_sha256,
        "view_sha256": view_digest(view),
        "version": version,
    }


def save_distances(model_dir: Path, distances: dict[str, Distance]) -> dict[str, str]:
    """Write fitted distances next to the card (atomically); return the card's reference to them."""
    path = Path(model_dir) / PARAMETERS_FILE
    tmp = path.with_name(f".{PARAMETERS_FILE}.tmp")
    arrays: dict[str, Any] = {}  # Any: numpy's stub types **kwds like its allow_pickle flag
    for name, d in distances.items():
        arrays[f"{name}.whiten"], arrays[f"{name}.centres"] = d.whiten, d.centres
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.chmod(0o644)
    tmp.replace(path)
    return {"file": PARAMETERS_FILE, "sha256": _sha256(path)}
