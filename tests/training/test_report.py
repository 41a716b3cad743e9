"""Issue 4's targets as checked on report rows, and the tables."""

from __future__ import annotations

from tests.training.conftest import constant, rows_for
from training.report import check_targets, table

CLASSICAL = ("noisy", "gaussian", "median", "nl_means", "bm3d")


def _mnist_rows(model_psnr: float, model_ssim: float, lesson_psnr: float = 18.0) -> dict:
    values = {
        "mnist-denoise": (constant(model_psnr), constant(model_ssim)),
        "lesson": (constant(lesson_psnr), constant(0.8)),
    }
    values.update({key: (constant(19.0), constant(0.7)) for key in CLASSICAL})
    return rows_for(values)


def test_a_model_clearing_every_bar_meets_every_target() -> None:
    targets = check_targets("mnist-denoise", _mnist_rows(20.0, 0.9))
    assert [t.met for t in targets] == [True, True, True, True]


def test_each_mnist_denoise_target_can_fail_on_its_own() -> None:
    assert [t.met for t in check_targets("mnist-denoise", _mnist_rows(20.0, 0.9, lesson_psnr=19.0))] == [
        False, True, True, True,
    ]  # fmt: skip
    assert [t.met for t in check_targets("mnist-denoise", _mnist_rows(20.0, 0.6))] == [
        True,
        False,
        True,
        True,
    ]
    assert [t.met for t in check_targets("mnist-denoise", _mnist_rows(19.4, 0.9, 17.0))] == [
        True, True, True, False,
    ]  # fmt: skip


def test_psnr_below_classical_only_at_low_noise_is_allowed_for_mnist_denoise() -> None:
    rows = _mnist_rows(20.0, 0.9)
    rows["nl_means"]["psnr"][:2] = [31.0, 25.0]  # s = 0.05 and 0.1: not required
    psnr_target = check_targets("mnist-denoise", rows)[2]
    assert psnr_target.met and "s=0.2" in psnr_target.detail
    rows["nl_means"]["psnr"][2] = 20.5
    assert not check_targets("mnist-denoise", rows)[2].met


def test_bm3d_is_compared_on_its_own_subset() -> None:
    rows = _mnist_rows(20.0, 0.9)
    rows["bm3d"]["test_images"] = 3
    rows["bm3d"]["psnr"] = constant(19.5)
    rows["mnist-denoise"]["subset_psnr"] = constant(19.4)  # the same 3 images: below BM3D
    target = check_targets("mnist-denoise", rows)[2]
    assert not target.met and "bm3d" in target.detail


def test_unet_must_beat_the_autoencoders_too() -> None:
    values = {
        "mnist-unet": (constant(25.0), constant(0.95)),
        "mnist-denoise": (constant(26.0), constant(0.9)),
    }
    values.update({key: (constant(19.0), constant(0.7)) for key in CLASSICAL})
    rows = rows_for(values)
    psnr_target, ssim_target = check_targets("mnist-unet", rows)
    assert not psnr_target.met and "mnist-denoise" in psnr_target.detail
    assert ssim_target.met


def test_missing_lesson_fails_its_target_with_a_reason() -> None:
    rows = _mnist_rows(20.0, 0.9)
    del rows["lesson"]
    target = check_targets("fashion-denoise", {"fashion-denoise": rows.pop("mnist-denoise"), **rows})[0]
    assert not target.met and "not been scored" in target.detail


def test_table_marks_rows_scored_on_fewer_images() -> None:
    rows = _mnist_rows(20.0, 0.9)
    rows["bm3d"]["test_images"] = 3
    text = table(rows, [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert "| bm3d (first 3 images) | 19.00 / 0.700 |" in text
    assert "| mnist-denoise | 20.00 / 0.900 |" in text


def test_models_without_an_issue_target_get_design_md_aim() -> None:
    values = {"mnist-conv": (constant(18.0), constant(0.8)), "lesson": (constant(18.5), constant(0.8))}
    [target] = check_targets("mnist-conv", rows_for(values))
    assert target.source == "DESIGN.md" and not target.met and "-0.50 dB" in target.detail
