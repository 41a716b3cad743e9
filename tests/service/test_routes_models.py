"""GET /models and /models/{id}: the shipped cards, with the provider in use."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient


def test_models_lists_every_shipped_card(client: TestClient, models_dir: Path) -> None:
    cards = client.get("/models").json()
    shipped = {
        d.name: json.loads((d / "card.json").read_text())
        for d in models_dir.iterdir()
        if (d / "card.json").is_file()
    }
    assert [c["id"] for c in cards] == sorted(shipped)
    for card in cards:
        for key, value in shipped[card["id"]].items():
            assert card[key] == value
        assert card["provider"] == "CPUExecutionProvider"
        # /denoise defaults to the best denoiser, /encode and /decode to the blind autoencoder.
        assert card["default"] == (card["id"] == "mnist-s2d")
        assert card["default_for"] == {"mnist-s2d": ["denoise"], "mnist-denoise": ["encode", "decode"]}.get(
            card["id"], []
        )


def test_one_model_by_id(client: TestClient) -> None:
    card = client.get("/models/mnist-conv").json()
    assert card["id"] == "mnist-conv" and card["code_shape"] == [8, 4, 4]
    assert card["default"] is False and card["default_for"] == []


def test_unknown_model_is_404(client: TestClient) -> None:
    r = client.get("/models/nope")
    assert r.status_code == 404 and r.json()["detail"].startswith("unknown model 'nope'; known models: ")


def test_every_card_says_which_noise_its_model_was_made_for(client: TestClient, models_dir: Path) -> None:
    for card in client.get("/models").json():
        shipped = json.loads((models_dir / card["id"] / "card.json").read_text())
        if "noise" in shipped:  # written by training since noise models exist
            assert card["noise"] == shipped["noise"]
            continue
        # Older cards: Gaussian over the range of s the card's training config names.
        train = shipped["config"]["train"]
        assert card["noise"]["kind"] == "gaussian" and card["noise"]["kinds"] == ["gaussian"]
        assert card["noise"]["levels"]["gaussian"]["range"] == [train["noise_min"], train["noise_max"]]
