"""service.inference: provider choice and one shared onnxruntime session per graph."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.inference import (
    CPU,
    CUDA,
    GraphSession,
    InferenceError,
    int8_dot_products,
    select_providers,
    session_options,
)

HAS_CUDA = CUDA in ort.get_available_providers()


def test_cpu_device_never_asks_for_cuda() -> None:
    assert select_providers("cpu") == [CPU]


def test_auto_takes_cuda_only_when_available() -> None:
    assert select_providers("auto") == ([CUDA, CPU] if HAS_CUDA else [CPU])


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has CUDA")
def test_cuda_without_a_cuda_build_is_a_clear_error() -> None:
    with pytest.raises(InferenceError, match="AE_DEVICE=cuda but this onnxruntime build offers only"):
        select_providers("cuda")


def test_session_options_carry_the_thread_settings() -> None:
    options = session_options(intra_op_threads=3, inter_op_threads=2)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 2)


def test_graph_session_runs_a_batch_and_reports_its_provider(models_dir: Path) -> None:
    path = models_dir / "mnist-denoise" / "autoencoder.onnx"
    session = GraphSession(path, [CPU], session_options(1, 1))
    assert [(s.name, s.shape[1:]) for s in session.inputs] == [("image", (1, 28, 28))]
    assert [(s.name, s.shape[1:]) for s in session.outputs] == [("denoised", (1, 28, 28))]
    assert session.provider == CPU
    assert session.metadata["model_id"] == "mnist-denoise"
    batch = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    out = session.run(batch)
    assert out.shape == (5, 1, 28, 28) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Rows are independent: a row's output does not depend on its batch neighbours.
    np.testing.assert_allclose(session.run(batch[2:3]), out[2:3], atol=1e-5)


def test_warm_up_runs_every_requested_batch_size(models_dir: Path) -> None:
    session = GraphSession(models_dir / "mnist-denoise" / "decoder.onnx", [CPU], session_options())
    session.warm_up((1, 7))  # raises if the code shape were not inferred from the graph


def test_unloadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a protobuf")
    with pytest.raises(InferenceError, match=re.escape(f"{path}: onnxruntime cannot load it")):
        GraphSession(path, [CPU], session_options())


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        # x86: one "flags" line per core; AVX-512 VNNI, or AVX-VNNI (Alder Lake and later)
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx_vnni\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw\n", False),
        # Arm: "Features", with asimddp for the dot-product extension
        ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\n", True),
        ("processor\t: 0\nFeatures\t: fp asimd evtstrm\n", False),
    ],
)
def test_int8_dot_products_reads_the_cpu_flags(tmp_path: Path, cpuinfo: str, expected: bool) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert int8_dot_products(path) is expected


def test_int8_dot_products_is_unknown_without_cpuinfo(tmp_path: Path) -> None:
    assert int8_dot_products(tmp_path / "absent") is None
