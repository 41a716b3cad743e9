"""contract/card.py: the artifact contract that export writes through and the registry reads through."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from contract import card as cards


def _identity_graph(path: Path, model_id: str, code_shape: list[int] | None) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["denoised"])],
        "identity",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("denoised", TensorProto.FLOAT, ["batch", 1, 28, 28])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"model_id": model_id, "arch": "s2d", "code_shape": json.dumps(code_shape)})
    onnx.save(model, path)


def _codeless_dir(root: Path, model_id: str = "mnist-tiny") -> tuple[Path, dict[str, Any]]:
    model_dir = root / model_id
    model_dir.mkdir(parents=True)
    _identity_graph(model_dir / "autoencoder.onnx", model_id, None)
    card = {
        "id": model_id,
        "arch": "s2d",
        "dataset": "mnist5k",
        "code_shape": None,
        "graphs": {"autoencoder": "autoencoder.onnx"},
        "sha256": {"autoencoder.onnx": cards.sha256(model_dir / "autoencoder.onnx")},
    }
    return model_dir, card


def test_a_codeless_card_is_written_readable_by_others_and_read_back(tmp_path: Path) -> None:
    model_dir, card = _codeless_dir(tmp_path)
    cards.write_card(model_dir, card)
    path = model_dir / "card.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert cards.read_card(model_dir) == card == cards.check_model_dir(model_dir)
    assert [p.name for p in model_dir.iterdir() if p.name.startswith(".")] == []


def test_a_code_shape_with_only_the_autoencoder_graph_is_refused_and_nothing_written(tmp_path: Path) -> None:
    model_dir, card = _codeless_dir(tmp_path)
    card["code_shape"] = [16, 4, 4]
    with pytest.raises(
        cards.CardError, match=re.escape("graphs must be exactly ['autoencoder', 'decoder', 'encoder']")
    ):
        cards.write_card(model_dir, card)
    assert not (model_dir / "card.json").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"code_shape": [0, 4]}, "code_shape must be a list of positive integers or null"),
        ({"code_shape": [True]}, "code_shape must be a list of positive integers or null"),
        ({"id": ""}, "field 'id' missing or not a non-empty str"),
        ({"graphs": ["autoencoder.onnx"]}, "field 'graphs' missing or not a dict"),
        ({"graphs": {"autoencoder": "../x.onnx"}}, "must be a plain file name"),
        ({"sha256": {}}, "no sha256 for autoencoder.onnx"),
        ({"code_range": {"min": 0.0, "max": 1.0}}, "code_range given for a model without a code"),
    ],
)
def test_each_breach_of_the_contract_is_named(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    _, card = _codeless_dir(tmp_path)
    with pytest.raises(cards.CardError, match=re.escape(message)):
        cards.check_card({**card, **change}, "card.json")


def test_a_missing_code_shape_is_refused(tmp_path: Path) -> None:
    _, card = _codeless_dir(tmp_path)
    del card["code_shape"]
    with pytest.raises(cards.CardError, match="field 'code_shape' missing"):
        cards.check_card(card)


def test_a_code_range_must_be_ordered_and_finite() -> None:
    card = {
        "id": "m",
        "arch": "denoise",
        "code_shape": [2],
        "graphs": {r: f"{r}.onnx" for r in cards.ROLES},
        "sha256": {f"{r}.onnx": "0" * 64 for r in cards.ROLES},
    }
    assert cards.check_card({**card, "code_range": {"min": -1, "max": 2.5}})
    for bad in ({"min": 2, "max": 1}, {"min": float("nan"), "max": 1}, {"min": 0}):
        with pytest.raises(cards.CardError, match="code_range must be"):
            cards.check_card({**card, "code_range": bad})


def test_a_graph_that_differs_from_its_sha256_is_named(tmp_path: Path) -> None:
    model_dir, card = _codeless_dir(tmp_path)
    cards.write_card(model_dir, card)
    graph = model_dir / "autoencoder.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(cards.CardError, match=re.escape(f"{graph}: sha256 mismatch")):
        cards.check_model_dir(model_dir)
    with pytest.raises(cards.CardError, match="sha256 mismatch"):
        cards.write_card(model_dir, card)


def test_a_served_card_is_named_after_its_directory(tmp_path: Path) -> None:
    model_dir, card = _codeless_dir(tmp_path, "run-output")
    card["id"] = "mnist-s2d"
    cards.write_card(model_dir, card)  # a run's output may live anywhere
    assert cards.read_card(model_dir, served=False)["id"] == "mnist-s2d"
    with pytest.raises(cards.CardError, match="id 'mnist-s2d' differs from the directory name 'run-output'"):
        cards.read_card(model_dir)


def test_update_card_keeps_the_graphs_and_refuses_a_breach(tmp_path: Path) -> None:
    model_dir, card = _codeless_dir(tmp_path)
    cards.write_card(model_dir, card)
    updated = cards.update_card(model_dir, metrics={"psnr": [30.0]})
    assert updated["metrics"] == {"psnr": [30.0]} and updated["sha256"] == card["sha256"]
    before = (model_dir / "card.json").read_bytes()
    with pytest.raises(cards.CardError, match="code_range given for a model without a code"):
        cards.update_card(model_dir, code_range={"min": 0.0, "max": 1.0})
    assert (model_dir / "card.json").read_bytes() == before


def test_graph_io_and_metadata_follow_the_contract(tmp_path: Path) -> None:
    assert cards.graph_io("encoder", [16, 4, 4]) == (("image", (1, 28, 28)), ("code", (16, 4, 4)))
    assert cards.graph_io("decoder", [16, 4, 4]) == (("code", (16, 4, 4)), ("image", (1, 28, 28)))
    assert cards.graph_io("autoencoder", None) == (("image", (1, 28, 28)), ("denoised", (1, 28, 28)))
    card = {"id": "m", "arch": "s2d", "code_shape": None, "description": "d"}
    meta = cards.graph_metadata(card)
    assert meta == {"model_id": "m", "arch": "s2d", "code_shape": "null", "description": "d"}
    cards.check_metadata(tmp_path, meta, card)
    with pytest.raises(cards.CardError, match="metadata code_shape is '\\[2\\]'"):
        cards.check_metadata(tmp_path, {**meta, "code_shape": "[2]"}, card)
    with pytest.raises(cards.CardError, match="metadata model_id is 'other'"):
        cards.check_metadata(tmp_path, {**meta, "model_id": "other"}, card)


def test_every_shipped_card_keeps_the_contract(models_dir: Path) -> None:
    for card_path in sorted(models_dir.glob("*/card.json")):
        card = cards.check_model_dir(card_path.parent)
        assert card["id"] == card_path.parent.name
