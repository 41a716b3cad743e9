"""A broken model directory that a deployment needs stops ``ae-serve`` with a message naming the file.

Each case runs the real ``ae-serve`` process on a damaged copy of the shipped models, with the
damaged model configured as a default (or with nothing left to serve), and checks its exit code and
what it printed: the path of the offending file or directory, no traceback, and no port ever opened
(a broken deployment must fail its start, not answer 500s later). A broken model that no default
names is skipped instead (tests/hardening/test_reload.py starts a server with one).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import ROOT
from tests.hardening.conftest import free_port, serve_argv, server_env

# Each test here bounds its own wait: a hang fails it within 180 s, not at the suite-wide 600 s.
pytestmark = pytest.mark.timeout(180)

Breaker = Callable[[Path], Path]  # damages a copy of models/, returns the path the message must name
# The defaults that make each damaged model one the deployment needs (the shipped defaults otherwise).
_NEEDS = {
    "mnist-denoise": {"AE_DEFAULT_CODE_MODEL": "mnist-denoise"},
    "mnist-conv": {"AE_DEFAULT_CODE_MODEL": "mnist-conv"},
    "mnist-unet": {"AE_DEFAULT_DENOISE_MODEL": "mnist-unet"},
}


def _rewrite_sha(model_dir: Path, filename: str) -> None:
    """Make card.json agree with a replaced file, so the check that fires is the one under test."""
    card_path = model_dir / "card.json"
    card = json.loads(card_path.read_text())
    card["sha256"][filename] = hashlib.sha256((model_dir / filename).read_bytes()).hexdigest()
    card_path.write_text(json.dumps(card))


def _replace_graph(model_dir: Path, input_name: str, input_shape: list[int | str], dtype: int) -> Path:
    """Swap ``autoencoder.onnx`` for an Identity graph whose input breaks the contract in one way."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], ["denoised"])],
        "broken",
        [helper.make_tensor_value_info(input_name, dtype, input_shape)],
        [helper.make_tensor_value_info("denoised", dtype, input_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"model_id": model_dir.name, "arch": "unet", "code_shape": "null"})
    path = model_dir / "autoencoder.onnx"
    onnx.save(model, path)
    _rewrite_sha(model_dir, "autoencoder.onnx")
    return path


def _missing_dir(root: Path) -> Path:
    shutil.rmtree(root)
    return root


def _only_model_broken(root: Path) -> Path:
    """Nothing left to serve: every model but one removed, and that one's card truncated."""
    for child in root.iterdir():
        if child.name != "mnist-unet":
            shutil.rmtree(child)
    path = root / "mnist-unet" / "card.json"
    path.write_bytes(path.read_bytes()[:50])
    return path


def _empty_dir(root: Path) -> Path:
    for child in root.iterdir():
        shutil.rmtree(child)
    return root


def _missing_graph(root: Path) -> Path:
    path = root / "mnist-denoise" / "decoder.onnx"
    path.unlink()
    return path


def _truncated_graph(root: Path) -> Path:
    # The card is updated too: what fails must be onnxruntime reading the file, not the checksum.
    path = root / "mnist-denoise" / "encoder.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _rewrite_sha(path.parent, path.name)
    return path


def _truncated_graph_same_card(root: Path) -> Path:
    path = root / "mnist-unet" / "autoencoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    return path


def _truncated_card(root: Path) -> Path:
    path = root / "mnist-conv" / "card.json"
    path.write_bytes(path.read_bytes()[:50])
    return path


def _wrong_input_name(root: Path) -> Path:
    return _replace_graph(root / "mnist-unet", "pixels", ["batch", 1, 28, 28], TensorProto.FLOAT)


def _flat_input(root: Path) -> Path:
    return _replace_graph(root / "mnist-unet", "image", ["batch", 784], TensorProto.FLOAT)


def _double_input(root: Path) -> Path:
    return _replace_graph(root / "mnist-unet", "image", ["batch", 1, 28, 28], TensorProto.DOUBLE)


def _fixed_batch(root: Path) -> Path:
    return _replace_graph(root / "mnist-unet", "image", [1, 1, 28, 28], TensorProto.FLOAT)


CASES: dict[str, Breaker] = {
    "models dir missing": _missing_dir,
    "models dir empty": _empty_dir,
    "the only model broken": _only_model_broken,
    "graph file missing": _missing_graph,
    "graph truncated (card updated)": _truncated_graph,
    "graph truncated (sha256 mismatch)": _truncated_graph_same_card,
    "card.json truncated": _truncated_card,
    "input named 'pixels'": _wrong_input_name,
    "input flat [N, 784]": _flat_input,
    "input float64": _double_input,
    "input without a batch axis": _fixed_batch,
}


@dataclass(frozen=True)
class Outcome:
    named: Path
    returncode: int
    output: str


@pytest.fixture(scope="module")
def outcomes(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case's ae-serve, started all at once: each is a whole interpreter start-up."""
    started = {}
    for case, breaker in CASES.items():
        root = tmp_path_factory.mktemp("broken") / "models"
        shutil.copytree(models_dir, root, ignore=shutil.ignore_patterns("report", ".*"))
        named = breaker(root)
        needs = next((env for name, env in _NEEDS.items() if name in named.parts), {})
        proc = subprocess.Popen(
            serve_argv(),
            cwd=ROOT,
            env=server_env(root, free_port(), **needs),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started[case] = (named, proc)
    results = {}
    for case, (named, proc) in started.items():
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        results[case] = Outcome(named, proc.returncode, output)
    return results


@pytest.mark.parametrize("case", list(CASES))
def test_broken_model_dir_ends_ae_serve_naming_the_file(outcomes: dict[str, Outcome], case: str) -> None:
    outcome = outcomes[case]
    assert outcome.returncode not in (0, None), outcome.output
    assert str(outcome.named) in outcome.output, outcome.output
    assert "Traceback" not in outcome.output, outcome.output
    assert "Uvicorn running" not in outcome.output and "Application startup" not in outcome.output, (
        outcome.output
    )
