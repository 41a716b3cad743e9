"""The figures that README.md and docs/api.md quote from the model cards, checked against the cards.

A card changes when a model is retrained, exported or evaluated again; these tests fail until the
docs say what the cards say (the failure shows the line as it should read).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from tests.conftest import MODELS_DIR, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
API = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
QUALITY_ROW = re.compile(
    r"^\| (?:\*\*)?`(?P<id>[a-z0-9-]+)`(?:\*\*)? \((?P<n>\d+)\) \|(?P<cells>.*)\|$", re.M
)


def _card(model_id: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((MODELS_DIR / model_id / "card.json").read_text())
    return card


def _cells(metrics: dict[str, Any]) -> str:
    pairs = zip(metrics["psnr"], metrics["ssim"], strict=True)
    return " " + " | ".join(f"{p:.2f} / {q:.3f}" for p, q in pairs) + " "


def _readme_rows() -> dict[str, re.Match[str]]:
    return {m["id"]: m for m in QUALITY_ROW.finditer(README)}


def test_the_readme_quality_table_lists_models() -> None:
    assert len(_readme_rows()) >= 6


@pytest.mark.parametrize("model_id", sorted(_readme_rows()))
def test_each_readme_quality_row_is_what_the_card_says(model_id: str) -> None:
    row = _readme_rows()[model_id]
    metrics = _card(model_id)["metrics"]
    assert metrics["noise_levels"] == [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    expected = f"| `{model_id}` ({metrics['test_images']}) |{_cells(metrics)}|"
    assert (int(row["n"]), row["cells"]) == (metrics["test_images"], _cells(metrics)), expected


@pytest.mark.parametrize("dataset", ["mnist5k", "fashion"])
def test_the_readme_noisy_input_rows_are_the_baseline_cache(dataset: str) -> None:
    cache = json.loads((ROOT / "docs" / "evaluation" / f"baselines-{dataset}.json").read_text())
    line = next(x for x in README.splitlines() if x.startswith(f"| {dataset}: noisy input |"))
    expected = f"| {dataset}: noisy input |{_cells(cache['methods']['noisy'])}|"
    assert line == expected


def test_the_code_range_docs_api_quotes_is_the_cards() -> None:
    model = Settings.model_fields["default_code_model"].default
    assert model == "mnist-denoise"
    code_range = _card(model)["code_range"]
    low, high = code_range["min"], code_range["max"]
    width = high - low
    accepted = (low - width, high + width)
    short = (
        f"`[{accepted[0]:.1f}, {accepted[1]:.1f}]` for `{model}`, "
        f"whose training codes span `[{low:.2f}, {high:.2f}]`"
    )
    assert short in " ".join(API.split()), short
    # The service's own words (service/intake.py, check_values and code_array).
    long = (
        f"it takes values in [{accepted[0]:.4g}, {accepted[1]:.4g}] for model {model}: "
        f"its training codes span [{low:.4g}, {high:.4g}]"
    )
    assert long in API, long


def test_the_settings_table_of_docs_api_gives_each_default_as_the_code_does() -> None:
    rows = dict(re.findall(r"^\| `AE_([A-Z_]+)` \| `([^`]*)`", API, re.M))
    assert len(rows) >= 15
    checked = 0
    for name, shown in rows.items():
        field = Settings.model_fields.get(name.lower())
        if field is None or field.default is None or isinstance(field.default, Path):
            continue
        default = field.default
        value = str(default).lower() if isinstance(default, bool) else str(default)
        if isinstance(default, float) and default.is_integer():
            value = str(int(default))
        assert shown == value, f"AE_{name}: docs/api.md says {shown!r}, service/config.py {value!r}"
        checked += 1
    assert checked >= 15
