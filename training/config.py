"""What a training run is: its recipe (:class:`TrainConfig`), the shipped models' defaults, the card's words.

The network itself is :class:`training.models.ModelConfig`; both are stored in the checkpoint and
the card, so every run can be rebuilt. `default_config` is the recipe each shipped model was
trained with (docs/training.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from training import noise as noise_models
from training.models import Arch, ModelConfig

Loss = Literal["bce", "mse", "psnr"]
LOSSES: tuple[Loss, ...] = ("bce", "mse", "psnr")


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
    # Distillation: an exported denoiser of the same data (its model directory) whose output on
    # each noisy batch is blended into the target, ``(1 - teacher_weight) * clean + teacher_weight
    # * teacher``; None trains on the clean images alone.
    teacher: str | None = None
    teacher_weight: float = 0.5

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


def default_description(
    cfg: TrainConfig, model_cfg: ModelConfig, warm_start: dict[str, Any] | None = None
) -> str:
    """One sentence for the card: what the network is and what it was trained on (and, for a
    warm start, the run it continued: ``training.warmstart.provenance``)."""
    kind = {
        "dense": "Dense autoencoder (784-32-784)",
        "conv": "Convolutional autoencoder",
        "denoise": "Convolutional denoising autoencoder",
        "unet": "U-Net denoiser predicting the residual noise (no code)",
        "s2d": "Space-to-depth residual denoiser with a thin full-resolution path (no code)",
    }[model_cfg.arch]
    if model_cfg.arch == "s2d" and not model_cfg.fullres_width:
        kind = "Space-to-depth residual denoiser working at 14x14 only (no code)"
    if model_cfg.arch == "s2d" and model_cfg.deep_width:
        kind = kind.replace(" (no code)", " and a 7x7 level (no code)")
    if model_cfg.arch == "s2d" and any(d > 1 for d in model_cfg.lowres_dilations):
        dilations = ", ".join(map(str, model_cfg.lowres_dilations))
        kind = kind.replace(" (no code)", f", its 14x14 convs dilated {dilations} (no code)")
    if model_cfg.arch == "s2d" and model_cfg.noise_input:
        kind = kind.replace(" (no code)", ", given its noise estimate (no code)")
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
    taught = f", distilled from {Path(cfg.teacher).name}" if cfg.teacher else ""
    continued = ""
    if warm_start:
        before = warm_start.get("epochs")
        run = f"a {before}-epoch run" if before else "an exported model"
        named = f" ({warm_start['model_id']})" if warm_start.get("model_id") else ""
        continued = f", continuing {run}{named} from its weights"
    return f"{kind}{code}, trained on {cfg.data} with {noise}{taught}, {cfg.epochs} epochs{continued}."


def noise_card(cfg: TrainConfig) -> dict[str, Any]:
    """The card's ``noise``: what the model was made for (GET /models shows it)."""
    return noise_models.card_entry(
        cfg.noise, cfg.noise_min, cfg.noise_max, cfg.low_noise_fraction, cfg.low_noise_max
    )
