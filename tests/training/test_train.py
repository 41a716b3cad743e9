"""training.train: the loop, its recipes, exact resume, and the command line (with --dry-run)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import MNIST_DIR
from training import calibrate, protocol
from training.checkpoint import load_checkpoint, load_model, save_checkpoint
from training.config import TrainConfig, default_config, default_description
from training.data import load_mnist5k
from training.loop import Teacher, corrupt, random_shift, train
from training.models import build_model, preset
from training.protocol import psnr
from training.train import _parser, config_from_args, main

# Small enough to run in seconds: a few dozen images, small batches.
TINY = replace(default_config("denoise", "mnist5k", lesson=False), epochs=3, batch_size=16, train_limit=48)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # thread count changes float summation order; keep runs comparable


def test_dry_run_trains_checkpoints_and_exports(tmp_path: Path) -> None:
    out, ckpt = tmp_path / "model", tmp_path / "ckpt.pt"
    main(["--dry-run", "--arch", "conv", "--out", str(out), "--checkpoint", str(ckpt), "--no-progress"])
    files = {p.name for p in out.iterdir()}
    graphs = {"encoder.onnx", "decoder.onnx", "autoencoder.onnx"}
    assert files - {"scored.onnx"} == {*graphs, "card.json", "ood.npz"}
    card = json.loads((out / "card.json").read_text())
    assert card["id"] == "mnist-conv"
    # The scored graph is written only where it scores check images as numpy does (training.
    # ood_graph.write). After one epoch (validation PSNR about 6 dB) the whitened descriptors span
    # orders of magnitude, and float32 kept no construction of the graph within 0.5 percentile
    # points of numpy (7.7 at best, measured), so this model is scored in numpy; trained models get
    # their graph (tests/training/test_own_images_end_to_end.py, the shipped models).
    assert ("scored.onnx" in files) == ("graph" in card["ood"])
    # Calibrated on the validation split: a digit model's /denoise over the pictures and their
    # distance to pen strokes (its code added nothing there, training.calibrate.PICTURES_ONLY_DATASETS
    # and STROKES_DATASETS), /encode over the code.
    assert card["ood"]["views"]["denoise"]["signals"] == ["pictures", "strokes"]
    assert "strokes: 3000 pen strokes" in card["ood"]["calibrated_on"]["distances_fitted_on"]
    assert card["ood"]["views"]["encode"]["signals"] == ["code"]
    # 500 validation digits, and MNIST digits outside MNIST-5k where `make mnist-data` put them.
    unseen = calibrate.UNSEEN_DIGITS if (MNIST_DIR / "t10k-images-idx3-ubyte").is_file() else 0
    assert card["ood"]["calibrated_on"]["images"] == 500 + unseen
    assert card["config"]["train"]["arch"] == "conv"
    assert card["training"]["epochs_done"] == 1
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 1 and np.isfinite(state["history"][0])


def test_dry_run_without_out_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["--dry-run", "--arch", "dense", "--no-progress"])
    assert list(tmp_path.iterdir()) == []


def test_one_training_step_changes_the_weights(tmp_path: Path) -> None:
    torch.manual_seed(TINY.seed)
    before = build_model(preset("denoise")).state_dict()
    train(TINY, preset("denoise"), None, tmp_path / "c.pt", dry_run=True, progress=False, evaluate=False)
    after = load_checkpoint(tmp_path / "c.pt")["model"]
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert changed, "no weight moved after one optimizer step"


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    whole, parts = tmp_path / "whole.pt", tmp_path / "parts.pt"
    train(TINY, preset("denoise"), None, whole, progress=False, evaluate=False)
    first = train(TINY, preset("denoise"), None, parts, stop_after=1, progress=False, evaluate=False)
    assert first["completed"] is False and load_checkpoint(parts)["epoch"] == 1
    train(TINY, preset("denoise"), None, parts, resume=True, stop_after=2, progress=False, evaluate=False)
    train(TINY, preset("denoise"), None, parts, resume=True, progress=False, evaluate=False)
    a, b = load_checkpoint(whole), load_checkpoint(parts)
    assert a["history"] == b["history"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    train(TINY, preset("denoise"), None, ckpt, stop_after=1, progress=False, evaluate=False)
    with pytest.raises(SystemExit, match="another configuration"):
        train(
            replace(TINY, lr=1e-4), preset("denoise"), None, ckpt, resume=True, progress=False, evaluate=False
        )


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=1)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(
            replace(cfg, seed=seed),
            preset("conv"),
            None,
            tmp_path / f"{name}.pt",
            progress=False,
            evaluate=False,
        )
    a, b, c = (load_checkpoint(tmp_path / f"{n}.pt")["model"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_short_run_learns_to_denoise(tmp_path: Path) -> None:
    # The dense net is cheap: 600 steps on 1,000 images already beat the noisy input at s=0.5 by 3 dB.
    cfg = replace(default_config("dense", "mnist5k", False), epochs=20, batch_size=32, train_limit=1000)
    train(cfg, preset("dense"), None, tmp_path / "d.pt", progress=False, evaluate=False)
    model = load_model(load_checkpoint(tmp_path / "d.pt"))
    clean = load_mnist5k().test_x[:200]
    noisy = protocol.noisy(clean, 0.5, 1234)
    with torch.no_grad():
        out = model(torch.from_numpy(noisy)[:, None]).numpy()[:, 0]
    before, after = float(psnr(clean, noisy).mean()), float(psnr(clean, out).mean())
    assert after > before + 3.0, f"{before:.2f} dB noisy -> {after:.2f} dB denoised"


def test_lesson_flag_selects_the_lessons_recipe() -> None:
    cfg = default_config("denoise", "mnist5k", lesson=True)
    assert (cfg.batch_size, cfg.lr, cfg.loss, cfg.schedule) == (200, 1e-3, "bce", "constant")
    assert cfg.noise_min == cfg.noise_max == 0.5 and cfg.epochs == 100 and cfg.shift == 0
    assert default_config("denoise", "fashion", lesson=True).epochs == 10


def test_shipped_denoisers_train_blind_over_the_protocol_range() -> None:
    for arch in ("denoise", "unet", "s2d"):
        cfg = default_config(arch, "mnist5k", lesson=False)  # type: ignore[arg-type]
        assert (cfg.noise_min, cfg.noise_max) == (0.0, 0.6)


def test_corrupt_draws_one_level_per_image_and_clips() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.full((64, 1, 28, 28), 0.5)
    noisy = corrupt(x, TrainConfig(noise_min=0.0, noise_max=0.6), gen)
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
    spread = (noisy - x).std(dim=(1, 2, 3))
    assert float(spread.min()) < 0.1 < 0.3 < float(spread.max())
    assert torch.equal(corrupt(x, TrainConfig(noise_min=0.0, noise_max=0.0), gen), x)


def test_low_noise_fraction_moves_that_share_of_levels_into_the_light_range() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.full((4000, 1, 28, 28), 0.5)  # mid-grey: clipping never bites below s ~ 0.15
    cfg = TrainConfig(noise_min=0.0, noise_max=0.6, low_noise_fraction=0.5, low_noise_max=0.1)
    spread = (corrupt(x, cfg, gen) - x).std(dim=(1, 2, 3))
    # Uniform on [0, 0.6] puts 1/6 of the levels below 0.1; half from [0, 0.1] adds 1/2 of 5/6 more.
    light = float((spread < 0.1).float().mean())
    assert 0.5 + 0.5 / 6 - 0.04 < light < 0.5 + 0.5 / 6 + 0.04


def test_training_exports_the_epoch_with_the_best_validation_score(tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=3)
    summary = train(cfg, preset("denoise"), None, tmp_path / "c.pt", progress=False)
    history = summary["val_history"]
    assert len(history) == 3 and set(history[0]) == {"0.05", "0.1", "0.3", "0.6"}
    means = [np.mean(list(h.values())) for h in history]
    assert summary["selected_epoch"] == int(np.argmax(means)) + 1
    assert summary["val_psnr"] == history[summary["selected_epoch"] - 1]
    assert summary["split"]["validation"] == 500 and summary["split"]["train"] == 3500


def test_random_shift_translates_without_changing_content() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 28, 28)
    x[:, 0, 10:18, 10:18] = 1.0  # a square well inside the border, so no shift crops it
    shifted = random_shift(x, 2, gen)
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    assert not torch.equal(shifted, x)
    assert torch.equal(random_shift(x, 0, gen), x)


def test_missing_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not found"):
        main(["--dry-run", "--data", "mnist", "--data-dir", str(tmp_path / "nope"), "--no-progress"])


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--arch",
        "--data",
        "--data-dir",
        "--epochs",
        "--seed",
        "--out",
        "--resume",
        "--dry-run",
        "--lesson",
        "--threads",
        "--noise-max",
        "--loss",
        "--checkpoint",
        "--teacher",
        "--teacher-weight",
    ):
        assert flag in text


def test_tensorboard_logs_losses_and_a_grid_of_denoisings(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = tmp_path / "tb"
    main(["--dry-run", "--arch", "s2d", "--noise", "salt-pepper", "--checkpoint", str(tmp_path / "c.pt"),
          "--tensorboard", str(board), "--no-progress"])  # fmt: skip
    events = EventAccumulator(str(board))
    events.Reload()
    assert {"loss/train", "psnr/validation_mean", "psnr/validation/salt-pepper_p=0.1"} <= set(
        events.Tags()["scalars"]
    )
    (image,) = events.Images("samples")
    # Rows: clean, noisy, denoised (one noise kind); 8 validation images of 28 + 2 px of padding.
    assert (image.height, image.width) == (3 * 28, 8 * 30)


def test_tensorboard_missing_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were absent
    with pytest.raises(SystemExit) as info:
        main(["--dry-run", "--arch", "s2d", "--checkpoint", str(tmp_path / "c.pt"),
              "--tensorboard", str(tmp_path / "tb"), "--no-progress"])  # fmt: skip
    assert str(info.value.code).startswith("error: --tensorboard needs the tensorboard package: pip install")


@pytest.mark.parametrize(
    ("noise", "low", "high"),
    [("gaussian", 0.0, 0.6), ("salt-pepper", 0.0, 0.3), ("poisson", 2.0, 100.0), ("speckle", 0.0, 1.0)],
)
def test_each_noise_trains_over_its_own_default_range(noise: str, low: float, high: float) -> None:
    cfg, _ = config_from_args(_parser().parse_args(["--arch", "s2d", "--noise", noise]))
    assert (cfg.noise, cfg.noise_min, cfg.noise_max) == (noise, low, high)
    cfg, _ = config_from_args(
        _parser().parse_args(["--noise", noise, "--noise-min", "0.1", "--noise-max", "0.2"])
    )
    assert (cfg.noise_min, cfg.noise_max) == (0.1, 0.2)


def test_noise_input_is_an_s2d_option_named_in_the_card_sentence() -> None:
    cfg, model_cfg = config_from_args(_parser().parse_args(["--arch", "s2d", "--noise-input"]))
    assert model_cfg.noise_input is True
    assert "given its noise estimate" in default_description(cfg, model_cfg)
    assert config_from_args(_parser().parse_args(["--arch", "s2d"]))[1].noise_input is False
    with pytest.raises(SystemExit, match="apply to --arch s2d only"):
        config_from_args(_parser().parse_args(["--arch", "unet", "--noise-input"]))


def test_lowres_dilations_parse_and_are_checked_before_any_data_is_read() -> None:
    cfg, model_cfg = config_from_args(
        _parser().parse_args(["--arch", "s2d", "--lowres-dilations", "1,2,4,2,1,1"])
    )
    assert model_cfg.lowres_dilations == (1, 2, 4, 2, 1, 1)
    assert "14x14 convs dilated 1, 2, 4, 2, 1, 1 (no code)" in default_description(cfg, model_cfg)
    with pytest.raises(SystemExit, match="one dilation >= 1 per 14x14 conv"):
        config_from_args(_parser().parse_args(["--arch", "s2d", "--lowres-dilations", "1,2"]))
    with pytest.raises(SystemExit):  # argparse: not whole numbers
        _parser().parse_args(["--arch", "s2d", "--lowres-dilations", "1,x"])
    with pytest.raises(SystemExit, match="apply to --arch s2d only"):
        config_from_args(_parser().parse_args(["--arch", "unet", "--lowres-dilations", "1,1"]))


def test_noise_options_that_cannot_work_are_refused() -> None:
    for argv, words in (
        (["--noise", "mixed", "--noise-max", "0.3"], "default range"),
        (["--noise", "poisson", "--noise-min", "0"], "must be > 0"),
        (["--noise", "speckle", "--low-noise-fraction", "0.3"], "gaussian only"),
        (["--lesson", "--noise", "poisson"], "gaussian noise only"),
    ):
        with pytest.raises(SystemExit, match=words):
            config_from_args(_parser().parse_args(argv))


@pytest.mark.parametrize(
    ("arch", "lesson", "extra"),
    [
        *((arch, False, ()) for arch in ("dense", "conv", "denoise", "unet", "s2d")),
        *((a, True, ()) for a in ("dense", "conv", "denoise")),
        ("s2d", False, ("--noise-input",)),
    ],
)
def test_dry_run_of_every_arch_exports_a_model_the_service_loads(
    tmp_path: Path, arch: str, lesson: bool, extra: tuple[str, ...]
) -> None:
    from service.registry import load_model as serve_model

    out = tmp_path / f"mnist-{arch}"
    argv = [
        "--dry-run",
        "--arch",
        arch,
        "--out",
        str(out),
        "--checkpoint",
        str(tmp_path / "c.pt"),
        "--no-progress",
    ]
    main([*argv, "--lesson"] if lesson else [*argv, *extra])
    model = serve_model(out, "cpu")
    # The lesson ships its autoencoder alone: a codeless denoiser, whatever its network's code.
    assert model.has_code == (arch in ("dense", "conv", "denoise") and not lesson)
    assert model.card["id"] == out.name


def test_the_card_sentence_says_when_an_s2d_has_a_7x7_level() -> None:
    cfg = default_config("s2d", "fashion", lesson=False)
    plain = default_description(cfg, preset("s2d"))
    deep = default_description(cfg, replace(preset("s2d"), deep_width=32, lowres_convs=4))
    assert "7x7 level" not in plain and "thin full-resolution path and a 7x7 level (no code)" in deep


def test_a_teacher_blends_its_output_on_the_noisy_batch_into_the_target() -> None:
    import onnxruntime as ort

    teacher = Teacher(Path("models/mnist-unet"), 0.25, "mnist5k")
    clean = torch.from_numpy(load_mnist5k().train_x[:8])[:, None]
    noisy = corrupt(clean, default_config("s2d", "mnist5k", lesson=False), torch.Generator().manual_seed(3))
    session = ort.InferenceSession("models/mnist-unet/autoencoder.onnx", providers=["CPUExecutionProvider"])
    taught = session.run(None, {"image": noisy.numpy()})[0]
    expected = 0.75 * clean.numpy() + 0.25 * taught
    np.testing.assert_allclose(teacher.target(clean, noisy).numpy(), expected, atol=1e-5)
    # The teacher denoises: its blend is nearer the clean images than the noisy input is.
    assert psnr(clean.numpy(), expected).mean() > psnr(clean.numpy(), noisy.numpy()).mean() + 3


def test_distilling_trains_other_weights_and_the_card_says_from_what(tmp_path: Path) -> None:
    cfg = replace(TINY, arch="s2d", epochs=1, loss="psnr")
    plain, taught = tmp_path / "plain.pt", tmp_path / "taught.pt"
    train(cfg, preset("s2d"), None, plain, progress=False, evaluate=False)
    taught_cfg = replace(cfg, teacher="models/mnist-unet")
    train(taught_cfg, preset("s2d"), None, taught, progress=False, evaluate=False)
    a, b = load_checkpoint(plain)["model"], load_checkpoint(taught)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("weight"))
    out = tmp_path / "model"
    main(["--dry-run", "--arch", "s2d", "--teacher", "models/mnist-unet", "--out", str(out), "--no-progress"])
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["train"]["teacher"] == "models/mnist-unet"
    assert card["config"]["train"]["teacher_weight"] == 0.5
    assert "distilled from mnist-unet" in card["description"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--teacher", "models/fashion-unet"], "a model of 'fashion', not of 'mnist5k'"),
        (["--teacher", "models/no-such-model"], "card.json: missing"),
        (["--teacher", "models/mnist-unet", "--teacher-weight", "0"], r"must be in \(0, 1\]"),
        (["--teacher-weight", "0.5"], "--teacher-weight needs --teacher"),
    ],
)
def test_a_teacher_that_cannot_teach_is_a_one_line_error(flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        main(["--dry-run", "--arch", "s2d", "--no-progress", *flags])


def test_a_checkpoint_from_before_a_recipe_field_existed_still_resumes(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    train(TINY, preset("denoise"), None, ckpt, stop_after=1, progress=False, evaluate=False)
    state = load_checkpoint(ckpt)
    del state["train_config"]["teacher"], state["train_config"]["teacher_weight"]
    save_checkpoint(ckpt, state)
    summary = train(TINY, preset("denoise"), None, ckpt, resume=True, progress=False, evaluate=False)
    assert summary["epochs_done"] == TINY.epochs
