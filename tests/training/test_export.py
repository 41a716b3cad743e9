"""training.export: graphs that follow the artifact contract, parity with PyTorch, atomic swaps."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from training import export as export_module
from training.checkpoint import save_checkpoint
from training.export import (
    PARITY_ATOL,
    ExportError,
    build_paths,
    export_model,
    float64_judged,
    main,
    parity_tolerance,
    strip_build_info,
    strip_model_dir,
)
from training.models import Autoencoder, Model, build_model, preset

DESCRIPTION = "test model"


def _export(model: Model, out: Path, **kwargs: Any) -> dict[str, Any]:
    return export_model(model, out, dataset="mnist5k", description=DESCRIPTION, seed=0, **kwargs)


@pytest.fixture(scope="module")
def denoise_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Model]:
    torch.manual_seed(0)
    model = build_model(preset("denoise"))
    out = tmp_path_factory.mktemp("export") / "mnist-denoise"
    _export(model, out, train_config={"epochs": 1})
    return out, model


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Model]:
    torch.manual_seed(0)
    model = build_model(preset("unet"))
    out = tmp_path_factory.mktemp("export") / "mnist-unet"
    _export(model, out)
    return out, model


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def test_autoencoder_directory_holds_the_three_graphs_and_a_card(denoise_dir: tuple[Path, Model]) -> None:
    out, _ = denoise_dir
    assert {p.name for p in out.iterdir()} == {
        "encoder.onnx",
        "decoder.onnx",
        "autoencoder.onnx",
        "card.json",
    }


@pytest.mark.parametrize(
    ("file", "input_name", "output_name", "in_shape", "out_shape"),
    [
        ("encoder.onnx", "image", "code", [1, 28, 28], [16, 4, 4]),
        ("decoder.onnx", "code", "image", [16, 4, 4], [1, 28, 28]),
        ("autoencoder.onnx", "image", "denoised", [1, 28, 28], [1, 28, 28]),
    ],
)
def test_graphs_have_contract_names_and_a_dynamic_batch_axis(
    denoise_dir: tuple[Path, Model],
    file: str,
    input_name: str,
    output_name: str,
    in_shape: list[int],
    out_shape: list[int],
) -> None:
    session = _session(denoise_dir[0] / file)
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, inp.type) == (input_name, ["batch", *in_shape], "tensor(float)")
    assert (outp.name, outp.shape) == (output_name, ["batch", *out_shape])
    for n in (1, 5):
        (result,) = session.run(None, {input_name: np.random.rand(n, *in_shape).astype(np.float32)})
        assert result.shape == (n, *out_shape)


@pytest.mark.parametrize("file", ["encoder.onnx", "decoder.onnx", "autoencoder.onnx"])
def test_graphs_carry_metadata_and_opset_17_or_later(denoise_dir: tuple[Path, Model], file: str) -> None:
    proto = onnx.load(denoise_dir[0] / file)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model_id"] == "mnist-denoise"
    assert props["arch"] == "denoise"
    assert json.loads(props["code_shape"]) == [16, 4, 4]
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_onnxruntime_matches_pytorch_on_new_images(denoise_dir: tuple[Path, Model]) -> None:
    out, model = denoise_dir
    assert isinstance(model, Autoencoder)
    assert model.training, "export must hand the model back in the mode it was given"
    model.eval()
    x = torch.rand(7, 1, 28, 28)
    with torch.no_grad():
        code = model.encoder(x)
        expected = {"autoencoder.onnx": model(x), "encoder.onnx": code, "decoder.onnx": model.decoder(code)}
    feeds = {"autoencoder.onnx": x, "encoder.onnx": x, "decoder.onnx": code}
    for file, feed in feeds.items():
        session = _session(out / file)
        (got,) = session.run(None, {session.get_inputs()[0].name: feed.numpy()})
        np.testing.assert_allclose(got, expected[file].numpy(), atol=1e-5, rtol=0)


def test_card_follows_the_contract(denoise_dir: tuple[Path, Model]) -> None:
    out, _ = denoise_dir
    card = json.loads((out / "card.json").read_text())
    assert card["id"] == "mnist-denoise" and card["arch"] == "denoise" and card["dataset"] == "mnist5k"
    assert card["code_shape"] == [16, 4, 4]
    assert card["graphs"] == {
        "encoder": "encoder.onnx",
        "decoder": "decoder.onnx",
        "autoencoder": "autoencoder.onnx",
    }
    assert card["input"] == {
        "name": "image",
        "shape": ["batch", 1, 28, 28],
        "dtype": "float32",
        "range": [0.0, 1.0],
    }
    assert card["config"]["model"]["arch"] == "denoise" and card["config"]["train"] == {"epochs": 1}
    assert card["seed"] == 0 and set(card["split"]) == {"train", "validation", "test"}
    assert card["versions"]["torch"] == "2.13.0" and card["versions"]["opset"] >= 17
    assert card["created"].endswith("Z")
    for file in card["graphs"].values():
        assert card["sha256"][file] == hashlib.sha256((out / file).read_bytes()).hexdigest()


def test_unet_exports_only_the_autoencoder_graph(unet_dir: tuple[Path, Model]) -> None:
    out, _ = unet_dir
    assert {p.name for p in out.iterdir()} == {"autoencoder.onnx", "card.json"}
    card = json.loads((out / "card.json").read_text())
    assert card["code_shape"] is None and card["graphs"] == {"autoencoder": "autoencoder.onnx"}
    props = {p.key: p.value for p in onnx.load(out / "autoencoder.onnx").metadata_props}
    assert json.loads(props["code_shape"]) is None
    (result,) = _session(out / "autoencoder.onnx").run(
        None, {"image": np.random.rand(5, 1, 28, 28).astype(np.float32)}
    )
    assert result.shape == (5, 1, 28, 28) and result.min() >= 0 and result.max() <= 1


def test_failed_parity_raises_and_leaves_the_old_model_in_place(tmp_path: Path) -> None:
    out = tmp_path / "mnist-conv"
    model = build_model(preset("conv", lesson=True))
    _export(model, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with torch.no_grad():
        model.decoder.net[-1].bias.fill_(float("nan"))  # type: ignore[union-attr]
    with pytest.raises(ExportError, match="differs from PyTorch"):
        _export(model, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["mnist-conv"], "staging folder left behind"


def test_float64_judges_two_float32_runs_that_disagree() -> None:
    exact = np.array([0.25, 0.5, 0.75])
    torch32 = exact + np.array([3e-5, 0.0, -1e-5])  # PyTorch's own rounding: 3e-5 off
    assert float64_judged(exact + 2e-5, torch32, exact, 1e-5)  # onnxruntime closer than that
    assert float64_judged(exact + 5.5e-5, torch32, exact, 1e-5)  # within twice PyTorch's own error
    assert not float64_judged(exact + 6.5e-5, torch32, exact, 1e-5)
    assert not float64_judged(exact + 1e-2, torch32, exact, 1e-5)  # a wrong graph
    assert not float64_judged(exact * np.nan, torch32, exact, 1e-5)


def test_an_export_past_the_float32_bound_passes_when_float64_says_it_is_faithful(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Conv weights tripled: random pixels drive the untrained s2d's features high, and its two
    # float32 runs (PyTorch, onnxruntime) differ by ~6e-6. With the bound made tiny, only the
    # float64 network can tell the export is sound: it is, and the card records the difference.
    torch.manual_seed(0)
    model = build_model(replace(preset("s2d"), norm="none"))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4:
                p.mul_(3.0)
    monkeypatch.setattr(export_module, "PARITY_ATOL", 1e-9)
    card = _export(model, tmp_path / "mnist-s2d")
    assert card["parity_max_abs_diff"]["autoencoder.onnx"] > 1e-9


def test_parity_tolerance_is_absolute_for_images_and_relative_for_large_codes() -> None:
    assert parity_tolerance(np.array([0.0, 0.5, 1.0])) == PARITY_ATOL
    assert parity_tolerance(np.array([-0.2, 0.9])) == PARITY_ATOL
    assert parity_tolerance(np.array([3.0, -47.0])) == pytest.approx(47 * PARITY_ATOL)


def test_re_export_replaces_graphs_but_keeps_the_report(tmp_path: Path) -> None:
    out = tmp_path / "mnist-dense"
    torch.manual_seed(0)
    _export(build_model(preset("dense")), out, autoencoder_only=True)
    (out / "report").mkdir()
    (out / "report" / "README.md").write_text("figures")
    old_hash = json.loads((out / "card.json").read_text())["sha256"]["autoencoder.onnx"]
    torch.manual_seed(1)
    card = _export(build_model(preset("dense")), out, autoencoder_only=True)
    assert card["sha256"]["autoencoder.onnx"] != old_hash
    assert (out / "report" / "README.md").read_text() == "figures"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist-dense"]


def test_cli_exports_a_checkpoint(tmp_path: Path) -> None:
    model = build_model(preset("conv", lesson=True))
    ckpt = tmp_path / "c.pt"
    save_checkpoint(
        ckpt,
        {
            "model_config": model.config.to_dict(),
            "train_config": {"data": "mnist5k", "seed": 3},
            "model": model.state_dict(),
            "description": "from a checkpoint",
        },
    )
    main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "m"), "--autoencoder-only"])
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert (card["id"], card["seed"], card["description"]) == ("mnist-conv", 3, "from a checkpoint")
    assert card["graphs"] == {"autoencoder": "autoencoder.onnx"}
    # Calibrated for /denoise alone: the lesson's export has a code shape but no encoder graph.
    assert list(card["ood"]["views"]) == ["denoise"]


def test_cli_names_an_own_data_model_after_its_folder_and_records_its_noise(tmp_path: Path) -> None:
    model = build_model(preset("s2d"))
    ckpt = tmp_path / "c.pt"
    train_config = {
        "data": "folder:/data/glyphs",
        "seed": 0,
        "noise": "salt-pepper",
        "noise_min": 0.0,
        "noise_max": 0.2,
    }
    save_checkpoint(
        ckpt,
        {"model_config": model.config.to_dict(), "train_config": train_config, "model": model.state_dict()},
    )
    main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "my-glyphs")])
    card = json.loads((tmp_path / "my-glyphs" / "card.json").read_text())
    assert card["id"] == "my-glyphs" and card["dataset"] == "folder:/data/glyphs"
    # The checkpoint stored no sentence: the card gets the one its configs make, as training's own export.
    assert card["description"].startswith("Space-to-depth residual denoiser with a thin full-resolution path")
    assert "salt-pepper" in card["description"]
    assert "ood" not in card  # its images are not readable here: exported, and left uncalibrated
    assert card["noise"]["kind"] == "salt-pepper" and card["noise"]["levels"]["salt-pepper"]["range"] == [
        0.0,
        0.2,
    ]


def test_graphs_carry_no_path_of_the_machine_that_built_them(denoise_dir: tuple[Path, Model]) -> None:
    out, _ = denoise_dir
    root = str(Path(__file__).resolve().parents[2]).encode()
    for name in ("autoencoder.onnx", "encoder.onnx", "decoder.onnx"):
        data = (out / name).read_bytes()
        assert root not in data and b"site-packages" not in data and b'File "' not in data, name
        proto = onnx.load(out / name)
        assert not [n.name for n in proto.graph.node if n.doc_string or len(n.metadata_props)], name
        assert proto.doc_string == DESCRIPTION


def test_an_autoencoder_exported_alone_is_a_codeless_model_the_service_loads(tmp_path: Path) -> None:
    from service.registry import load_model

    torch.manual_seed(0)
    out = tmp_path / "mnist-conv"
    card = _export(build_model(preset("conv", lesson=True)), out, autoencoder_only=True)
    assert card["code_shape"] is None and card["graphs"] == {"autoencoder": "autoencoder.onnx"}
    model = load_model(out, "cpu")
    assert not model.has_code and set(model.graphs) == {"autoencoder"}


def test_export_refuses_a_card_the_service_would_reject(tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = tmp_path / "mnist-unet"
    with pytest.raises(ExportError, match="code_range given for a model without a code"):
        _export(build_model(preset("unet")), out, extra={"code_range": {"min": 0.0, "max": 1.0}})
    assert not out.exists() and list(tmp_path.iterdir()) == []


TRACE = 'File "/home/someone/venv/lib/python3.11/site-packages/torch/nn/modules/conv.py", line 548'


def _traced(message: Any) -> None:
    """Write what torch's exporter writes: a doc string and node-level stack-trace metadata."""
    message.doc_string = TRACE
    if "metadata_props" in message.DESCRIPTOR.fields_by_name:  # not on attributes
        message.metadata_props.add(key="pkg.torch.onnx.stack_trace", value=TRACE)


def _model_with_build_paths() -> onnx.ModelProto:
    """``denoised = 2 * image`` through a model-local function inside an If's branches, with the
    exporter's paths on every kind of message that can hold them."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])
    denoised = helper.make_tensor_value_info("denoised", TensorProto.FLOAT, ["batch", 1, 28, 28])
    twice = helper.make_tensor_value_info("twice", TensorProto.FLOAT, None)
    branch = helper.make_graph(
        [helper.make_node("Double", ["image"], ["twice"], domain="local")], "b", [], [twice]
    )
    flag = helper.make_tensor("flag", TensorProto.BOOL, [], [True])
    node = helper.make_node("If", ["flag"], ["denoised"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "g", [image], [denoised], [flag])
    add = helper.make_node("Add", ["x", "x"], ["y"])
    function = helper.make_function("local", "Double", ["x"], ["y"], [add], [helper.make_opsetid("", 18)])
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
        functions=[function],
    )
    model.ir_version = 10
    g = model.graph
    traced = [g, g.node[0], g.input[0], g.output[0], g.initializer[0], *g.node[0].attribute]
    traced += [model.functions[0], model.functions[0].node[0]]
    for a in g.node[0].attribute:
        traced += [a.g, a.g.node[0], a.g.output[0]]
    for message in traced:
        _traced(message)
    model.doc_string = DESCRIPTION
    helper.set_model_props(model, {"model_id": "mnist-s2d", "code_shape": "null"})
    onnx.checker.check_model(model)
    return model


def test_strip_build_info_removes_paths_everywhere_but_keeps_the_computation_and_the_card_metadata() -> None:
    model = _model_with_build_paths()
    assert len(build_paths(model)) > 10
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"image": x})[0]
    strip_build_info(model)
    assert build_paths(model) == []
    data = model.SerializeToString()
    assert b"site-packages" not in data and b"/home" not in data and b"stack_trace" not in data
    assert model.doc_string == DESCRIPTION
    assert {p.key: p.value for p in model.metadata_props} == {"model_id": "mnist-s2d", "code_shape": "null"}
    after = ort.InferenceSession(data).run(None, {"image": x})[0]
    assert after.tobytes() == before.tobytes() and np.array_equal(after, 2 * x)


def test_build_paths_spots_absolute_paths_but_not_the_cards_prose() -> None:
    model = _model_with_build_paths()
    strip_build_info(model)
    model.graph.name = "C:\\Users\\me\\model"
    model.graph.node[0].name = "/work/x/training/models.py"
    assert len(build_paths(model)) == 2
    model.graph.name = "PSNR / SSIM of a 784-32-784 net, s ~ U[0.0, 0.6] (1/2 of the images)"
    model.graph.node[0].name = "/encoder/conv1/Conv"  # a name scope, not a path
    assert build_paths(model) == []


def test_strip_rewrites_an_old_export_with_bit_identical_outputs_and_a_card_the_service_loads(
    denoise_dir: tuple[Path, Model], tmp_path: Path
) -> None:
    from service.registry import load_model

    out = tmp_path / "mnist-denoise"
    shutil.copytree(denoise_dir[0], out)
    assert strip_model_dir(out) == []  # a fresh export is clean already
    card = json.loads((out / "card.json").read_text())
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    before = _session(out / "autoencoder.onnx").run(None, {"image": x})[0]
    for name in card["graphs"].values():  # as the exports before strip_build_info left them
        proto = onnx.load(out / name)
        for node in proto.graph.node:
            _traced(node)
        onnx.save(proto, out / name)
        card["sha256"][name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    (out / "card.json").write_text(json.dumps(card))
    main(["--strip", str(out)])
    for name in card["graphs"].values():
        data = (out / name).read_bytes()
        assert b"site-packages" not in data and build_paths(onnx.load(out / name)) == [], name
    stripped = json.loads((out / "card.json").read_text())
    assert stripped["sha256"] == {
        f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in card["graphs"].values()
    }
    assert stripped["sha256"] != card["sha256"]
    assert {k: v for k, v in stripped.items() if k != "sha256"} == {
        k: v for k, v in card.items() if k != "sha256"
    }
    after = _session(out / "autoencoder.onnx").run(None, {"image": x})[0]
    assert after.tobytes() == before.tobytes()
    model = load_model(out, "cpu")  # the service's own checks: sha256, names, metadata
    assert model.has_code and set(model.graphs) == {"encoder", "decoder", "autoencoder"}


def test_strip_rebuilds_the_scored_graph_from_the_stripped_autoencoder(
    models_dir: Path, tmp_path: Path
) -> None:
    from service.registry import load_model

    out = tmp_path / "mnist-s2d"
    shutil.copytree(models_dir / "mnist-s2d", out, ignore=shutil.ignore_patterns("report"))
    card = json.loads((out / "card.json").read_text())
    proto = onnx.load(out / "autoencoder.onnx")
    for node in proto.graph.node:  # as the exports before strip_build_info left them
        _traced(node)
    onnx.save(proto, out / "autoencoder.onnx")
    card["sha256"]["autoencoder.onnx"] = hashlib.sha256((out / "autoencoder.onnx").read_bytes()).hexdigest()
    (out / "card.json").write_text(json.dumps(card))
    assert load_model(out, "cpu").scored is False  # scored.onnx no longer matches: passed over
    assert strip_model_dir(out) == ["autoencoder.onnx"]
    stripped = json.loads((out / "card.json").read_text())
    assert stripped["ood"]["graph"]["autoencoder_sha256"] == stripped["sha256"]["autoencoder.onnx"]
    assert (
        stripped["ood"]["graph"]
        == json.loads((models_dir / "mnist-s2d" / "card.json").read_text())["ood"]["graph"]
    )
    assert build_paths(onnx.load(out / "scored.onnx")) == []
    model = load_model(out, "cpu")
    assert model.scored and model.graphs["autoencoder"].path.name == "scored.onnx"
