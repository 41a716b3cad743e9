"""service.registry: the shipped models load; every breach of the contract stops start-up by name."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.registry import ModelError, Registry, UnknownModel, load_registry


def _card(model_dir: Path) -> dict:
    return json.loads((model_dir / "card.json").read_text())


def _write_card(model_dir: Path, card: dict) -> None:
    (model_dir / "card.json").write_text(json.dumps(card))


def _rehash(model_dir: Path, filename: str) -> None:
    card = _card(model_dir)
    card["sha256"][filename] = hashlib.sha256((model_dir / filename).read_bytes()).hexdigest()
    _write_card(model_dir, card)


@pytest.fixture
def one_model(models_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A models dir holding a copy of one shipped model that has a code: (models dir, model dir)."""
    source = next(
        d for d in sorted(models_dir.iterdir()) if (d / "card.json").is_file() and _card(d)["code_shape"]
    )
    root = tmp_path / "models"
    shutil.copytree(source, root / source.name)
    return root, root / source.name


def _load(root: Path, model_dir: Path) -> Registry:
    return load_registry(root, default_model=model_dir.name, device="cpu")


def test_every_shipped_model_loads_with_its_graphs(models_dir: Path) -> None:
    ids = sorted(d.name for d in models_dir.iterdir() if (d / "card.json").is_file())
    registry = load_registry(models_dir, default_model="mnist-denoise", device="cpu")
    assert registry.ids == ids
    for model in registry:
        expected = {"autoencoder"} | ({"encoder", "decoder"} if model.has_code else set())
        assert set(model.graphs) == expected
        assert model.provider == "CPUExecutionProvider"
        out = model.graphs["autoencoder"].run(np.zeros((2, 1, 28, 28), np.float32))
        assert out.shape == (2, 1, 28, 28)
    assert "mnist-unet" not in registry.with_codes() or not registry.get("mnist-unet").has_code


def test_unknown_model_lists_the_known_ones(one_model: tuple[Path, Path]) -> None:
    registry = _load(*one_model)
    with pytest.raises(
        UnknownModel, match=re.escape(f"unknown model 'nope'; known models: {one_model[1].name}")
    ):
        registry.get("nope")
    assert registry.get().id == one_model[1].name


def test_default_model_must_exist(one_model: tuple[Path, Path]) -> None:
    with pytest.raises(ModelError, match="AE_DEFAULT_DENOISE_MODEL='absent'"):
        load_registry(one_model[0], default_model="absent", device="cpu")


def test_default_code_model_must_exist_and_have_a_code(models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    for name in ("mnist-denoise", "mnist-unet"):
        shutil.copytree(models_dir / name, root / name)
    with pytest.raises(ModelError, match="AE_DEFAULT_CODE_MODEL='absent' is not among"):
        load_registry(root, "mnist-unet", "absent", device="cpu")
    with pytest.raises(
        ModelError, match=r"AE_DEFAULT_CODE_MODEL='mnist-unet' has no latent code .*: mnist-denoise$"
    ):
        load_registry(root, "mnist-unet", "mnist-unet", device="cpu")
    registry = load_registry(root, "mnist-unet", "mnist-denoise", device="cpu")
    assert (registry.get().id, registry.default_code_model) == ("mnist-unet", "mnist-denoise")


def test_missing_models_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ModelError, match=re.escape(f"{tmp_path / 'nowhere'}: models directory does not exist")
    ):
        load_registry(tmp_path / "nowhere", default_model="x")


def test_empty_models_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model directories"):
        load_registry(tmp_path, default_model="x")


def test_hidden_directories_are_skipped(one_model: tuple[Path, Path]) -> None:
    root, model_dir = one_model
    (root / ".mnist-unet.tmp").mkdir()  # an export in progress
    assert _load(root, model_dir).ids == [model_dir.name]


def test_missing_graph_file_is_named(one_model: tuple[Path, Path]) -> None:
    root, model_dir = one_model
    (model_dir / "decoder.onnx").unlink()
    with pytest.raises(ModelError, match=re.escape(f"{model_dir / 'decoder.onnx'}: missing")):
        _load(root, model_dir)


def test_sha256_mismatch_is_named(one_model: tuple[Path, Path]) -> None:
    root, model_dir = one_model
    with (model_dir / "encoder.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match=re.escape(f"{model_dir / 'encoder.onnx'}: sha256 mismatch")):
        _load(root, model_dir)


def test_corrupt_onnx_is_named(one_model: tuple[Path, Path]) -> None:
    root, model_dir = one_model
    path = model_dir / "autoencoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])  # truncated, with a card that matches it
    _rehash(model_dir, "autoencoder.onnx")
    with pytest.raises(ModelError, match=re.escape(f"{path}: onnxruntime cannot load it")):
        _load(root, model_dir)


def test_missing_card_is_named(one_model: tuple[Path, Path]) -> None:
    root, model_dir = one_model
    (model_dir / "card.json").unlink()
    with pytest.raises(ModelError, match=re.escape(f"{model_dir / 'card.json'}: missing")):
        _load(root, model_dir)


def test_unparseable_card_is_named(one_model: tuple[Path, Path]) -> None:
    root, model_dir = one_model
    (model_dir / "card.json").write_text("{not json")
    with pytest.raises(ModelError, match=re.escape(f"{model_dir / 'card.json'}: not readable JSON")):
        _load(root, model_dir)


def test_card_id_must_match_the_directory(one_model: tuple[Path, Path]) -> None:
    root, model_dir = one_model
    card = _card(model_dir)
    card["id"] = "other"
    _write_card(model_dir, card)
    with pytest.raises(ModelError, match="id 'other' differs from the directory name"):
        _load(root, model_dir)


def test_graphs_must_match_the_code_shape(one_model: tuple[Path, Path]) -> None:
    root, model_dir = one_model
    card = _card(model_dir)
    del card["graphs"]["decoder"]
    _write_card(model_dir, card)
    with pytest.raises(
        ModelError, match=r"card.json: graphs must be exactly \['autoencoder', 'decoder', 'encoder'\]"
    ):
        _load(root, model_dir)


def test_graph_file_names_cannot_leave_the_model_dir(one_model: tuple[Path, Path]) -> None:
    root, model_dir = one_model
    card = _card(model_dir)
    card["graphs"]["encoder"] = "../encoder.onnx"
    _write_card(model_dir, card)
    with pytest.raises(ModelError, match="must be a plain file name"):
        _load(root, model_dir)


def test_code_shape_must_match_the_graphs(one_model: tuple[Path, Path]) -> None:
    root, model_dir = one_model
    card = _card(model_dir)
    card["code_shape"] = [7]
    _write_card(model_dir, card)
    with pytest.raises(
        ModelError, match=r"autoencoder.onnx: metadata code_shape is .*; card.json says \[7\]"
    ):
        _load(root, model_dir)


def _identity_graph(path: Path, model_id: str, input_name: str, output_name: str, batch: str | int) -> None:
    shape = [batch, 1, 28, 28]
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], [output_name])],
        "g",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"model_id": model_id, "arch": "unet", "code_shape": "null"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)


def _unet_dir(
    root: Path, input_name: str = "image", output_name: str = "denoised", batch: str | int = "batch"
) -> Path:
    model_dir = root / "tiny-unet"
    model_dir.mkdir(parents=True)
    _identity_graph(model_dir / "autoencoder.onnx", "tiny-unet", input_name, output_name, batch)
    digest = hashlib.sha256((model_dir / "autoencoder.onnx").read_bytes()).hexdigest()
    card = {
        "id": "tiny-unet",
        "arch": "unet",
        "code_shape": None,
        "graphs": {"autoencoder": "autoencoder.onnx"},
        "sha256": {"autoencoder.onnx": digest},
    }
    _write_card(model_dir, card)
    return model_dir


def test_a_conforming_unet_graph_loads(tmp_path: Path) -> None:
    model_dir = _unet_dir(tmp_path)
    model = _load(tmp_path, model_dir).get()
    assert not model.has_code and model.code_shape is None


def test_wrong_output_name_is_named(tmp_path: Path) -> None:
    model_dir = _unet_dir(tmp_path, output_name="output")
    with pytest.raises(
        ModelError,
        match=r"autoencoder.onnx: output is 'output' .*; expected 'denoised' float32 \[batch, 1, 28, 28\]",
    ):
        _load(tmp_path, model_dir)


def test_fixed_batch_axis_is_refused(tmp_path: Path) -> None:
    model_dir = _unet_dir(tmp_path, batch=1)
    with pytest.raises(ModelError, match=r"autoencoder\.onnx: input is 'image'"):
        _load(tmp_path, model_dir)


def test_metadata_must_name_the_model(tmp_path: Path) -> None:
    model_dir = _unet_dir(tmp_path)
    _identity_graph(model_dir / "autoencoder.onnx", "someone-else", "image", "denoised", "batch")
    _rehash(model_dir, "autoencoder.onnx")
    with pytest.raises(ModelError, match="metadata model_id is 'someone-else'"):
        _load(tmp_path, model_dir)


def test_a_bad_model_dir_is_skipped_at_start_up_and_named_once(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "models"
    for model_id in ("mnist-denoise", "mnist-s2d"):
        shutil.copytree(models_dir / model_id, root / model_id, ignore=shutil.ignore_patterns("report"))
    (root / "mnist-denoise" / "card.json").write_text("{")
    with caplog.at_level(logging.ERROR, logger="service.registry"):
        registry = load_registry(root, "mnist-s2d", None, device="cpu")
    assert registry.ids == ["mnist-s2d"]
    skipped = [r.getMessage() for r in caplog.records if "skipping model directory" in r.getMessage()]
    assert len(skipped) == 1 and f"{root / 'mnist-denoise' / 'card.json'}: not readable JSON" in skipped[0]
    # A reload is strict: the same directory is refused, naming it.
    with pytest.raises(ModelError, match=re.escape(f"{root / 'mnist-denoise' / 'card.json'}")):
        load_registry(root, "mnist-s2d", None, device="cpu", strict=True)
    # A configured default that did not load still stops start-up.
    with pytest.raises(ModelError, match="AE_DEFAULT_CODE_MODEL='mnist-denoise' is not among the loaded"):
        load_registry(root, "mnist-s2d", "mnist-denoise", device="cpu")


def test_no_default_code_model_names_the_models_with_codes(models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(models_dir / "mnist-s2d", root / "mnist-s2d", ignore=shutil.ignore_patterns("report"))
    registry = load_registry(root, "mnist-s2d", None, device="cpu")
    assert registry.default_code_model is None
    assert registry.no_code_reason(None) == (
        "no default model for codes (AE_DEFAULT_CODE_MODEL=none): name one with ?model=; "
        "models with codes: none (every model here is a codeless denoiser)"
    )
    assert "has no latent code" in str(registry.no_code_reason("mnist-s2d"))
    shutil.copytree(
        models_dir / "mnist-denoise", root / "mnist-denoise", ignore=shutil.ignore_patterns("report")
    )
    both = load_registry(root, "mnist-s2d", None, device="cpu")
    assert "models with codes: mnist-denoise" in str(both.no_code_reason(None))
    assert both.no_code_reason("mnist-denoise") is None


def test_the_autoencoder_role_runs_the_scored_graph_while_scores_are_on(
    models_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    for model_id in ("mnist-s2d", "fashion-denoise"):
        shutil.copytree(models_dir / model_id, root / model_id, ignore=shutil.ignore_patterns("report"))
    on = load_registry(root, "mnist-s2d", None, device="cpu")
    off = load_registry(root, "mnist-s2d", None, device="cpu", scored=False)
    scored, plain = on.get("mnist-s2d").graphs["autoencoder"], off.get("mnist-s2d").graphs["autoencoder"]
    assert on.get("mnist-s2d").scored and scored.path.name == "scored.onnx"
    assert [o.name for o in scored.outputs] == ["denoised", "ood_percentile"]
    assert not off.get("mnist-s2d").scored and plain.path.name == "autoencoder.onnx"
    # fashion-denoise's /denoise view also reads the code, which the graph does not have.
    assert not on.get("fashion-denoise").scored
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    assert np.allclose(scored.run(x), plain.run(x), atol=1e-6, rtol=0)


def test_a_scored_graph_without_the_percentile_output_is_refused(models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    model_dir = root / "mnist-s2d"
    shutil.copytree(models_dir / "mnist-s2d", model_dir, ignore=shutil.ignore_patterns("report"))
    shutil.copyfile(model_dir / "autoencoder.onnx", model_dir / "scored.onnx")  # no ood_percentile
    card = _card(model_dir)
    card["ood"]["graph"]["sha256"] = hashlib.sha256((model_dir / "scored.onnx").read_bytes()).hexdigest()
    _write_card(model_dir, card)
    with pytest.raises(
        ModelError, match=re.escape("outputs after 'denoised' are []; expected ['ood_percentile']")
    ):
        load_registry(root, "mnist-s2d", None, device="cpu", strict=True)
    assert not load_registry(root, "mnist-s2d", None, device="cpu", scored=False).get("mnist-s2d").scored


def test_a_stale_scored_graph_is_passed_over_with_a_warning(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy whose autoencoder graph changed (here: its metadata names the copy) without
    rebuilding scored.onnx is served through autoencoder.onnx, its scores from numpy."""
    root = tmp_path / "models"
    model_dir = root / "mnist-copy"
    shutil.copytree(models_dir / "mnist-s2d", model_dir, ignore=shutil.ignore_patterns("report"))
    graph = onnx.load(model_dir / "autoencoder.onnx")
    for prop in graph.metadata_props:
        if prop.key == "model_id":
            prop.value = "mnist-copy"
    onnx.save(graph, model_dir / "autoencoder.onnx")
    card = _card(model_dir)
    card["id"] = "mnist-copy"
    _write_card(model_dir, card)
    _rehash(model_dir, "autoencoder.onnx")
    with caplog.at_level(logging.WARNING, logger="service.registry"):
        model = load_registry(root, "mnist-copy", None, device="cpu", strict=True).get("mnist-copy")
    assert not model.scored and model.graphs["autoencoder"].path.name == "autoencoder.onnx"
    assert model.ood is not None and model.ood.graph is not None
    warned = [r.getMessage() for r in caplog.records if "not using its scored graph" in r.getMessage()]
    assert len(warned) == 1 and "built from another autoencoder.onnx" in warned[0]


@pytest.mark.parametrize("dot_products", [True, False, None])
def test_an_int8_model_on_a_cpu_without_dot_products_is_named_at_start_up(
    models_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    dot_products: bool | None,
) -> None:
    """The shipped int8 variant loads and serves on any CPU; where the CPU lacks the 8-bit dot
    products (here: as /proc/cpuinfo would say), start-up says it gains nothing over float."""
    root = tmp_path / "models"
    shutil.copytree(
        models_dir / "mnist-s2d-int8", root / "mnist-s2d-int8", ignore=shutil.ignore_patterns("report")
    )
    monkeypatch.setattr("service.registry.int8_dot_products", lambda: dot_products)
    with caplog.at_level(logging.WARNING, logger="service.registry"):
        model = load_registry(root, "mnist-s2d-int8", None, device="cpu").get("mnist-s2d-int8")
    out = model.graphs["autoencoder"].run(np.full((1, 1, 28, 28), 0.5, np.float32))
    assert out.shape == (1, 1, 28, 28) and np.isfinite(out).all()
    warned = [r.getMessage() for r in caplog.records if "is int8" in r.getMessage()]
    if dot_products is False:
        assert len(warned) == 1 and "no faster here than its float model mnist-s2d" in warned[0]
    else:  # it has them, or nothing says (not Linux): no warning
        assert warned == []
