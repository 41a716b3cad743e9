"""Own images as data sets: folders, .npy and .npz arrays, and every way they can be unusable."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service import imaging
from tests.training.own_images import glyph, write_folder
from training.data import DataError, load_dataset
from training.sources import MIN_SIDE, load_source
from training.train import main

ROOT = Path(__file__).resolve().parents[2]


def _service_decode(path: Path, invert: bool) -> np.ndarray:
    """What POST /denoise?resize=true(&invert=true) makes of the same file."""
    return imaging.decode_image(path.read_bytes(), max_pixels=4096 * 4096, resize=True, invert=invert)


def test_folder_of_mixed_formats_and_sizes_becomes_three_splits(tmp_path: Path) -> None:
    paths = write_folder(tmp_path / "glyphs", 120)
    split = load_dataset(f"folder:{tmp_path / 'glyphs'}")
    assert (len(split.train_x), len(split.val_x), len(split.test_x)) == (84, 12, 24)
    for x in (split.train_x, split.val_x, split.test_x):
        assert x.dtype == np.float32 and x.shape[1:] == (28, 28) and x.min() >= 0 and x.max() <= 1
    info = split.info
    assert info["files"] == 120 and info["skipped"] == 0 and info["inverted"] is True
    assert info["test_source"] == "last 24 of numpy.random.default_rng(2).permutation(120)"
    # Dark on light became white on black: the background (border) is dark, as in MNIST.
    assert split.train_x[:, 0, :].mean() < 0.05
    # Every image is exactly what the service makes of that file with resize=true&invert=true.
    every = {tuple(_service_decode(p, invert=True).ravel()) for p in paths}
    assert all(tuple(x.ravel()) in every for x in np.concatenate([split.train_x, split.test_x]))


def test_splits_are_the_same_on_every_load(tmp_path: Path) -> None:
    write_folder(tmp_path / "g", 60)
    a, b = load_source(f"folder:{tmp_path / 'g'}"), load_source(f"folder:{tmp_path / 'g'}")
    assert np.array_equal(a.test_x, b.test_x) and np.array_equal(a.val_x, b.val_x)


def test_train_and_test_sub_folders_are_the_splits(tmp_path: Path) -> None:
    write_folder(tmp_path / "d" / "train", 40, seed=1)
    write_folder(tmp_path / "d" / "test", 7, seed=2)
    split = load_source(f"folder:{tmp_path / 'd'}")
    assert len(split.test_x) == 7 and len(split.train_x) + len(split.val_x) == 40
    assert split.info["splits_from"] == "train/ and test/ sub-folders"


def test_light_on_dark_images_are_not_inverted(tmp_path: Path) -> None:
    folder = tmp_path / "light"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        dark_on_light = np.asarray(glyph(rng, 30, 40, "L"))
        Image.fromarray(255 - dark_on_light).save(folder / f"{i}.png")
    split = load_source(f"folder:{folder}")
    assert split.info["inverted"] is False
    assert split.train_x[:, 0, :].mean() < 0.05


def test_invert_can_be_forced(tmp_path: Path) -> None:
    write_folder(tmp_path / "g", 30)
    split = load_source(f"folder:{tmp_path / 'g'}", invert="no")
    # Light backgrounds stay light (transparent ones composite onto black, as the service does).
    assert split.info["inverted"] is False and np.median(split.train_x[:, 0, :]) == 1.0


def test_npy_uint8_array_of_another_size_is_resized_like_the_service_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = (rng.random((40, 32, 20)) * 60).astype(np.uint8)  # light on dark, 20 wide x 32 high
    np.save(tmp_path / "x.npy", images)
    split = load_dataset(f"npy:{tmp_path / 'x.npy'}")
    assert split.info["inverted"] is False and len(split.test_x) == 8
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, "PNG")
    every = np.concatenate([split.train_x, split.val_x, split.test_x])
    expected = imaging.decode_image(buffer.getvalue(), max_pixels=10**6, resize=True)
    assert np.any(np.all(np.isclose(every, expected, atol=1e-6), axis=(1, 2)))


def test_npz_float_train_and_test_arrays_are_the_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", train=rng.random((30, 28, 28)) * 0.2, test=rng.random((5, 28, 28)) * 0.2)
    split = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert len(split.test_x) == 5 and len(split.train_x) + len(split.val_x) == 30
    original = np.load(tmp_path / "d.npz")["test"]
    assert np.allclose(split.test_x, original, atol=1e-6), "28x28 float images pass unchanged"


def test_npz_with_a_single_array_of_any_name(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=np.zeros((30, 28, 28), np.uint8))
    assert len(load_source(f"npz:{tmp_path / 'd.npz'}").test_x) == 6


# ---------------------------------------------------------------------------------------------
# Errors: each one line, naming what is wrong.


def _error(name: str, **options: object) -> str:
    with pytest.raises(DataError) as info:
        load_source(name, **options)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    assert "no files" in _error(f"folder:{tmp_path / 'empty'}")


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    assert "folder not found" in _error(f"folder:{tmp_path / 'nope'}")


def _with_bad_files(root: Path) -> Path:
    write_folder(root, 30)
    (root / "notes.txt").write_text("not an image")
    (root / "class_0" / "broken.png").write_bytes(imaging.encode_png(np.zeros((28, 28)))[:40])
    (root / "class_1" / "empty.jpg").write_bytes(b"")
    Image.new("L", (MIN_SIDE - 2, 30), 255).save(root / "class_2" / "tiny.png")
    (root / ".DS_Store").write_bytes(b"\0\1")  # hidden files are not data
    return root


def test_unusable_files_are_counted_and_named(tmp_path: Path) -> None:
    message = _error(f"folder:{_with_bad_files(tmp_path / 'g')}")
    assert message.startswith(f"{tmp_path / 'g'}: 4 of 34 files are not usable images: ")
    for name in ("notes.txt", "class_0/broken.png", "class_1/empty.jpg", "class_2/tiny.png"):
        assert name in message
    assert "smaller than 8×8" in message and "--skip-bad" in message


def test_skip_bad_skips_them_and_says_how_many(tmp_path: Path) -> None:
    split = load_source(f"folder:{_with_bad_files(tmp_path / 'g')}", skip_bad=True)
    assert split.info["skipped"] == 4 and split.info["files"] == 34
    assert len(split.train_x) + len(split.val_x) + len(split.test_x) == 30


def test_only_the_first_few_bad_files_are_named(tmp_path: Path) -> None:
    write_folder(tmp_path / "g", 20)
    for i in range(9):
        (tmp_path / "g" / f"bad{i}.png").write_text("x")
    message = _error(f"folder:{tmp_path / 'g'}")
    assert "9 of 29 files" in message and "and 4 more" in message and "bad8.png" not in message


def test_too_few_images_for_the_splits(tmp_path: Path) -> None:
    write_folder(tmp_path / "g", 9)
    message = _error(f"folder:{tmp_path / 'g'}")
    assert "9 images; the splits need at least 13" in message


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((10, 28), np.uint8), "expected an N×H×W array of images, got shape [10, 28]"),
        (np.zeros((0, 28, 28), np.uint8), "holds no images"),
        (np.zeros((30, 28, 28), np.int32), "dtype int32 is not supported"),
        (np.full((30, 28, 28), 255.0), "float images must lie in [0, 1], these span [255, 255]"),
        (np.full((30, 28, 28), np.nan), "NaN"),
        (np.zeros((30, 5, 28), np.uint8), "smaller than 8×8"),
    ],
)
def test_wrong_arrays_are_refused_with_a_reason(tmp_path: Path, array: np.ndarray, words: str) -> None:
    np.save(tmp_path / "x.npy", array)
    assert words in _error(f"npy:{tmp_path / 'x.npy'}")


def test_npz_without_a_train_array_names_what_it_holds(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", a=np.zeros((30, 28, 28), np.uint8), b=np.zeros((30, 28, 28), np.uint8))
    assert "found ['a', 'b']" in _error(f"npz:{tmp_path / 'd.npz'}")


def test_a_file_that_is_no_array_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_text("hello")
    assert "not a readable .npy file" in _error(f"npy:{tmp_path / 'x.npy'}")


# ---------------------------------------------------------------------------------------------
# Through the command line: a one-line error, a non-zero exit, nothing written.


def _train_error(tmp_path: Path, data: str, *extra: str) -> str:
    out = tmp_path / "models" / "mine"
    with pytest.raises(SystemExit) as info:
        main(["--arch", "s2d", "--data", data, "--epochs", "1", "--out", str(out), "--no-progress", *extra])
    assert not (tmp_path / "models").exists(), "nothing is written when the data cannot be used"
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_training_on_an_empty_folder_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert "no files" in _train_error(tmp_path, f"folder:{tmp_path / 'empty'}")


def test_training_on_bad_files_fails_cleanly(tmp_path: Path) -> None:
    assert "4 of 34 files" in _train_error(tmp_path, f"folder:{_with_bad_files(tmp_path / 'g')}")


def test_training_on_a_wrong_array_fails_cleanly(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((30, 28, 28), np.int64))
    assert "dtype int64" in _train_error(tmp_path, f"npy:{tmp_path / 'x.npy'}")


def test_the_command_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    write_folder(tmp_path / "g", 5)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--data",
            f"folder:{tmp_path / 'g'}",
            "--arch",
            "s2d",
            "--out",
            str(tmp_path / "mine"),
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "INFO" not in line]
    assert errors == [
        f"error: folder:{tmp_path / 'g'}: 5 images; the splits need at least 13 "
        "(20% test, 12.5% of the rest validation, 8 train)"
    ]
    assert "Traceback" not in result.stderr and not (tmp_path / "mine").exists()


def test_unknown_data_names_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--data", "pictures/"])
    assert info.value.code == 2
    assert "folder:PATH, npz:PATH, npy:PATH" in capsys.readouterr().err


def test_skip_bad_is_for_own_images_only() -> None:
    with pytest.raises(SystemExit, match="apply to folder:"):
        main(["--data", "mnist5k", "--skip-bad", "--dry-run"])
