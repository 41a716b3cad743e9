"""TensorBoard logging for ``--tensorboard DIR``: losses, validation PSNR and a grid of denoisings.

``tensorboard`` is an optional dependency of the ``train`` extra; it is imported only when asked
for, and its absence is a one-line error before any training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import noise as noise_models
from training.models import Model
from training.protocol import VAL_NOISE_SEED

SAMPLES = 8


class BoardError(Exception):
    """TensorBoard logging was asked for and cannot work (the package is missing)."""


def _middle_level(kind: noise_models.Kind) -> float:
    levels = noise_models.SPECS[kind].val_levels
    return levels[len(levels) // 2]


class Board:
    """One SummaryWriter for a run; :meth:`epoch` logs after every epoch."""

    def __init__(self, log_dir: Path, val_x: np.ndarray, noise: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise BoardError(
                "--tensorboard needs the tensorboard package: pip install 'ae-denoise[train]' "
                "or pip install 'tensorboard>=2.16,<3'"
            ) from None
        self.writer: Any = SummaryWriter(log_dir=str(log_dir))
        clean = val_x[:SAMPLES]
        # Fixed inputs (validation images, validation noise seed), so the grids compare across epochs.
        self.clean = clean
        self.noisy = [
            noise_models.noisy_numpy(kind, clean, _middle_level(kind), VAL_NOISE_SEED)
            for kind in noise_models.kinds_of(noise)
        ]

    def epoch(
        self, step: int, model: Model, loss: float, lr: float, val_psnr: dict[str, float] | None
    ) -> None:
        self.writer.add_scalar("loss/train", loss, step)
        self.writer.add_scalar("lr", lr, step)
        if val_psnr:
            self.writer.add_scalar("psnr/validation_mean", float(np.mean(list(val_psnr.values()))), step)
            for key, value in val_psnr.items():
                self.writer.add_scalar(f"psnr/validation/{key.replace(' ', '_')}", value, step)
        self.writer.add_image("samples", self.grid(model), step, dataformats="HW")
        self.writer.flush()

    def grid(self, model: Model) -> np.ndarray:
        """Rows: clean, then noisy and denoised for each noise kind; one column per image."""
        was_training = model.training
        model.eval()
        rows = [self.clean]
        with torch.no_grad():
            for noisy in self.noisy:
                rows += [noisy, model(torch.from_numpy(noisy)[:, None]).numpy()[:, 0]]
        model.train(was_training)
        pad = np.ones((len(self.clean), 28, 2), np.float32) * 0.5
        lines = [np.concatenate(list(np.concatenate([r, pad], axis=2)), axis=1) for r in rows]
        return np.clip(np.concatenate(lines, axis=0), 0, 1)

    def close(self) -> None:
        self.writer.close()
