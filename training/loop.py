"""The training loop: losses, the LR schedule, one epoch, the per-epoch validation check, a whole run.

`train` trains (or resumes) a run, checkpointing after every epoch, keeps the epoch with the best
mean validation PSNR and exports it (training/export.py). Denoisers train *blind*: every image of
every batch gets its own noise level, drawn fresh each time it is seen (training/noise.py), so one
model serves every level. Resuming restores the model, the optimizer, the LR schedule, the epoch
and the random generators, so an interrupted run finishes with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from training import noise as noise_models
from training import protocol
from training.board import Board
from training.calibrate import Data as CalibrationData
from training.calibrate import calibrate
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import Loss, TrainConfig, default_description, noise_card
from training.data import load_dataset
from training.export import export_model, record_code_range
from training.models import CODELESS, Model, ModelConfig, build_model

log = logging.getLogger("training.train")


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
    """The run's noise with a level drawn per image (training/noise.py)."""
    return noise_models.corrupt(
        x, cfg.noise, cfg.noise_min, cfg.noise_max, gen, cfg.low_noise_fraction, cfg.low_noise_max
    )


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


class TeacherError(ValueError):
    """``--teacher`` names no usable model of the run's data."""


class Teacher:
    """An exported denoiser run by onnxruntime on each noisy batch: the distillation target.

    ``target(clean, noisy)`` is ``(1 - weight) * clean + weight * teacher(noisy)``: with the
    squared-error losses (``mse``, ``psnr``) this is the clean-image loss plus ``weight`` times a
    pull toward the teacher's answer. The teacher must be a model of the same data set.
    """

    def __init__(self, model_dir: Path, weight: float, data: str) -> None:
        import onnxruntime as ort

        from contract.card import CardError, graph_path, read_card

        if not 0.0 < weight <= 1.0:
            raise TeacherError(f"--teacher-weight must be in (0, 1], not {weight}")
        try:
            card = read_card(model_dir, served=False)
            graph = graph_path(model_dir, card, "autoencoder")
        except CardError as exc:
            raise TeacherError(f"--teacher {model_dir}: {exc}") from None
        if card.get("dataset") != data:
            raise TeacherError(f"--teacher {model_dir}: a model of {card.get('dataset')!r}, not of {data!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the student's torch threads keep the cores
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.weight = weight

    def target(self, clean: Tensor, noisy: Tensor) -> Tensor:
        x = noisy.contiguous().numpy()  # NCHW float32, what the graph takes
        taught = torch.from_numpy(self.session.run(None, {self.input: x})[0])
        return (1.0 - self.weight) * clean + self.weight * taught


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
    teacher: Teacher | None = None,
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
        target = clean if teacher is None else teacher.target(clean, noisy)
        loss = reconstruction_loss(model, noisy, target, cfg.loss, cfg.ssim_weight)
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
        return [(str(s), "gaussian", s) for s in protocol.VAL_LEVELS]
    return [
        (f"{kind} {noise_models.SPECS[kind].level_name}={level:g}", kind, level)
        for kind in noise_models.kinds_of(noise)
        for level in noise_models.SPECS[kind].val_levels
    ]


def validation_psnr(
    model: Model, val_x: np.ndarray, limit: int = 2000, noise: str = "gaussian"
) -> dict[str, float]:
    """Mean validation PSNR per level, noise from a fresh default_rng(VAL_NOISE_SEED) per level.

    Gaussian runs check VAL_LEVELS; other noises a few levels of each kind they train for.
    Validation only: the test split and its noise seed are the final evaluation's alone.
    """
    model.eval()
    clean = val_x[:limit]
    result: dict[str, float] = {}
    with torch.no_grad():
        for key, kind, level in _val_inputs(noise):
            noisy = protocol.noisy(clean, level, protocol.VAL_NOISE_SEED, kind)
            out = model(torch.from_numpy(noisy)[:, None]).numpy()[:, 0]
            result[key] = round(float(protocol.psnr(clean, out).mean()), 3)
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
    teacher = None if cfg.teacher is None else Teacher(Path(cfg.teacher), cfg.teacher_weight, cfg.data)
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
    warm_start: dict[str, Any] | None = None  # training.warmstart's record of the starting graph
    if resume:
        state = load_checkpoint(checkpoint)
        # A checkpoint written before a field existed holds that field's default.
        saved = {**asdict(TrainConfig()), **state["train_config"]}
        if saved != cfg.to_dict() or state["model_config"] != model_cfg.to_dict():
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
        # (Warm starts before the card recorded them stored the starting graph's local path: dropped.)
        warm_start = state.get("warm_start") if isinstance(state.get("warm_start"), dict) else None
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
        loss = train_epoch(
            model, images, cfg, optimizer, scheduler, gen, bar, 1 if dry_run else None, teacher
        )
        elapsed += time.perf_counter() - t0
        history.append(loss)
        line = f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.5f} lr {scheduler.get_last_lr()[0]:.2e}"
        scores = None
        if evaluate:
            scores = validation_psnr(model, split.val_x, limit=val_limit, noise=cfg.noise)
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
                "warm_start": warm_start,
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
    if warm_start:
        summary["warm_start"] = warm_start
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
            description=description or default_description(cfg, model_cfg, warm_start),
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
