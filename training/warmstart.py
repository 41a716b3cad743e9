"""Warm starts: a run that begins from a shipped model's weights instead of a fresh initialisation.

    python -m training.warmstart --init models/fashion-s2d/autoencoder.onnx \\
        --arch s2d --data fashion --epochs 12 --lr 1e-3 --threads 1 --id fashion-s2d
    python -m training.train --arch s2d --data fashion --epochs 12 --lr 1e-3 --threads 1 \\
        --id fashion-s2d --out models/fashion-s2d --resume

The first command takes the same options as `training.train` (plus `--init`) and writes the
checkpoint that `training.train` would have written before its first epoch, with the weights of
the given ONNX graph in place of the fresh ones; the second trains from there with `--resume`, so
the run keeps everything `training.train` has: its schedule, validation after every epoch, the
best epoch's export and exact resumption.

Exported graphs carry every BatchNorm folded into the convolution before it (weight and bias).
Each folded convolution goes back into the convolution, and its BatchNorm is set to pass the
convolution's output through unchanged: its running statistics are the output's per-channel mean
and variance over a batch of noisy training images, its scale and shift undo them (and add the
folded bias). In eval mode the rebuilt network computes what the graph computes (to float rounding); in
training mode, where BatchNorm uses each batch's statistics, it starts close to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, nn

from training.checkpoint import save_checkpoint
from training.config import TrainConfig
from training.data import load_dataset
from training.export import model_id_for
from training.loop import corrupt, make_scheduler
from training.models import Model, ModelConfig, build_model
from training.train import _parser, config_from_args

log = logging.getLogger("training.warmstart")

CALIBRATION_IMAGES = 2048


class WarmStartError(Exception):
    """The graph's weights do not fit the network the options describe."""


def graph_weights(path: Path) -> dict[str, np.ndarray]:
    """The graph's initializers by parameter name (the exporter's `module.` prefix removed)."""
    model = onnx.load(str(path))
    return {t.name.removeprefix("module."): numpy_helper.to_array(t) for t in model.graph.initializer}


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d | None]]:
    """Every named convolution with the BatchNorm that directly follows it in its Sequential."""
    pairs: list[tuple[str, nn.Conv2d, nn.BatchNorm2d | None]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for i, (child_name, child) in enumerate(children):
                if isinstance(child, nn.Conv2d):
                    after = children[i + 1][1] if i + 1 < len(children) else None
                    bn = after if isinstance(after, nn.BatchNorm2d) else None
                    pairs.append((f"{name}.{child_name}" if name else child_name, child, bn))
    return pairs


def _running(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    if bn.running_mean is None or bn.running_var is None:
        raise WarmStartError("BatchNorm without running statistics")
    return bn.running_mean, bn.running_var


def load_graph_weights(model: Model, weights: dict[str, np.ndarray], calibration: Tensor) -> None:
    """Put the graph's (folded) weights into `model` and set its BatchNorms to pass them through."""
    pairs = _conv_bn_pairs(model)
    seen = {f"{name}.weight" for name, _, _ in pairs}
    seen |= {f"{name}.weight_bias" for name, _, bn in pairs if bn is not None}
    seen |= {f"{name}.bias" for name, conv, _ in pairs if conv.bias is not None}
    missing = sorted(k for k in seen if k not in weights)
    if missing:
        raise WarmStartError(f"the graph lacks {', '.join(missing)}: is it the same architecture?")
    folded_bias: dict[nn.BatchNorm2d, Tensor] = {}
    with torch.no_grad():
        for name, conv, bn in pairs:
            w = torch.from_numpy(weights[f"{name}.weight"].copy())
            if w.shape != conv.weight.shape:
                raise WarmStartError(
                    f"{name}.weight: graph {tuple(w.shape)}, network {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(w)
            if conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(weights[f"{name}.bias"].copy()))
            if bn is not None:
                folded_bias[bn] = torch.from_numpy(weights[f"{name}.weight_bias"].copy())
                mean, var = _running(bn)
                mean.zero_()
                var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(folded_bias[bn])
    # With running mean 0 and variance 1 - eps each BatchNorm adds its folded bias and nothing
    # else, so the eval-mode network is the graph already; one pass measures the statistics of
    # every convolution's output, which then become the running statistics, undone by the affine.
    stats: dict[nn.BatchNorm2d, tuple[Tensor, Tensor]] = {}

    def record(bn: nn.BatchNorm2d, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        x = inputs[0]
        stats[bn] = (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False))

    hooks = [bn.register_forward_hook(record) for bn in folded_bias]
    model.eval()
    with torch.no_grad():
        model(calibration)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for bn, (mean, var) in stats.items():
            running_mean, running_var = _running(bn)
            running_mean.copy_(mean)
            running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.copy_(mean + folded_bias[bn])


def provenance(init: Path, card: dict[str, Any] | None) -> dict[str, Any]:
    """What the card says about the graph a run started from: its sha256, and the model id and
    epochs of ``card``, the card beside it, when there is one (no path: cards do not name this
    machine's folders)."""
    entry: dict[str, Any] = {"sha256": hashlib.sha256(init.read_bytes()).hexdigest()}
    if card is not None:
        entry["model_id"] = card.get("id")
        entry["epochs"] = (card.get("training") or {}).get("epochs_done")
    return entry


def _card_beside(init: Path) -> dict[str, Any] | None:
    card_file = init.parent / "card.json"
    return json.loads(card_file.read_text()) if card_file.is_file() else None


def check_same_network(card: dict[str, Any] | None, model_cfg: ModelConfig) -> None:
    """Refuse a graph whose ``card`` describes another network than the options do. Same-shaped
    weights (a dilation, the noise input's buffer) would load, and train a different network."""
    stored = ((card or {}).get("config") or {}).get("model")
    if not stored:
        return
    theirs = ModelConfig.from_dict(stored)
    differ = [f.name for f in fields(ModelConfig) if getattr(theirs, f.name) != getattr(model_cfg, f.name)]
    if differ:
        wanted = ", ".join(f"{name}={getattr(theirs, name)!r}" for name in differ)
        raise WarmStartError(f"its card describes another network ({wanted}); give the same options")


def warm_checkpoint(
    cfg: TrainConfig, model_cfg: Any, init: Path, checkpoint: Path, data_dir: Path | None = None
) -> dict[str, Any]:
    """Write the epoch-0 checkpoint `training.train --resume` continues from; returns its state."""
    split = load_dataset(cfg.data, data_dir, skip_bad=cfg.skip_bad, invert=cfg.invert)
    train_x = split.train_x if cfg.train_limit is None else split.train_x[: cfg.train_limit]
    steps_per_epoch = -(-len(train_x) // cfg.batch_size)
    # The same order of draws as training.train: the seed, the network, the generator.
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub omits it
    gen = torch.Generator().manual_seed(cfg.seed)
    # The calibration batch draws from its own generator, so the run's stream is untouched.
    cal_gen = torch.Generator().manual_seed(cfg.seed + 1)
    pick = torch.randperm(len(train_x), generator=cal_gen)[:CALIBRATION_IMAGES]
    clean = torch.from_numpy(np.ascontiguousarray(train_x))[:, None][pick]
    card = _card_beside(init)
    check_same_network(card, model_cfg)
    load_graph_weights(model, graph_weights(init), corrupt(clean, cfg, cal_gen))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    state = {
        "model_config": model_cfg.to_dict(),
        "train_config": cfg.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": 0,
        "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state()},
        "history": [],
        "val_history": [],
        "best": None,
        "elapsed_s": 0.0,
        "description": None,
        "warm_start": provenance(init, card),
    }
    save_checkpoint(checkpoint, state)
    return state


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    parser.prog = "python -m training.warmstart"
    parser.description = (
        "Write an epoch-0 checkpoint from an exported graph's weights; continue it with "
        "`python -m training.train <the same options> --resume`."
    )
    parser.add_argument(
        "--init", type=Path, required=True, help="ONNX graph to start from (autoencoder.onnx)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    cfg, model_cfg = config_from_args(args)
    model_id = args.model_id or model_id_for(cfg.data, cfg.arch)
    checkpoint = args.checkpoint or Path("runs") / model_id / "checkpoint.pt"
    if checkpoint.exists():
        sys.exit(f"error: {checkpoint} exists; a warm start would overwrite a run")
    try:
        warm_checkpoint(cfg, model_cfg, args.init, checkpoint, args.data_dir)
    except WarmStartError as exc:
        sys.exit(f"error: {args.init}: {exc}")
    log.info(
        "wrote %s from %s; continue with training.train and the same options plus --resume",
        checkpoint,
        args.init,
    )


if __name__ == "__main__":
    main()
