"""The package layout that the rest of the project relies on."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_runtime_dependencies_exclude_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower()
    assert "torch" not in runtime
    train = project["optional-dependencies"]["train"]
    assert "torch==2.13.0" in train, "torch must be pinned exactly: a range admits a CUDA build"
