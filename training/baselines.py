"""Classical denoisers, their per-noise-level tuning on validation, and the cached table.

Every parameter is picked per noise level by mean PSNR on a fixed slice of the **validation** split
(its first images; noise from a fresh ``default_rng(VAL_NOISE_SEED)`` per level, training/protocol.py),
never on test or training images. The test images get the evaluation noise (a fresh
``default_rng(TEST_NOISE_SEED)`` per level, one draw over the whole evaluated array).

The tuner is a grid search that cannot end on a grid edge: when the best point sits on the lowest
or highest value of an axis, that axis is extended one step past it and the search goes on, until
the optimum has an evaluated neighbour on both sides of every axis. An axis may declare one end a
bound of the method itself (the median's 3×3 window is the smallest one that filters; size 1 is the
noisy input); an optimum there is accepted and recorded as "at the method's bound". Anything else
that would leave the optimum on an edge (a hard limit of an axis, too many extensions) raises
`TuningError`. BM3D costs about half a second per 28x28 image here, so its search is coarse-to-fine
(three factors, extension, then one round of geometric midpoints) on a smaller validation slice,
and it is scored on the first images of the evaluated test set.

    python -m training.baselines --dataset mnist5k --workers 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, median_filter
from skimage.restoration import denoise_nl_means

from training import protocol
from training.data import DATASETS, load_dataset
from training.protocol import NOISE_LEVELS, TEST_LIMIT, TEST_NOISE_SEED, TUNE_IMAGES, VAL_NOISE_SEED, psnr

log = logging.getLogger(__name__)

BM3D_TUNE_IMAGES = 32
NL_MEANS_TUNE_IMAGES = 100  # its three-axis grid with search windows up to 27x27 costs minutes per level
BM3D_TEST_IMAGES = 200
MAX_EXTENSIONS = 8  # per axis and level; an optimum still on an edge after that is an error
CACHE_DIR = Path("docs/evaluation")

Params = Mapping[str, float]


class TuningError(Exception):
    """The tuner's optimum would sit on a grid edge that it cannot extend past."""


def cache_path(dataset: str) -> Path:
    return CACHE_DIR / f"baselines-{dataset}.json"


def _identity(img: np.ndarray, _: Params) -> np.ndarray:
    return img


def _gaussian(img: np.ndarray, p: Params) -> np.ndarray:
    return np.asarray(gaussian_filter(img, p["sigma"]))  # mode="reflect", scipy's default


def _median3(img: np.ndarray, _: Params) -> np.ndarray:
    return np.asarray(median_filter(img, size=3))


def _median(img: np.ndarray, p: Params) -> np.ndarray:
    return np.asarray(median_filter(img, size=int(p["size"])))


def _nl_means(img: np.ndarray, p: Params) -> np.ndarray:
    return np.asarray(
        denoise_nl_means(
            img,
            h=p["h"],
            patch_size=int(p.get("patch_size", 3)),
            patch_distance=int(p.get("patch_distance", 5)),
            fast_mode=True,
        )
    )


def _bm3d(img: np.ndarray, p: Params) -> np.ndarray:
    import bm3d

    # One thread: bm3d's own threading is slightly non-deterministic and competes with the workers.
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    return np.asarray(bm3d.bm3d(img, p["sigma_psd"], profile=profile))


@dataclass(frozen=True)
class Axis:
    """One tuned parameter: its starting grid (ascending) and how to step past either end.

    ``ratio`` > 1 steps geometrically (value · ratio, value / ratio), else ``step`` adds and subtracts.
    ``lower``/``upper`` are hard limits: stepping past one fails loudly, unless that end is declared in
    ``method_bounds`` (a limit of the method itself, or a declared cost cap), where an optimum is
    accepted and reported with its reason.
    With ``per_s`` the values are factors of the noise level s.
    """

    name: str
    values: tuple[float, ...]
    per_s: bool = False
    ratio: float = 0.0
    step: float = 0.0
    lower: float = -math.inf
    upper: float = math.inf
    # (side, reason) for each end that is a limit of the method (or a declared cost cap), not of the grid
    method_bounds: tuple[tuple[str, str], ...] = ()
    refine: int = 0  # rounds of geometric midpoints around the optimum (coarse-to-fine)
    integer: bool = False

    def beyond(self, value: float, side: str) -> float | None:
        """The next grid value past ``value`` on ``side`` ("low"/"high"), None past a hard limit."""
        if self.ratio > 1:
            nxt = value / self.ratio if side == "low" else value * self.ratio
            nxt = round(nxt, 6)
        else:
            nxt = value - self.step if side == "low" else value + self.step
        if self.integer:
            nxt = float(round(nxt))
        return nxt if self.lower - 1e-12 <= nxt <= self.upper + 1e-12 else None

    def bound_reason(self, side: str) -> str | None:
        return dict(self.method_bounds).get(side)


@dataclass(frozen=True)
class Method:
    """A classical denoiser: ``apply(image, params)``; ``axes`` are its tuned parameters (maybe none)."""

    key: str
    label: str
    apply: Callable[[np.ndarray, Params], np.ndarray]
    axes: tuple[Axis, ...] = ()
    slow: bool = False  # tuned and scored on the smaller BM3D slices
    tune_images: int | None = None  # at most this many validation images for tuning (cost)

    def params(self, point: Sequence[float], s: float) -> dict[str, float]:
        """Absolute parameters of a grid point (per-s factors multiplied by s)."""
        return {a.name: (round(v * s, 6) if a.per_s else v) for a, v in zip(self.axes, point, strict=True)}


_GAUSSIAN_SIGMAS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.4, 1.6, 1.8)
METHODS: tuple[Method, ...] = (
    Method("noisy", "noisy input (identity)", _identity),
    Method(
        "gaussian",
        "Gaussian blur (σ tuned per s)",
        _gaussian,
        axes=(Axis("sigma", (*_GAUSSIAN_SIGMAS, 2.0, 2.5), ratio=1.25, lower=0.05, upper=8.0),),
    ),
    Method("median", "median 3×3", _median3),
    Method(
        "median_tuned",
        "median (size tuned per s)",
        _median,
        axes=(
            Axis(
                "size",
                (3.0, 5.0),
                step=2.0,
                lower=3.0,
                upper=11.0,
                method_bounds=(("low", "3×3 is the smallest median window (size 1 is the noisy input)"),),
                integer=True,
            ),
        ),
    ),
    Method(
        "nl_means",
        "NL-means (h, patch size and distance tuned per s)",
        _nl_means,
        axes=(
            Axis(
                "h",
                (0.45, 0.6, 0.8, 1.05),
                per_s=True,
                ratio=1.33,
                lower=0.05,
                upper=10.0,
                refine=1,
            ),
            Axis(
                "patch_size",
                (3.0, 5.0),
                step=2.0,
                lower=1.0,
                upper=9.0,
                method_bounds=(("low", "1×1 patches are the smallest"),),
                integer=True,
            ),
            Axis(
                "patch_distance",
                (3.0, 5.0, 7.0),
                step=2.0,
                lower=1.0,
                upper=13.0,
                method_bounds=(
                    ("low", "a 3×3 search window is the smallest"),
                    ("high", "cost cap: a 27×27 search window (about 20 ms per image here)"),
                ),
                integer=True,
            ),
        ),
        tune_images=NL_MEANS_TUNE_IMAGES,
    ),
    Method(
        "bm3d",
        "BM3D (σ_psd tuned per s)",
        _bm3d,
        axes=(Axis("sigma_psd", (0.5, 0.7, 0.95), per_s=True, ratio=1.37, lower=0.1, upper=4.0, refine=1),),
        slow=True,
    ),
)
METHODS_BY_KEY = {m.key: m for m in METHODS}


def _apply_chunk(method: Method, images: np.ndarray, params: Params) -> np.ndarray:
    return np.stack([method.apply(img, params) for img in images]).astype(np.float64)


def _init_worker() -> None:
    # Each worker is one of at most two processes sharing the machine: keep BLAS/FFT single-threaded.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


class Runner:
    """Applies methods to image stacks, in this process or spread over a small process pool."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Runner:
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(self.workers, get_context("spawn"), initializer=_init_worker)
        return self

    def __exit__(self, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def apply_many(self, method: Method, jobs: Sequence[tuple[np.ndarray, Params]]) -> list[np.ndarray]:
        """Run ``method`` on each (images, params) job; slow methods are chunked over the pool."""
        if self._pool is None or not method.slow:
            return [_apply_chunk(method, images, params) for images, params in jobs]
        chunk = 8  # small chunks keep both workers busy to the end
        futures = [
            [
                self._pool.submit(_apply_chunk, method, images[i : i + chunk], params)
                for i in range(0, len(images), chunk)
            ]
            for images, params in jobs
        ]
        return [np.concatenate([f.result() for f in parts]) for parts in futures]


Point = tuple[float, ...]


@dataclass
class Tuning:
    """Where one method's optimum fell at one level, and the evidence that it is not on an edge."""

    s: float
    point: Point  # grid coordinates (factors of s on per-s axes)
    params: dict[str, float]  # absolute parameters
    psnr: float
    scores: dict[Point, float]  # every evaluated grid point's mean validation PSNR
    # per axis: the nearest evaluated values below and above the optimum (others fixed) and their PSNR;
    # None on a side only where the optimum sits at the method's own bound
    neighbours: dict[str, dict[str, tuple[float, float] | None]]
    at_method_bound: dict[str, str]  # axis name → reason, for an optimum at a method bound
    extensions: int  # grid steps added past the starting grid

    def to_json(self, axes: Sequence[Axis]) -> dict[str, Any]:
        return {
            "s": self.s,
            "params": self.params,
            "grid_point": dict(zip((a.name for a in axes), self.point, strict=True)),
            "psnr": round(self.psnr, 4),
            "on_grid_edge": False,
            "neighbours": {
                name: {side: None if v is None else [v[0], round(v[1], 4)] for side, v in sides.items()}
                for name, sides in self.neighbours.items()
            },
            "at_method_bound": self.at_method_bound,
            "extensions": self.extensions,
            "evaluated": [[list(p), round(v, 4)] for p, v in self.scores.items()],
        }


def _line(scores: Mapping[Point, float], best: Point, i: int) -> list[float]:
    """Evaluated values of axis i with every other coordinate at the optimum's."""
    others = best[:i] + best[i + 1 :]
    return sorted({p[i] for p in scores if p[:i] + p[i + 1 :] == others})


def tune(
    method: Method,
    clean: np.ndarray,
    s: float,
    runner: Runner,
    seed: int = VAL_NOISE_SEED,
    max_extensions: int = MAX_EXTENSIONS,
    noisy: np.ndarray | None = None,
    strict: bool = True,
) -> Tuning:
    """The grid point with the best mean PSNR on ``clean`` + noise at ``s``, never on a grid edge.

    Starts from the full product of the axes' grids; then, until the best point has an evaluated
    neighbour on both sides of every axis, its missing neighbours are evaluated, and a best point on
    an end of an axis gets one more value past it; then ``refine`` rounds of geometric midpoints next
    to the optimum, each followed by the same neighbour check. Ties go to the point evaluated first.
    ``noisy`` replaces the Gaussian corruption (other noise kinds); ``s`` then scales the per-s axes.
    ``strict=False`` accepts an optimum at an axis's hard limit (recorded in ``at_method_bound``)
    instead of raising TuningError: for a user's own data, where a report beats no report.
    """
    if not method.axes:
        raise ValueError(f"{method.key} has nothing to tune")
    if noisy is None:
        noisy = protocol.noisy(clean, s, seed)
    axes = method.axes
    grids = [sorted(set(a.values)) for a in axes]
    scores: dict[Point, float] = {}

    def run(points: Sequence[Point]) -> None:
        new = [p for p in dict.fromkeys(points) if p not in scores]
        if new:
            outputs = runner.apply_many(method, [(noisy, method.params(p, s)) for p in new])
            for p, out in zip(new, outputs, strict=True):
                scores[p] = float(psnr(clean, out).mean())

    def best() -> Point:
        return max(scores, key=scores.__getitem__)  # first evaluated wins a tie

    extensions = [0] * len(axes)

    def settle() -> None:
        """Evaluate the best point's neighbours on every axis until the best has them all.

        A best point on an end of an axis gets one more value past that end (the axis's step), so on
        return it is the best of everything evaluated and has an evaluated neighbour on both sides of
        every axis, except at a declared bound of the method.
        """
        while True:
            b, new = best(), []
            for i, axis in enumerate(axes):
                values = sorted({*grids[i], *_line(scores, b, i)})
                k = values.index(b[i])
                for side, j in (("low", k - 1), ("high", k + 1)):
                    if 0 <= j < len(values):
                        value = values[j]
                    else:
                        nxt = axis.beyond(b[i], side)
                        if nxt is None:
                            if axis.bound_reason(side) is not None or not strict:
                                continue  # the method's own limit: accepted, and recorded below
                            raise TuningError(
                                f"{method.key} at s={s:g}: the optimum {axis.name}={b[i]:g} is on the {side} "
                                f"edge of its grid and the axis stops there ({axis.lower:g}…{axis.upper:g})"
                            )
                        if extensions[i] >= max_extensions:
                            if not strict:
                                continue
                            raise TuningError(
                                f"{method.key} at s={s:g}: the optimum {axis.name}={b[i]:g} is still on the "
                                f"{side} edge after {max_extensions} extensions"
                            )
                        extensions[i] += 1
                        grids[i] = sorted({*grids[i], nxt})
                        value = nxt
                    point = (*b[:i], value, *b[i + 1 :])
                    if point not in scores:
                        new.append(point)
            if not new:
                return
            run(new)

    run(list(itertools.product(*grids)))
    settle()
    for i, axis in enumerate(axes):
        for _ in range(axis.refine):
            b = best()
            line = _line(scores, b, i)
            k = line.index(b[i])
            mids = [round(math.sqrt(line[j] * b[i]), 6) for j in (k - 1, k + 1) if 0 <= j < len(line)]
            run([(*b[:i], m, *b[i + 1 :]) for m in mids])
            settle()
    b = best()
    neighbours: dict[str, dict[str, tuple[float, float] | None]] = {}
    at_bound: dict[str, str] = {}
    for i, axis in enumerate(axes):
        line = _line(scores, b, i)
        k = line.index(b[i])
        sides: dict[str, tuple[float, float] | None] = {}
        for side, j in (("low", k - 1), ("high", k + 1)):
            if 0 <= j < len(line):
                sides[side] = (line[j], scores[(*b[:i], line[j], *b[i + 1 :])])
            elif (reason := axis.bound_reason(side)) is not None:
                sides[side] = None
                at_bound[axis.name] = reason
            elif not strict:
                sides[side] = None
                at_bound[axis.name] = f"the grid's hard {side} limit ({axis.lower:g}…{axis.upper:g})"
            else:  # cannot happen after the loop above; a guard against a silent edge all the same
                raise TuningError(f"{method.key} at s={s:g}: {axis.name}={b[i]:g} has no {side} neighbour")
        neighbours[axis.name] = sides
    return Tuning(
        s=s,
        point=b,
        params=method.params(b, s),
        psnr=scores[b],
        scores=scores,
        neighbours=neighbours,
        at_method_bound=at_bound,
        extensions=sum(extensions),
    )


def _versions() -> dict[str, str]:
    names = ("numpy", "scipy", "scikit-image", "bm3d")
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def compute_baselines(
    dataset: str,
    data_dir: str | Path | None = None,
    test_limit: int | None = None,
    tune_images: int = TUNE_IMAGES,
    bm3d_tune_images: int = BM3D_TUNE_IMAGES,
    bm3d_test_images: int = BM3D_TEST_IMAGES,
    workers: int = 2,
    methods: Sequence[str] | None = None,
    levels: Sequence[float] = NOISE_LEVELS,
    on_method: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Tune every classical method on the validation split and score it on the test split.

    ``on_method`` gets the partial result after each method (for a progress file).
    """
    split = load_dataset(dataset, data_dir)
    val = split.val_x
    test = split.test_x[:test_limit] if test_limit else split.test_x
    bm3d_test_images = min(bm3d_test_images, len(test))
    chosen = [METHODS_BY_KEY[k] for k in methods] if methods else list(METHODS)
    n_val, n_val_bm3d = min(tune_images, len(val)), min(bm3d_tune_images, len(val))
    result: dict[str, Any] = {
        "dataset": dataset,
        "noise_levels": list(levels),
        "test_images": len(test),
        "subset_images": bm3d_test_images,
        "protocol": {
            "test": f"first {len(test)} test images, "
            f"noise from a fresh default_rng({TEST_NOISE_SEED}) per level",
            "subset": f"first {bm3d_test_images} of them (BM3D is scored there only)",
            "tuning": f"mean PSNR on the first {n_val} images of the validation split "
            f"(NL-means: {min(n_val, NL_MEANS_TUNE_IMAGES)}, BM3D: {n_val_bm3d}), "
            f"noise from a fresh default_rng({VAL_NOISE_SEED}) per level; "
            "grids extended until no optimum sits on an edge",
            "validation_split": split.info.get("validation_rule", ""),
        },
        "workers": workers,
        "methods": {},
    }
    with Runner(workers) as runner:
        for method in chosen:
            started = time.perf_counter()
            n_tune = n_val_bm3d if method.slow else n_val
            if method.tune_images is not None:
                n_tune = min(n_tune, method.tune_images)
            n_test = bm3d_test_images if method.slow else len(test)
            rows: dict[str, list[float]] = {"psnr": [], "ssim": [], "subset_psnr": [], "subset_ssim": []}
            tunings: list[Tuning] = []
            jobs: list[tuple[np.ndarray, Params]] = []
            for s in levels:
                params: Params = {}
                if method.axes:
                    tuning = tune(method, val[:n_tune], s, runner)
                    tunings.append(tuning)
                    params = tuning.params
                    log.info(
                        "%s s=%.2f tuned on %d validation images (%d points): %s, PSNR %.2f%s",
                        method.key,
                        s,
                        n_tune,
                        len(tuning.scores),
                        params,
                        tuning.psnr,
                        f" at the method's bound ({tuning.at_method_bound})"
                        if tuning.at_method_bound
                        else "",
                    )
                jobs.append((protocol.noisy(test, s, TEST_NOISE_SEED)[:n_test], params))
            for s, (_, params), out in zip(levels, jobs, runner.apply_many(method, jobs), strict=True):
                for k, v in protocol.mean_scores(test[:n_test], out, bm3d_test_images).items():
                    rows[k].append(v)
                log.info("%s s=%.2f %s test PSNR %.2f", method.key, s, params, rows["psnr"][-1])
            entry: dict[str, Any] = {"label": method.label, "test_images": n_test, **rows}
            if method.axes:
                entry.update(
                    axes=[
                        {
                            "name": a.name,
                            "grid": list(a.values),
                            "factor_of_s": a.per_s,
                            "method_bounds": dict(a.method_bounds),
                        }
                        for a in method.axes
                    ],
                    params=[t.params for t in tunings],
                    tune_split="validation",
                    tune_images=n_tune,
                    on_grid_edge=False,
                    tuning=[t.to_json(method.axes) for t in tunings],
                )
            entry["seconds"] = round(time.perf_counter() - started, 1)
            result["methods"][method.key] = entry
            if on_method is not None:
                on_method(result)
    result["versions"] = _versions()
    result["created"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return result


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.baselines",
        description="Tune the classical denoisers on the validation split, score them on the test split, "
        "and cache the table for the evaluation reports.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="mnist5k")
    parser.add_argument(
        "--data-dir",
        help="directory with the four IDX files (mnist; fashion's default: "
        "/usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument(
        "--test-limit",
        type=int,
        default=TEST_LIMIT,
        help="score the first N test images (all of mnist5k's 1000; 2000 of mnist's and fashion's)",
    )
    parser.add_argument(
        "--tune-images", type=int, default=TUNE_IMAGES, help="validation images used for tuning"
    )
    parser.add_argument(
        "--bm3d-tune-images", type=int, default=BM3D_TUNE_IMAGES, help="validation images for BM3D's tuning"
    )
    parser.add_argument(
        "--bm3d-test-images",
        type=int,
        default=BM3D_TEST_IMAGES,
        help="BM3D is scored on the first N evaluated test images",
    )
    parser.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=list(NOISE_LEVELS),
        help="noise levels (default: the protocol's seven)",
    )
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS_BY_KEY), help="only these methods (default: all)"
    )
    parser.add_argument("--workers", type=int, default=2, choices=(1, 2), help="processes for BM3D")
    parser.add_argument(
        "--out", type=Path, help="output JSON (default: docs/evaluation/baselines-<dataset>.json)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out or cache_path(args.dataset)
    partial = out.with_name(out.stem + ".partial.json")
    data = compute_baselines(
        args.dataset,
        args.data_dir,
        test_limit=args.test_limit,
        tune_images=args.tune_images,
        bm3d_tune_images=args.bm3d_tune_images,
        bm3d_test_images=args.bm3d_test_images,
        workers=args.workers,
        methods=args.methods,
        levels=tuple(args.levels),
        on_method=lambda d: write_json(partial, d),
    )
    cli_args = list(argv) if argv is not None else sys.argv[1:]
    data["command"] = shlex.join(["python", "-m", "training.baselines", *cli_args])
    write_json(out, data)
    partial.unlink(missing_ok=True)
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
