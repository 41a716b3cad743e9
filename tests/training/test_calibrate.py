"""training.calibrate: the shipped cards' calibration is what the code computes, and own data gets one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from contract import ood
from tests.conftest import fashion_dir_or_skip, mnist_dir_or_skip
from training import calibrate
from training.data import mnist_unseen

# a codeless denoiser, an autoencoder with a code, and a garment model whose view has the strokes signal
CHEAP = ("mnist-s2d", "mnist-dense", "fashion-s2d")


@pytest.mark.parametrize("model", CHEAP)
def test_shipped_card_holds_the_calibration_that_calibrate_computes(
    model: str, models_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / model
    shutil.copytree(models_dir / model, copy, ignore=shutil.ignore_patterns("report"))
    card = json.loads((models_dir / model / "card.json").read_text())
    shipped = card["ood"]
    if shipped["calibrated_on"]["split"] == "validation":
        fashion_dir_or_skip()
        block = calibrate.calibrate(copy)
    else:  # MNIST-5k models are calibrated on MNIST digits outside MNIST-5k too (make mnist-data).
        block = calibrate.calibrate(copy, mnist_dir=mnist_dir_or_skip())
    assert block["calibrated_on"] == shipped["calibrated_on"]
    assert {k: tuple(v["signals"]) for k, v in shipped["views"].items()} == calibrate.views_of(card)
    assert block["views"].keys() == shipped["views"].keys()
    for name, view in block["views"].items():
        want = shipped["views"][name]
        assert view["signals"] == want["signals"] and view["percentiles"] == want["percentiles"]
        assert view["threshold_percentile"] == want["threshold_percentile"]
        assert ("tables" in view) == ("tables" in want), name
    with (
        np.load(copy / ood.PARAMETERS_FILE) as fresh,
        np.load(models_dir / model / ood.PARAMETERS_FILE) as kept,
    ):
        assert {k: fresh[k].shape for k in fresh.files} == {k: kept[k].shape for k in kept.files}
    # The numbers are compared by what they do, not bit for bit: onnxruntime's and BLAS's kernels
    # differ between CPUs (AVX2, AVX-512) in the last bits of the outputs, a pixel on a grey-level
    # edge then moves a descriptor by 1/784, and k-means may settle on other clusters (mnist-s2d's
    # card, calibrated on an AVX2 machine, recomputed on an AVX-512 one: percentiles 0.3-0.5 apart
    # on average, the same flags). Both calibrations must score the same images alike: validation
    # images at two noise levels, and the other data set's images.
    made_calibration = ood.load(copy, json.loads((copy / "card.json").read_text()))
    kept_calibration = ood.load(models_dir / model, card)
    assert made_calibration is not None and kept_calibration is not None
    other = calibrate.load_data("mnist5k" if card["dataset"] == "fashion" else "fashion").test[:200]
    for level in (0.0, 0.2):
        for images in (calibrate.load_data(card["dataset"]).validation[:300], other):
            x = calibrate.corrupt("gaussian", images, level, 3)[:, None]
            outputs, codes = calibrate._run(copy, card, x)
            for view in block["views"]:
                made = made_calibration.score(view, x, outputs=outputs, codes=codes)
                kept = kept_calibration.score(view, x, outputs=outputs, codes=codes)
                assert np.abs(made.percentile - kept.percentile).mean() < 1.0, (view, level)
                assert np.mean(made.in_distribution == kept.in_distribution) >= 0.99, (view, level)
    # Each has a /denoise view the graph computes (pictures, and strokes): the calibration writes
    # its scored graph too.
    assert block["graph"]["autoencoder_sha256"] == shipped["graph"]["autoencoder_sha256"]
    assert made_calibration.graph is not None


def test_every_shipped_model_is_calibrated_and_loads(models_dir: Path) -> None:
    for card_path in sorted(models_dir.glob("*/card.json")):
        card = json.loads(card_path.read_text())
        calibration = ood.load(card_path.parent, card)
        assert calibration is not None, f"{card['id']}: no 'ood' block (python -m training.calibrate --all)"
        assert calibration.views == (["denoise", "encode"] if card["code_shape"] else ["denoise"])
        for view in calibration.block["views"].values():
            assert view["threshold_percentile"] == ood.THRESHOLD_PERCENTILE
            assert view["validation_values"] == card["ood"]["calibrated_on"]["images"] * len(
                card["ood"]["calibrated_on"]["conditions"]
            )


def test_noise_conditions_follow_the_cards_noise() -> None:
    gaussian = calibrate.noise_conditions({"noise": {"kind": "gaussian"}})
    assert gaussian == [("gaussian", 0.0)] + [("gaussian", s) for s in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)]
    mixed = calibrate.noise_conditions({"noise": {"kind": "mixed"}})
    assert {kind for kind, _ in mixed} == {"gaussian", "salt-pepper", "poisson", "speckle"}
    assert calibrate.noise_conditions({}) == gaussian


def test_mnist5k_models_calibrate_on_unseen_mnist_digits_beside_validation(tmp_path: Path) -> None:
    mnist_dir = mnist_dir_or_skip()
    data = calibrate.load_data("mnist5k")
    images, split = calibrate.calibration_images({"dataset": "mnist5k"}, data, mnist_dir)
    assert len(images) == 500 + calibrate.UNSEEN_DIGITS and "outside MNIST-5k" in split
    np.testing.assert_array_equal(images[:500], data.validation)
    # The unseen digits: none in MNIST-5k or MNIST's test file, the same on every call.
    unseen = images[500:]
    np.testing.assert_array_equal(unseen, mnist_unseen(calibrate.UNSEEN_DIGITS, mnist_dir))
    from training.data import _mnist5k_arrays, load_dataset

    key = lambda img: np.round(img * 255).astype(np.uint8).tobytes()  # noqa: E731
    taken = {key(img) for img in _mnist5k_arrays()[0]} | {
        key(img) for img in load_dataset("mnist", mnist_dir).test_x
    }
    assert not any(key(img) in taken for img in unseen)
    assert len({key(img) for img in unseen}) == len(unseen)
    after = mnist_unseen(500, mnist_dir, skip=calibrate.UNSEEN_DIGITS)  # bench.ood_splits' digits
    assert after is not None and not {key(img) for img in after} & {key(img) for img in unseen}
    # Without MNIST's files, validation alone (and the card says so); other data sets never add any.
    alone, split = calibrate.calibration_images({"dataset": "mnist5k"}, data, tmp_path)
    assert len(alone) == 500 and split == "validation"
    assert calibrate.calibration_images({"dataset": "fashion"}, data, mnist_dir)[1] == "validation"
    assert mnist_unseen(10, tmp_path) is None


def test_the_built_in_data_sets_add_the_strokes_signal_to_denoise_and_own_data_does_not() -> None:
    with_code = {"graphs": {"encoder": "encoder.onnx"}}
    assert calibrate.views_of({"dataset": "fashion"}) == {"denoise": ("pictures", "strokes")}
    assert calibrate.views_of({"dataset": "fashion", **with_code}) == {
        "denoise": ("code", "pictures", "strokes"),
        "encode": ("code",),
    }
    assert calibrate.views_of({"dataset": "mnist5k", **with_code}) == {
        "denoise": ("pictures", "strokes"),
        "encode": ("code",),
    }
    assert calibrate.views_of({"dataset": "folder:/data/scans"}) == {"denoise": ("pictures",)}
    assert calibrate.views_of({"dataset": "folder:/data/scans", **with_code}) == {
        "denoise": ("code", "pictures"),
        "encode": ("code",),
    }


def test_a_strokes_view_of_a_model_for_several_noise_kinds_standardises_per_noise_level() -> None:
    mixed, gaussian = {"dataset": "fashion", "noise": {"kind": "mixed"}}, {"dataset": "fashion"}
    assert calibrate.noise_bins(mixed, ["pictures", "strokes"]) == calibrate.STROKES_MIXED_NOISE_BINS > 1
    assert calibrate.noise_bins(gaussian, ["pictures", "strokes"]) == calibrate.NOISE_BINS == 1
    assert calibrate.noise_bins(mixed, ["code"]) == calibrate.NOISE_BINS
