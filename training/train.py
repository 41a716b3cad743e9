"""`python -m training.train`: train one model, checkpoint every epoch, export it to ONNX.

    python -m training.train --arch denoise --data mnist5k --epochs 60 --seed 0 --out models/mnist-denoise

The command line only: unset options take the recipe of the shipped model for --arch/--data
(training/config.py), the loop is training/loop.py. `--lesson` reproduces the reference lesson
exactly (its network, Glorot init, Adam 1e-3, batch 200, BCE-with-logits, a single noise level 0.5,
constant LR); `--resume` continues an interrupted run to the same weights.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import torch

from training import noise as noise_models
from training.board import BoardError
from training.checkpoint import CheckpointError
from training.config import LOSSES, TrainConfig, default_config
from training.data import DATASETS
from training.export import ExportError, model_id_for
from training.loop import TeacherError, train
from training.models import ARCHS, CODELESS, ModelConfig, build_model, preset
from training.sources import is_source, source_id
from training.splits import DataError

log = logging.getLogger("training.train")


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
    p.add_argument(
        "--fullres-width",
        type=int,
        help="s2d: channels of the 28x28 path and output convs (0: none; the 14x14 convs predict the noise)",
    )
    p.add_argument("--deep-width", type=int, help="s2d: channels of a 7x7 level (0: none, the default)")
    p.add_argument("--deep-convs", type=int, help="s2d: number of 7x7 convs (with --deep-width)")
    p.add_argument(
        "--lowres-dilations",
        type=_dilations,
        metavar="D,D,...",
        help="s2d: the dilation of each 14x14 conv, one per --lowres-convs (e.g. 1,2,4,2,1,1)",
    )
    p.add_argument(
        "--noise-input",
        action="store_true",
        default=None,
        help="s2d: feed the image's estimated noise level (computed in the graph) to the 14x14 convs",
    )
    p.add_argument(
        "--teacher",
        metavar="MODEL_DIR",
        help="distil from this exported denoiser of the same data: the target is "
        "(1 - w) * clean + w * its output on the noisy batch (e.g. models/mnist-unet)",
    )
    p.add_argument(
        "--teacher-weight", type=float, metavar="W", help="w of --teacher, in (0, 1] (default: 0.5)"
    )
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


def _dilations(value: str) -> tuple[int, ...]:
    try:
        dilations = tuple(int(v) for v in value.split(","))
    except ValueError:
        dilations = ()
    if not dilations or min(dilations) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give whole numbers >= 1 separated by commas")
    return dilations


def _data_name(value: str) -> str:
    if value in DATASETS or is_source(value):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r}: choose {', '.join(DATASETS)}, or folder:PATH, npz:PATH, npy:PATH for your own images"
    )


# The ModelConfig fields an s2d run may override from the command line.
S2D_OPTIONS = (
    "lowres_width",
    "lowres_convs",
    "fullres_width",
    "deep_width",
    "deep_convs",
    "noise_input",
    "lowres_dilations",
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
    elif not 0 <= cfg.low_noise_fraction <= 1 or (
        cfg.low_noise_fraction and cfg.low_noise_max < cfg.noise_min
    ):
        raise SystemExit("--low-noise-fraction must be in [0, 1] and --low-noise-max >= --noise-min")
    if args.teacher_weight is not None and cfg.teacher is None:
        raise SystemExit("--teacher-weight needs --teacher")
    if args.lesson and args.arch in CODELESS:
        raise SystemExit(f"the lesson has no {args.arch}; drop --lesson")
    model_cfg = preset(args.arch, lesson=args.lesson)
    arch_overrides = {
        name: getattr(args, name) for name in S2D_OPTIONS if getattr(args, name, None) is not None
    }
    if arch_overrides and args.arch != "s2d":
        raise SystemExit(
            "--lowres-width, --lowres-convs, --fullres-width, --deep-width, --deep-convs, "
            "--lowres-dilations and --noise-input apply to --arch s2d only"
        )
    model_cfg = replace(model_cfg, **arch_overrides)
    if model_cfg.arch == "s2d":
        try:
            build_model(model_cfg)  # the network's own checks, before any data is read
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    return cfg, model_cfg


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
        except (DataError, CheckpointError, BoardError, ExportError, TeacherError) as exc:
            raise SystemExit(f"error: {exc}") from exc
    log.info(
        "done: %d epochs, %.1f s, final loss %s",
        summary["epochs_done"],
        summary["train_seconds"],
        summary["final_loss"],
    )


if __name__ == "__main__":
    main()
