"""`python -m training.train`: train one model, checkpoint every epoch, export it to ONNX.

    python -m training.train --arch denoise --data mnist5k --epochs 60 --seed 0 --out models/mnist-denoise

Denoisers train *blind*: every image of every batch gets its own noise level s ~ U[noise_min,
noise_max], drawn fresh each time it is seen, so one model serves every level. `--lesson` instead
reproduces the reference lesson exactly (its network, Glorot init, Adam 1e-3, batch 200,
BCE-with-logits, a single noise level 0.5, constant LR).

Resuming (`--resume`) restores the model, the optimizer, the LR schedule, the epoch and the random
generators, so an interrupted run finishes with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from training import noise as noise_models
from training.board import Board, BoardError
from training.calibrate import Data as CalibrationData
from training.calibrate import calibrate
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.data import DATASETS, VAL_NOISE_SEED, DataError, add_noise, load_dataset
from training.export import ExportError, export_model, model_id_for, record_code_range
from training.metrics import psnr
from training.models import ARCHS, CODELESS, Arch, Model, ModelConfig, build_model, preset
from training.sources import is_source, source_id

log = logging.getLogger("training.train")

Loss = Literal["bce", "mse", "psnr"]
LOSSES: tuple[Loss, ...] = ("bce", "mse", "psnr")
# Levels of the validation check run after every epoch; the epoch with the best mean validation
# PSNR over them is the one exported (the full protocol, on test, is training.evaluate's alone).
VAL_LEVELS = (0.05, 0.1, 0.3, 0.6)


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run except the network (that is ModelConfig); stored in checkpoint and card."""

    arch: Arch = "denoise"
    data: str = "mnist5k"
    lesson: bool = False
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    loss: Loss = "mse"
    # Adds ssim_weight * (1 - SSIM) to the loss (SSIM as the evaluation computes it).
    ssim_weight: float = 0.0
    # Noise model (training/noise.py) and its per-image level ~ U[noise_min, noise_max] (poisson:
    # log-uniform); equal bounds give a single level. `mixed` uses each kind's default range.
    noise: str = "gaussian"
    noise_min: float = 0.0
    noise_max: float = 0.6
    # This fraction of the images draws s ~ U[noise_min, low_noise_max] instead: more practice at
    # the light noise where full-resolution detail decides the score (0: plain uniform).
    low_noise_fraction: float = 0.0
    low_noise_max: float = 0.15
    # Random translation of each clean image by up to this many pixels (zero fill): cheap
    # augmentation that matters on 4,000 training images.
    shift: int = 2
    seed: int = 0
    # Use only the first n training images (None: all); for smoke tests.
    train_limit: int | None = None
    # Own images (folder:, npz:, npy:): skip unusable files instead of failing; polarity
    # (auto: invert when most images are dark on light, as the service's invert=true does).
    skip_bad: bool = False
    invert: Literal["auto", "yes", "no"] = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_config(arch: Arch, data: str, lesson: bool) -> TrainConfig:
    """The recipe each shipped model was trained with, or the lesson's (see docs/training.md)."""
    if lesson:
        # Plain AEs in the lesson learn to reconstruct clean images; its denoiser sees s = 0.5 only.
        level = 0.5 if arch == "denoise" else 0.0
        return TrainConfig(
            arch=arch,
            data=data,
            lesson=True,
            epochs=100 if data == "mnist5k" else 10,
            batch_size=200,
            lr=1e-3,
            schedule="constant",
            loss="bce",
            noise_min=level,
            noise_max=level,
            shift=0,
        )
    small = data == "mnist5k"
    shift = 2 if small else 0  # 60,000 images need no augmentation for a few epochs
    if arch in ("unet", "s2d"):
        # The per-image log loss (`psnr`) keeps low-noise images, whose errors are tiny, from being
        # ignored next to high-noise ones: the unet must win at s = 0.05 too. The SSIM term keeps
        # it from trading a clean background for a fraction of a dB at high noise.
        return TrainConfig(
            arch=arch,
            data=data,
            epochs=(60 if small else 4) if arch == "unet" else (90 if small else 8),
            batch_size=32,
            lr=2e-3,
            loss="psnr",
            ssim_weight=20.0,
            shift=shift,
        )
    if arch in ("dense", "conv"):
        # The lesson's small networks keep its BCE: with MSE on a sigmoid output they saturate
        # early on black backgrounds and stop learning.
        return TrainConfig(
            arch=arch,
            data=data,
            epochs=(100 if arch == "dense" else 60) if small else 10,
            batch_size=64,
            lr=1e-3,
            loss="bce",
            shift=shift,
        )
    return TrainConfig(arch=arch, data=data, epochs=60 if small else 5, batch_size=64, lr=2e-3, shift=shift)


def default_description(cfg: TrainConfig, model_cfg: ModelConfig) -> str:
    """One sentence for the card: what the network is and what it was trained on."""
    kind = {
        "dense": "Dense autoencoder (784-32-784)",
        "conv": "Convolutional autoencoder",
        "denoise": "Convolutional denoising autoencoder",
        "unet": "U-Net denoiser predicting the residual noise (no code)",
        "s2d": "Space-to-depth residual denoiser with a thin full-resolution path (no code)",
    }[model_cfg.arch]
    shape = model_cfg.code_shape
    code = f" with a {'x'.join(map(str, shape))} code ({math.prod(shape)} numbers)" if shape else ""
    if cfg.noise != "gaussian":
        noise = noise_models.describe(cfg.noise, cfg.noise_min, cfg.noise_max) + " noise (blind)"
    elif cfg.noise_max == 0:
        noise = "clean images"
    elif cfg.noise_min == cfg.noise_max:
        noise = f"noise level {cfg.noise_max} only"
    else:
        noise = f"noise levels s ~ U[{cfg.noise_min}, {cfg.noise_max}] (blind)"
    return f"{kind}{code}, trained on {cfg.data} with {noise}, {cfg.epochs} epochs."


def noise_card(cfg: TrainConfig) -> dict[str, Any]:
    """The card's ``noise``: what the model was made for (GET /models shows it)."""
    return noise_models.card_entry(
        cfg.noise, cfg.noise_min, cfg.noise_max, cfg.low_noise_fraction, cfg.low_noise_max
    )


def random_shift(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Translate each image of `x` [n,1,28,28] by its own integer offset in [-max_shift, max_shift]."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def corrupt(x: Tensor, cfg: TrainConfig, gen: torch.Generator) -> Tensor:
    """The run's noise with a level drawn per image (gaussian: clip(x + s * N(0, 1), 0, 1))."""
    if cfg.noise != "gaussian":
        return noise_models.corrupt(x, cfg.noise, cfg.noise_min, cfg.noise_max, gen)
    u = torch.rand(x.shape[0], 1, 1, 1, generator=gen)
    top = torch.full_like(u, cfg.noise_max)
    if cfg.low_noise_fraction:
        low = torch.rand(x.shape[0], 1, 1, 1, generator=gen) < cfg.low_noise_fraction
        top = torch.where(low, torch.full_like(u, min(cfg.low_noise_max, cfg.noise_max)), top)
    s = cfg.noise_min + (top - cfg.noise_min) * u
    return noise_models.apply_torch("gaussian", x, s, gen)


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Per-image SSIM of [n,1,h,w] stacks, as skimage computes it with the protocol's settings.

    skimage's defaults: a 7x7 uniform window, sample covariances (49/48), K1 = 0.01, K2 = 0.03,
    data range 1, and the mean over the windows that fit inside the image (no padding).
    """
    win, cov_norm = 7, 49.0 / 48.0
    c1, c2 = 0.01**2, 0.03**2

    def avg(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, win, stride=1)

    ux, uy = avg(x), avg(y)
    vx = cov_norm * (avg(x * x) - ux * ux)
    vy = cov_norm * (avg(y * y) - uy * uy)
    vxy = cov_norm * (avg(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def reconstruction_loss(
    model: Model, noisy: Tensor, clean: Tensor, loss: Loss, ssim_weight: float = 0.0
) -> Tensor:
    raw = model.raw(noisy)
    estimate = torch.sigmoid(raw) if model.outputs_logits else raw
    if loss == "bce":
        if not model.outputs_logits:
            raise ValueError("loss 'bce' needs a model with a sigmoid output; use mse or psnr")
        value = F.binary_cross_entropy_with_logits(raw, clean)
    elif loss == "mse":
        value = F.mse_loss(estimate, clean)
    else:
        # Mean per-image -PSNR: the evaluation's own average, so easy images are not drowned out
        # by hard ones the way a pooled MSE drowns them.
        mse = (estimate - clean).pow(2).mean(dim=(1, 2, 3))
        value = (10.0 * torch.log10(mse + 1e-8)).mean()
    if ssim_weight:
        # PSNR alone leaves faint noise on flat backgrounds, which SSIM (data range 1) punishes.
        value = value + ssim_weight * (1.0 - ssim(estimate, clean)).mean()
    return value


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    # Cosine decay to zero over the whole run, stepped per batch; a short linear warm-up keeps the
    # first Adam steps (with BatchNorm statistics still settling) from overshooting.
    warmup = min(200, total // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epoch(
    model: Model,
    images: Tensor,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    bar: tqdm[Any],
    max_batches: int | None = None,
) -> float:
    """One pass over `images` in a fresh random order; returns the mean training loss."""
    model.train()
    order = torch.randperm(len(images), generator=gen)
    total, count = 0.0, 0
    for start in range(0, len(images), cfg.batch_size):
        clean = images[order[start : start + cfg.batch_size]]
        if cfg.shift:
            clean = random_shift(clean, cfg.shift, gen)
        noisy = corrupt(clean, cfg, gen).contiguous(memory_format=torch.channels_last)
        loss = reconstruction_loss(model, noisy, clean, cfg.loss, cfg.ssim_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(clean)
        count += len(clean)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if max_batches is not None and count >= max_batches * cfg.batch_size:
            break
    return total / count


def _val_inputs(noise: str) -> list[tuple[str, noise_models.Kind, float]]:
    """(key, kind, level) of the validation check: VAL_LEVELS for gaussian, each kind's own otherwise."""
    if noise == "gaussian":
        return [(str(s), "gaussian", s) for s in VAL_LEVELS]
    return [
        (f"{kind} {noise_models.SPECS[kind].level_name}={level:g}", kind, level)
        for kind in noise_models.kinds_of(noise)
        for level in noise_models.SPECS[kind].val_levels
    ]


def validate(model: Model, val_x: np.ndarray, limit: int = 2000, noise: str = "gaussian") -> dict[str, float]:
    """Mean validation PSNR per level, noise from a fresh default_rng(VAL_NOISE_SEED) per level.

    Gaussian runs check VAL_LEVELS; other noises a few levels of each kind they train for.
    Validation only: the test split and its noise seed are the final evaluation's alone.
    """
    model.eval()
    clean = val_x[:limit]
    result: dict[str, float] = {}
    with torch.no_grad():
        for key, kind, level in _val_inputs(noise):
            if kind == "gaussian":
                noisy = add_noise(clean, level, np.random.default_rng(VAL_NOISE_SEED))
            else:
                noisy = noise_models.noisy_numpy(kind, clean, level, VAL_NOISE_SEED)
            out = model(torch.from_numpy(noisy)[:, None]).numpy()[:, 0]
            result[key] = round(float(psnr(clean, out).mean()), 3)
    return result


def _mean(scores: dict[str, float]) -> float:
    return float(np.mean(list(scores.values())))


def train(
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    out: Path | None,
    checkpoint: Path,
    *,
    data_dir: Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    dry_run: bool = False,
    description: str | None = None,
    model_id: str | None = None,
    progress: bool = True,
    evaluate: bool = True,
    tensorboard: Path | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run, checkpointing after each epoch; export to `out` when it completes.

    `stop_after` ends the run after that epoch as an interruption would (the checkpoint stays
    resumable); `dry_run` runs one batch of one epoch, checkpoints and exports, for smoke tests;
    `evaluate` scores the validation split after every epoch and exports the epoch with the best
    mean validation PSNR (without it, the last epoch).
    Returns the final checkpoint state's summary (loss history, validation history, timings).
    """
    split = load_dataset(cfg.data, data_dir, skip_bad=cfg.skip_bad, invert=cfg.invert)
    val_limit = 16 if dry_run else 2000
    train_x = split.train_x if cfg.train_limit is None else split.train_x[: cfg.train_limit]
    images = torch.from_numpy(np.ascontiguousarray(train_x))[:, None]
    steps_per_epoch = math.ceil(len(images) / cfg.batch_size)

    torch.manual_seed(cfg.seed)
    # oneDNN's convolutions run 1.4-1.8x faster on CPU in NHWC than in NCHW at these small widths.
    model = build_model(model_cfg)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub omits it
    gen = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    history: list[float] = []
    val_history: list[dict[str, float]] = []
    best: dict[str, Any] | None = None  # {"epoch", "val_psnr", "model"}: the epoch to export
    elapsed = 0.0
    start_epoch = 0
    if resume:
        state = load_checkpoint(checkpoint)
        if state["train_config"] != cfg.to_dict() or state["model_config"] != model_cfg.to_dict():
            raise SystemExit(
                f"{checkpoint}: was written for another configuration; resume with the same flags"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        history, elapsed, start_epoch = state["history"], state["elapsed_s"], state["epoch"]
        val_history, best = state.get("val_history", []), state.get("best")
        log.info("resumed %s at epoch %d/%d", checkpoint, start_epoch, cfg.epochs)

    last_epoch = 1 if dry_run else cfg.epochs
    if stop_after is not None:
        last_epoch = min(last_epoch, stop_after)
    bar = tqdm(
        total=(last_epoch - start_epoch) * (1 if dry_run else steps_per_epoch),
        desc=f"{cfg.arch}/{cfg.data}",
        disable=not progress,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        file=sys.stderr,
    )
    board = Board(tensorboard, split.val_x, cfg.noise) if tensorboard is not None else None
    for epoch in range(start_epoch, last_epoch):
        t0 = time.perf_counter()
        loss = train_epoch(model, images, cfg, optimizer, scheduler, gen, bar, 1 if dry_run else None)
        elapsed += time.perf_counter() - t0
        history.append(loss)
        line = f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.5f} lr {scheduler.get_last_lr()[0]:.2e}"
        scores = None
        if evaluate:
            scores = validate(model, split.val_x, limit=val_limit, noise=cfg.noise)
            val_history.append(scores)
            line += f" val PSNR {_mean(scores):.3f} dB {scores}"
            if best is None or _mean(scores) > best["val_mean_psnr"]:
                state_copy = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best = {"epoch": epoch + 1, "val_mean_psnr": _mean(scores), "val_psnr": scores}
                best["model"] = state_copy
        bar.write(line)
        if board is not None:
            board.epoch(epoch + 1, model, loss, float(scheduler.get_last_lr()[0]), scores)
        save_checkpoint(
            checkpoint,
            {
                "model_config": model_cfg.to_dict(),
                "train_config": cfg.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state()},
                "history": history,
                "val_history": val_history,
                "best": best,
                "elapsed_s": elapsed,
                "description": description,
            },
        )
    bar.close()
    if board is not None:
        board.close()
    done = dry_run or len(history) >= cfg.epochs
    summary: dict[str, Any] = {
        "epochs_done": len(history),
        "final_loss": history[-1] if history else None,
        "loss_history": [round(x, 6) for x in history],
        "train_seconds": round(elapsed, 1),
        "threads": torch.get_num_threads(),
        "completed": done,
    }
    if not done:
        log.info("stopped after epoch %d; continue with --resume", len(history))
        return summary
    summary["split"] = split.info
    if best is not None:
        model.load_state_dict(best["model"])
        summary["val_history"] = val_history
        summary["selected_epoch"] = best["epoch"]
        summary["val_psnr"] = best["val_psnr"]
        log.info(
            "exporting epoch %d of %d (best mean validation PSNR %.3f dB: %s)",
            best["epoch"],
            len(history),
            best["val_mean_psnr"],
            best["val_psnr"],
        )
    if out is not None:
        export_model(
            model,
            out,
            dataset=cfg.data,
            description=description or default_description(cfg, model_cfg),
            model_id=model_id,
            train_config=cfg.to_dict(),
            seed=cfg.seed,
            extra={"training": summary, "noise": noise_card(cfg)},
            split=split.info,
            autoencoder_only=model_cfg.arch not in CODELESS and cfg.lesson,
        )
        record_code_range(out, train_x)
        calibrate(out, CalibrationData.of(split))  # the card's out-of-distribution score
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description=(
            "Train one denoising model and export it to ONNX. Unset options take the recipe of the "
            "shipped model for --arch/--data (or the lesson's with --lesson); see docs/training.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--arch", choices=ARCHS, default="denoise", help="network to train")
    p.add_argument(
        "--data",
        type=_data_name,
        default="mnist5k",
        help=f"data set: {', '.join(DATASETS)} (mnist and fashion read IDX files), or your own images: "
        "folder:PATH (PNG/JPEG/BMP/TIFF/WebP files, any sub-folders; train/ and test/ are the splits "
        "when present), npy:PATH or npz:PATH (N×H×W, uint8 or float in [0, 1]; npz: 'train'/'test')",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="own images: skip files that are not usable images (and say how many) instead of failing",
    )
    p.add_argument(
        "--invert",
        choices=("auto", "yes", "no"),
        help="own images: dark on light? auto: when most images have a bright border",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="folder with the four IDX files (mnist: required; fashion: "
        "defaults to /usr/share/datasets/fashion-mnist)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="model directory to export to when training completes, e.g. models/mnist-denoise",
    )
    p.add_argument("--id", dest="model_id", help="model id for the card (default: <dataset>-<arch>)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint file, written after every epoch (default: runs/<id>/checkpoint.pt)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from --checkpoint (same flags as the first run)"
    )
    p.add_argument(
        "--lesson",
        action="store_true",
        help="the reference lesson's exact network and recipe "
        "(Glorot init, Adam 1e-3, batch 200, BCE, noise 0.5 only, constant LR)",
    )
    p.add_argument("--epochs", type=int, help="passes over the training images")
    p.add_argument("--batch-size", type=int, help="images per optimizer step")
    p.add_argument("--lr", type=float, help="peak Adam learning rate")
    p.add_argument("--weight-decay", type=float, help="Adam L2 weight decay")
    p.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        help="learning-rate schedule (cosine: warm-up, then decay to 0)",
    )
    p.add_argument(
        "--loss", choices=LOSSES, help="bce: BCE-with-logits; mse; psnr: minus the mean per-image PSNR"
    )
    p.add_argument("--ssim-weight", type=float, help="add this times (1 - SSIM) to the loss (0: off)")
    p.add_argument(
        "--noise",
        choices=noise_models.NOISES,
        help="noise to train for: gaussian (level s = std), salt-pepper (p = fraction of pixels), "
        "poisson (peak = photons at white; lower is noisier), speckle (s = multiplicative std), "
        "mixed (one of the four per image, each over its default range); see docs/training.md",
    )
    p.add_argument(
        "--noise-min",
        type=float,
        help="lowest noise level drawn for training (level ~ U[min, max] per image; default: the "
        "noise's own range: gaussian 0-0.6, salt-pepper 0-0.3, poisson 2-100, speckle 0-1)",
    )
    p.add_argument("--noise-max", type=float, help="highest noise level drawn for training")
    p.add_argument(
        "--low-noise-fraction",
        type=float,
        help="fraction of images whose s is drawn from U[noise-min, low-noise-max] instead",
    )
    p.add_argument("--low-noise-max", type=float, help="upper end of the light-noise range")
    p.add_argument(
        "--shift", type=int, help="random translation of training images by up to this many pixels (0: off)"
    )
    p.add_argument("--train-limit", type=int, help="train on the first N training images only")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, data order, noise and augmentation")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--stop-after", type=int, metavar="EPOCH", help="stop after this epoch as if interrupted (resumable)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="one batch of everything (train step, checkpoint, "
        "export to a temporary folder unless --out is given), for smoke tests",
    )
    p.add_argument("--lowres-width", type=int, help="s2d: channels of the 14x14 convs")
    p.add_argument("--lowres-convs", type=int, help="s2d: number of 14x14 convs")
    p.add_argument("--fullres-width", type=int, help="s2d: channels of the 28x28 path and output convs")
    p.add_argument("--description", help="one sentence for the model card")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (per-epoch lines are still logged)"
    )
    p.add_argument(
        "--tensorboard",
        type=Path,
        metavar="DIR",
        help="log losses, validation PSNR and sample denoisings to TensorBoard (needs tensorboard)",
    )
    return p


def _data_name(value: str) -> str:
    if value in DATASETS or is_source(value):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r}: choose {', '.join(DATASETS)}, or folder:PATH, npz:PATH, npy:PATH for your own images"
    )


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, ModelConfig]:
    """The arch/data defaults, overridden by every option given on the command line."""
    cfg = default_config(args.arch, args.data, args.lesson)
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if f.name not in ("arch", "data", "lesson") and getattr(args, f.name, None) is not None
    }
    if args.noise not in (None, "gaussian"):
        if args.lesson:
            raise SystemExit("the lesson trains on gaussian noise only; drop --lesson or --noise")
        if args.noise == "mixed" and (args.noise_min is not None or args.noise_max is not None):
            raise SystemExit("--noise mixed uses each kind's default range; drop --noise-min/--noise-max")
        low, high = noise_models.SPECS[noise_models.kinds_of(args.noise)[0]].default_range
        overrides = {"noise_min": low, "noise_max": high, **overrides}
    cfg = replace(cfg, **overrides)
    try:
        noise_models.check_range(cfg.noise, cfg.noise_min, cfg.noise_max)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not is_source(cfg.data) and (cfg.skip_bad or args.invert is not None):
        raise SystemExit("--skip-bad and --invert apply to folder:, npz: and npy: data only")
    if cfg.noise != "gaussian":
        if cfg.low_noise_fraction:
            raise SystemExit("--low-noise-fraction applies to --noise gaussian only")
    elif not 0 <= cfg.low_noise_fraction <= 1 or cfg.low_noise_max < cfg.noise_min:
        raise SystemExit("--low-noise-fraction must be in [0, 1] and --low-noise-max >= --noise-min")
    if args.lesson and args.arch in CODELESS:
        raise SystemExit(f"the lesson has no {args.arch}; drop --lesson")
    model_cfg = preset(args.arch, lesson=args.lesson)
    arch_overrides = {
        name: getattr(args, name)
        for name in ("lowres_width", "lowres_convs", "fullres_width")
        if getattr(args, name, None) is not None
    }
    if arch_overrides and args.arch != "s2d":
        raise SystemExit("--lowres-width, --lowres-convs and --fullres-width apply to --arch s2d only")
    return cfg, replace(model_cfg, **arch_overrides)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxscript", "onnx_ir"):  # the exporter's optimizer logs every pass at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    cfg, model_cfg = config_from_args(args)
    if args.model_id:
        model_id = args.model_id
    elif is_source(cfg.data):
        # The service looks a model up by its directory's name: own data takes the --out folder's.
        model_id = args.out.name if args.out else f"{source_id(cfg.data)}-{cfg.arch}"
    else:
        model_id = model_id_for(cfg.data, cfg.arch)
    checkpoint = args.checkpoint or Path("runs") / model_id / "checkpoint.pt"
    log.info("config %s", cfg)
    with tempfile.TemporaryDirectory(prefix="train-dry-run-") as tmp:
        if args.dry_run:
            out = args.out or Path(tmp) / model_id
            checkpoint = args.checkpoint or Path(tmp) / "checkpoint.pt"
        else:
            out = args.out
        try:
            summary = train(
                cfg,
                model_cfg,
                out,
                checkpoint,
                data_dir=args.data_dir,
                resume=args.resume,
                stop_after=args.stop_after,
                dry_run=args.dry_run,
                description=args.description,
                model_id=model_id,
                progress=not args.no_progress,
                tensorboard=args.tensorboard,
            )
        except (DataError, CheckpointError, BoardError, ExportError) as exc:
            raise SystemExit(f"error: {exc}") from exc
    log.info(
        "done: %d epochs, %.1f s, final loss %s",
        summary["epochs_done"],
        summary["train_seconds"],
        summary["final_loss"],
    )


if __name__ == "__main__":
    main()
