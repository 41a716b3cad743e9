"""Classical denoisers, their per-noise-level tuning, and the cached table that every report reuses.

The protocol is `reference/baselines.md`'s: each parameter is picked per noise level by mean PSNR
on a slice of the *train* split (noise from a fresh ``default_rng(999)``), never on the test set;
the test images get the evaluation noise (a fresh ``default_rng(1234)`` per level, one draw over the
whole evaluated array). BM3D costs about half a second per 28x28 image here, so it is tuned on a
smaller train slice and scored on the first images of the evaluated test set.

    python -m training.baselines --dataset mnist5k --workers 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
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

from training.data import DATASETS, NOISE_LEVELS, add_noise, load_dataset
from training.metrics import psnr, ssim

log = logging.getLogger(__name__)

EVAL_SEED = 1234  # noise of the test images, fresh per level (DESIGN.md)
TUNE_SEED = 999  # noise of the validation slice, fresh per level
TUNE_IMAGES = 200  # validation slice: the first images of the train split
BM3D_TUNE_IMAGES = 32
BM3D_TEST_IMAGES = 200
# Fashion-MNIST's 10,000 test images: the reference table scores the first 2,000.
DEFAULT_TEST_LIMIT: dict[str, int | None] = {"mnist5k": None, "mnist": 2000, "fashion": 2000}
CACHE_DIR = Path("docs/evaluation")


def cache_path(dataset: str) -> Path:
    return CACHE_DIR / f"baselines-{dataset}.json"


def _identity(img: np.ndarray, _: float) -> np.ndarray:
    return img


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(gaussian_filter(img, sigma))  # mode="reflect", scipy's default


def _median(img: np.ndarray, _: float) -> np.ndarray:
    return np.asarray(median_filter(img, size=3))


def _nl_means(img: np.ndarray, h: float) -> np.ndarray:
    return np.asarray(denoise_nl_means(img, h=h, patch_size=3, patch_distance=5, fast_mode=True))


def _bm3d(img: np.ndarray, sigma_psd: float) -> np.ndarray:
    import bm3d

    # One thread: bm3d's own threading is slightly non-deterministic and competes with the workers.
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    return np.asarray(bm3d.bm3d(img, sigma_psd, profile=profile))


@dataclass(frozen=True)
class Method:
    """A classical denoiser: ``apply(image, param)``; the tuned param is ``factor * s`` when ``per_s``."""

    key: str
    label: str
    apply: Callable[[np.ndarray, float], np.ndarray]
    grid: tuple[float, ...] = ()  # empty: nothing to tune
    param_name: str = ""
    per_s: bool = False  # grid holds factors of s rather than absolute values
    slow: bool = False  # tuned and scored on the smaller BM3D slices


METHODS: tuple[Method, ...] = (
    Method("noisy", "noisy input (identity)", _identity),
    Method(
        "gaussian",
        "Gaussian blur (σ tuned per s)",
        _gaussian,
        grid=(
            0.15,
            0.2,
            0.25,
            0.3,
            0.35,
            0.4,
            0.5,
            0.6,
            0.7,
            0.8,
            0.9,
            1.0,
            1.1,
            1.25,
            1.4,
            1.6,
            1.8,
            2.0,
            2.5,
        ),
        param_name="sigma (px)",
    ),
    Method("median", "median 3×3", _median),
    Method(
        "nl_means",
        "NL-means (h tuned per s)",
        _nl_means,
        grid=(0.3, 0.45, 0.6, 0.75, 0.9, 1.05, 1.2, 1.4, 1.7, 2.0),
        param_name="h",
        per_s=True,
    ),
    Method(
        "bm3d",
        "BM3D (σ_psd tuned per s)",
        _bm3d,
        grid=(0.45, 0.55, 0.65, 0.8, 0.95),
        param_name="sigma_psd",
        per_s=True,
        slow=True,
    ),
)
METHODS_BY_KEY = {m.key: m for m in METHODS}


def _apply_chunk(method: Method, images: np.ndarray, param: float) -> np.ndarray:
    return np.stack([method.apply(img, param) for img in images]).astype(np.float64)


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

    def apply_many(self, method: Method, jobs: Sequence[tuple[np.ndarray, float]]) -> list[np.ndarray]:
        """Run ``method`` on each (images, param) job; slow methods are chunked over the pool."""
        if self._pool is None or not method.slow:
            return [_apply_chunk(method, images, param) for images, param in jobs]
        chunk = 8  # small chunks keep both workers busy to the end
        futures = [
            [
                self._pool.submit(_apply_chunk, method, images[i : i + chunk], param)
                for i in range(0, len(images), chunk)
            ]
            for images, param in jobs
        ]
        return [np.concatenate([f.result() for f in parts]) for parts in futures]


def tune(
    method: Method, clean: np.ndarray, s: float, runner: Runner, seed: int = TUNE_SEED
) -> tuple[float, list[float]]:
    """The grid value with the best mean PSNR on ``clean`` + noise at ``s``; also every value's PSNR.

    Ties go to the first grid value. Returns the parameter itself (``factor * s`` for per-s grids).
    """
    if not method.grid:
        return float("nan"), []
    noisy = add_noise(clean, s, np.random.default_rng(seed))
    params = [f * s if method.per_s else f for f in method.grid]
    outputs = runner.apply_many(method, [(noisy, p) for p in params])
    scores = [float(psnr(clean, out).mean()) for out in outputs]
    return round(float(params[int(np.argmax(scores))]), 6), scores


def protocol_noisy(clean: np.ndarray, s: float, seed: int = EVAL_SEED) -> np.ndarray:
    """The evaluation input at level s: one draw from a fresh generator over the whole array."""
    return add_noise(clean, s, np.random.default_rng(seed))


def mean_scores(clean: np.ndarray, estimate: np.ndarray, subset: int) -> dict[str, float]:
    """Mean PSNR/SSIM over all images and over the first ``subset`` (the paired BM3D comparison)."""
    p, q = psnr(clean, estimate), ssim(clean, estimate)
    return {
        "psnr": float(p.mean()),
        "ssim": float(q.mean()),
        "subset_psnr": float(p[:subset].mean()),
        "subset_ssim": float(q[:subset].mean()),
    }


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
) -> dict[str, Any]:
    """Tune every classical method on the train split and score it on the test split."""
    split = load_dataset(dataset, data_dir)
    test = split.test_x[:test_limit] if test_limit else split.test_x
    bm3d_test_images = min(bm3d_test_images, len(test))
    chosen = [METHODS_BY_KEY[k] for k in methods] if methods else list(METHODS)
    result: dict[str, Any] = {
        "dataset": dataset,
        "noise_levels": list(levels),
        "test_images": len(test),
        "subset_images": bm3d_test_images,
        "protocol": {
            "test": f"first {len(test)} test images, noise from a fresh default_rng({EVAL_SEED}) per level",
            "subset": f"first {bm3d_test_images} of them (BM3D is scored there only)",
            "tuning": f"mean PSNR on the first {tune_images} train images (BM3D: {bm3d_tune_images}), "
            f"noise from a fresh default_rng({TUNE_SEED}) per level",
        },
        "workers": workers,
        "methods": {},
    }
    with Runner(workers) as runner:
        for method in chosen:
            started = time.perf_counter()
            n_tune = bm3d_tune_images if method.slow else tune_images
            n_test = bm3d_test_images if method.slow else len(test)
            rows: dict[str, list[float]] = {"psnr": [], "ssim": [], "subset_psnr": [], "subset_ssim": []}
            params, tuning = [], []
            jobs = []
            for s in levels:
                param, scores = tune(method, split.train_x[:n_tune], s, runner)
                if method.grid:
                    log.info(
                        "%s s=%.2f tuned on %d train images: %s = %.4g",
                        method.key,
                        s,
                        n_tune,
                        method.param_name,
                        param,
                    )
                params.append(param)
                tuning.append(scores)
                jobs.append((protocol_noisy(test, s)[:n_test], param))
            for s, (_, param), out in zip(levels, jobs, runner.apply_many(method, jobs), strict=True):
                for k, v in mean_scores(test[:n_test], out, bm3d_test_images).items():
                    rows[k].append(v)
                log.info("%s s=%.2f param=%.4g PSNR %.2f", method.key, s, param, rows["psnr"][-1])
            entry: dict[str, Any] = {"label": method.label, "test_images": n_test, **rows}
            if method.grid:
                entry.update(
                    param_name=method.param_name,
                    grid=list(method.grid),
                    grid_is_factor_of_s=method.per_s,
                    params=params,
                    tune_images=n_tune,
                    tuning_psnr=tuning,
                )
            entry["seconds"] = round(time.perf_counter() - started, 1)
            result["methods"][method.key] = entry
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
        description="Tune the classical denoisers on the train split, score them on the test split, "
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
        help="score the first N test images (default: all for mnist5k, 2000 for mnist and fashion)",
    )
    parser.add_argument("--tune-images", type=int, default=TUNE_IMAGES, help="train images used for tuning")
    parser.add_argument("--bm3d-tune-images", type=int, default=BM3D_TUNE_IMAGES)
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
    parser.add_argument("--workers", type=int, default=2, choices=(1, 2), help="processes for BM3D")
    parser.add_argument(
        "--out", type=Path, help="output JSON (default: docs/evaluation/baselines-<dataset>.json)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    limit = args.test_limit if args.test_limit is not None else DEFAULT_TEST_LIMIT[args.dataset]
    data = compute_baselines(
        args.dataset,
        args.data_dir,
        test_limit=limit,
        tune_images=args.tune_images,
        bm3d_tune_images=args.bm3d_tune_images,
        bm3d_test_images=args.bm3d_test_images,
        workers=args.workers,
        levels=tuple(args.levels),
    )
    cli_args = list(argv) if argv is not None else sys.argv[1:]
    data["command"] = shlex.join(["python", "-m", "training.baselines", *cli_args])
    out = args.out or cache_path(args.dataset)
    write_json(out, data)
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
