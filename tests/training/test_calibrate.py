"""training.calibrate: the shipped cards' calibration is what the code computes, and own data gets one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from contract import ood
from tests.conftest import mnist_dir_or_skip
from training import calibrate
from training.data import mnist_unseen

CHEAP = ("mnist-s2d", "mnist-dense")  # a codeless denoiser and an autoencoder with a code


@pytest.mark.parametrize("model", CHEAP)
def test_shipped_card_holds_the_calibration_that_calibrate_computes(
    model: str, models_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / model
    shutil.copytree(models_dir / model, copy, ignore=shutil.ignore_patterns("report"))
    shipped = json.loads((models_dir / model / "card.json").read_text())["ood"]
    # MNIST-5k models are calibrated on MNIST digits outside MNIST-5k too (make mnist-data).
    block = calibrate.calibrate(copy, mnist_dir=mnist_dir_or_skip())
    assert block["calibrated_on"] == shipped["calibrated_on"]
    assert block["views"].keys() == shipped["views"].keys()
    for name, view in block["views"].items():
        want = shipped["views"][name]
        assert view["signals"] == want["signals"] and view["percentiles"] == want["percentiles"]
        assert np.allclose(view["table"], want["table"], rtol=1e-4, atol=1e-4), name
        assert view["threshold"] == pytest.approx(want["threshold"], rel=1e-4, abs=1e-4)
        assert ("tables" in view) == ("tables" in want), name
        for made, kept in zip(view.get("tables", []), want.get("tables", []), strict=True):
            assert np.allclose(made, kept, rtol=1e-4, atol=1e-4), name
    with (
        np.load(copy / ood.PARAMETERS_FILE) as fresh,
        np.load(models_dir / model / ood.PARAMETERS_FILE) as kept,
    ):
        assert sorted(fresh.files) == sorted(kept.files)
        for key in fresh.files:
            assert np.allclose(fresh[key], kept[key], rtol=1e-3, atol=1e-3), key
    card = json.loads((models_dir / model / "card.json").read_text())
    assert {k: tuple(v["signals"]) for k, v in shipped["views"].items()} == calibrate.views_of(card)
    # Both have a pictures-only /denoise view: the calibration writes its scored graph too.
    assert block["graph"]["autoencoder_sha256"] == shipped["graph"]["autoencoder_sha256"]
    assert ood.load(copy, json.loads((copy / "card.json").read_text())).graph is not None  # type: ignore[union-attr]


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
