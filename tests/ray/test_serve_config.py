"""deploy/ray/serve.yaml and the RayService's copy of it are valid Serve configs, sized to the batcher.

No cluster here: Ray's own config schema, the app module, and where the ``ray`` extra may appear.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.conftest import ROOT
from tests.ray.conftest import require_ray

# Ray's own config models still use pydantic v1-style Field arguments (a DeprecationWarning).
pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SERVE_YAML = ROOT / "deploy" / "ray" / "serve.yaml"
RAYSERVICE = ROOT / "deploy" / "k8s" / "kuberay" / "rayservice.yaml"


def _configs() -> dict[str, dict[str, Any]]:
    rayservice = yaml.safe_load(RAYSERVICE.read_text())
    return {
        "serve.yaml": yaml.safe_load(SERVE_YAML.read_text()),
        "rayservice": yaml.safe_load(rayservice["spec"]["serveConfigV2"]),
    }


@pytest.mark.parametrize("name", ["serve.yaml", "rayservice"])
def test_config_is_valid_for_ray_serve(name: str) -> None:
    require_ray()
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(_configs()[name])
    (app,) = config.applications
    assert app.import_path == "ae_denoise_ray:app"


@pytest.mark.parametrize("name", ["serve.yaml", "rayservice"])
def test_replica_limits_are_sized_to_the_batcher(name: str) -> None:
    (app,) = _configs()[name]["applications"]
    (deployment,) = app["deployments"]
    env = app["runtime_env"]["env_vars"]
    batch = int(env["AE_MAX_BATCH_SIZE"])
    # One batch running and the next one filling: more only queues inside the replica.
    assert deployment["max_ongoing_requests"] == 2 * batch
    assert deployment["max_queued_requests"] >= deployment["max_ongoing_requests"]
    scaling = deployment["autoscaling_config"]
    assert scaling["target_ongoing_requests"] <= deployment["max_ongoing_requests"]
    assert 2 <= scaling["min_replicas"] <= scaling["max_replicas"]
    # One onnxruntime thread per replica CPU (docs/benchmarks.md, "Tuning").
    assert int(env["AE_INTRA_OP_THREADS"]) == deployment["ray_actor_options"]["num_cpus"]
    assert deployment["max_replicas_per_node"] == 1


def test_each_replica_builds_its_own_app_from_the_service_factory() -> None:
    require_ray()
    import ae_denoise_ray
    from fastapi import FastAPI

    # The builder form: a function Ray calls in each replica, and no app object to pickle.
    assert inspect.isfunction(ae_denoise_ray.build_app)
    assert not [name for name, value in vars(ae_denoise_ray).items() if isinstance(value, FastAPI)]
    assert "create_app(" in inspect.getsource(ae_denoise_ray.build_app)


def test_replica_health_is_the_apps_readiness(models_dir: Path) -> None:
    require_ray()
    import ae_denoise_ray

    from service.main import create_app
    from tests.service.conftest import make_settings

    check_health = ae_denoise_ray.AeDenoise.func_or_class.check_health
    app = create_app(make_settings(models_dir))
    replica = SimpleNamespace(app=app)
    with pytest.raises(RuntimeError, match="not ready"):
        check_health(replica)  # models not loaded yet
    with TestClient(app):  # runs the lifespan: models loaded and warmed up
        check_health(replica)
    with pytest.raises(RuntimeError, match="not ready"):
        check_health(replica)  # stopped


def test_ray_is_an_optional_extra_pinned_to_a_minor_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("ray")]
    (ray,) = project["optional-dependencies"]["ray"]
    assert re.fullmatch(r"ray\[serve\]>=2\.(\d+),<2\.(\d+)", ray), ray
    low, high = map(int, re.findall(r"2\.(\d+)", ray))
    assert high == low + 1
    for extra, deps in project["optional-dependencies"].items():
        if extra != "ray":
            assert not [d for d in deps if d.startswith("ray")], extra
    # make install-dev (and so make test) installs it: requirements/dev.txt locks the ray extra.
    makefile = (ROOT / "Makefile").read_text()
    assert "--extra ray" in makefile and "-r requirements/dev.txt" in makefile
    assert re.search(rf"^ray==2\.{low}\.", (ROOT / "requirements" / "dev.txt").read_text(), re.M)
