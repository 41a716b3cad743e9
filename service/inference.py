"""onnxruntime and nothing else: providers, session options, one shared session per graph.

``onnxruntime.InferenceSession.run`` is thread-safe, so one session per graph serves every request;
the batcher calls :meth:`GraphSession.run` from its executor threads.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

logger = logging.getLogger(__name__)

Device = Literal["auto", "cuda", "cpu"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


# The CPU flags (/proc/cpuinfo) of the 8-bit dot products that onnxruntime's int8 kernels need to
# beat float: AVX-512 VNNI, AVX-VNNI, and Arm's dot-product extension. Without them an int8 model
# runs no faster than its float one (docs/evaluation.md, "Int8 variants").
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "asimddp"})


class InferenceError(Exception):
    """A graph cannot be loaded, or the requested device is not available."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints for fixed axes, strings for symbolic ones) and element type of a graph I/O."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


def select_providers(device: Device) -> list[str]:
    """The execution providers to ask for, most preferred first.

    ``auto`` takes CUDA when this onnxruntime build has it, ``cuda`` insists on it, ``cpu`` never
    uses it. CPU is always last so that operators CUDA lacks still run.
    """
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise InferenceError(
            f"AE_DEVICE=cuda but this onnxruntime build offers only {available}; "
            "install onnxruntime-gpu or set AE_DEVICE=auto"
        )
    return [CPU]


@functools.cache
def int8_dot_products(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether this CPU has 8-bit dot-product instructions (:data:`INT8_DOT_PRODUCT_FLAGS`); None
    where ``cpuinfo`` cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, Arm
            flags.update(value.split())
    return bool(flags & INT8_DOT_PRODUCT_FLAGS)


def session_options(intra_op_threads: int = 0, inter_op_threads: int = 0) -> ort.SessionOptions:
    """Options shared by every session; 0 threads lets onnxruntime pick (one per core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 3  # errors only: the optimiser's notes are not ours to act on
    return options


def _spec(arg: ort.NodeArg) -> TensorSpec:
    return TensorSpec(name=arg.name, shape=tuple(arg.shape), dtype=arg.type)


class GraphSession:
    """One ONNX graph with a single input, loaded into onnxruntime; :meth:`run` returns its first
    output (a model's graphs have only that one; a scored graph adds its percentiles after it)."""

    def __init__(self, path: Path, providers: list[str], options: ort.SessionOptions) -> None:
        self.path = path
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, …)
            raise InferenceError(f"{path}: onnxruntime cannot load it ({exc})") from exc
        self.inputs = [_spec(arg) for arg in self._session.get_inputs()]
        self.outputs = [_spec(arg) for arg in self._session.get_outputs()]
        # The provider that actually runs the graph: CUDA may have been asked for and not granted.
        self.provider: str = self._session.get_providers()[0]
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the graph on one batch (first axis = batch) and return its only output."""
        feed = {self.inputs[0].name: np.ascontiguousarray(batch, dtype=np.float32)}
        (output,) = self._session.run([self.outputs[0].name], feed)
        return np.asarray(output)

    def run_all(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run the graph on one batch and return every output, in the graph's order."""
        feed = {self.inputs[0].name: np.ascontiguousarray(batch, dtype=np.float32)}
        return tuple(np.asarray(output) for output in self._session.run(None, feed))

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run zeros through the graph so that the first request pays no allocation or tuning cost."""
        fixed = [dim if isinstance(dim, int) else 1 for dim in self.inputs[0].shape[1:]]
        for n in batch_sizes:
            self.run(np.zeros((n, *fixed), dtype=np.float32))
