"""Training checkpoints: one file holding everything needed to rebuild, resume or export a run.

Like nanoGPT's, a checkpoint stores the model config next to the weights, so `load_model` never
needs to be told the architecture. For an exact resume it also holds the optimizer, the LR
schedule, the epoch and the state of every random generator the loop draws from.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from training.models import Model, ModelConfig, build_model

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint file is missing or was not written by this package."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format": FORMAT_VERSION, **state}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (weights only: no pickled code runs)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "model_config" not in state:
        raise CheckpointError(f"{path}: not a checkpoint of this package (format {FORMAT_VERSION})")
    return state


def load_model(state: dict[str, Any]) -> Model:
    """Rebuild the network stored in a loaded checkpoint, in eval mode."""
    model = build_model(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()
