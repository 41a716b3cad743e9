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


def _pins(lock: Path) -> dict[str, str]:
    """``name: version`` of every ``name==version`` line of a lock (names normalised)."""
    import re

    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^ ;\\]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def test_the_locks_pin_every_declared_dependency_within_its_range() -> None:
    """requirements/*.txt are refreshed with pyproject.toml (`make lock`); torch alone is not hashed."""
    import re

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    locks = {
        "service.txt": project["dependencies"],
        "dev.txt": [*project["dependencies"], *extras["train"], *extras["dev"], *extras["ray"]],
    }
    for name, declared in locks.items():
        lock = ROOT / "requirements" / name
        pins = _pins(lock)
        assert "torch" not in pins, f"{name}: torch is installed by version, not from the lock"
        for text in declared:
            req = Requirement(text)
            key = re.sub(r"[-_.]+", "-", req.name).lower()
            if key == "torch":
                continue
            assert key in pins, f"{name} lacks {req.name}: run make lock"
            within = req.specifier.contains(pins[key], prereleases=True)
            assert within, f"{name}: {key}=={pins[key]} vs {text}"
        assert lock.read_text().count("--hash=sha256:") >= len(pins), f"{name}: every pin needs its hashes"
