"""The KServe and KubeRay manifests match their published CRD schemas, strictly, and each other.

The schemas are the projects' own CustomResourceDefinitions, stored in deploy/k8s/schemas (where
from: its README.md); nothing is fetched here. Kubernetes prunes fields a structural schema does not
know instead of refusing them, so a misspelt field would vanish silently on a cluster: these tests
refuse unknown fields wherever the schema lists the known ones.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.e2e.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
CRD_DIRS = [K8S / "kserve", K8S / "kuberay"]
MANIFESTS = sorted(p for d in CRD_DIRS for p in d.glob("*.yaml") if p.name != "kustomization.yaml")
SERVE_YAML = ROOT / "deploy" / "ray" / "serve.yaml"


def _strict(node: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it lists properties and keeps no others."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields", False)
    ):
        out["additionalProperties"] = False
    return out


@cache
def _schemas() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in SCHEMAS.glob("*.json"):
        document = json.loads(path.read_text())
        api_version = f"{document['group']}/{document['version']}"
        found[(api_version, document["kind"])] = _strict(document["openAPIV3Schema"])
    return found


def _validate(resource: dict[str, Any]) -> None:
    key = (resource["apiVersion"], resource["kind"])
    schema = _schemas().get(key)
    if schema is None:
        pytest.fail(f"no stored schema for {key}: add it to deploy/k8s/schemas (README.md there)")
    jsonschema.Draft7Validator(schema).validate(resource)


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _one(name: str) -> dict[str, Any]:
    (resource,) = _load(next(p for p in MANIFESTS if p.name == name))
    return resource


def test_the_schemas_are_stored_for_every_kind() -> None:
    assert set(_schemas()) == {
        ("serving.kserve.io/v1alpha1", "ServingRuntime"),
        ("serving.kserve.io/v1beta1", "InferenceService"),
        ("ray.io/v1", "RayService"),
    }


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_manifest_matches_its_published_crd_schema(manifest: Path) -> None:
    resources = _load(manifest)
    assert resources, f"{manifest} holds no resource"
    for resource in resources:
        _validate(resource)


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("inferenceservice.yaml", ("spec", "predictor", "modle"), {"runtime": "x"}),
        ("servingruntime.yaml", ("spec", "containers", 0, "readinessProbe", "httpGett"), {}),
        ("rayservice.yaml", ("spec", "rayClusterConfig", "headGroupSpec", "rayStartParam"), {}),
    ],
)
def test_a_misspelt_field_is_refused(name: str, path: tuple[str | int, ...], value: object) -> None:
    resource = copy.deepcopy(_one(name))
    node: Any = resource
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match="Additional properties are not allowed"):
        _validate(resource)


@pytest.mark.parametrize("directory", CRD_DIRS, ids=lambda p: p.name)
def test_kustomization_lists_every_manifest(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    on_disk = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


def test_inference_service_uses_the_runtime_over_v2_without_knative() -> None:
    isvc, runtime = _one("inferenceservice.yaml"), _one("servingruntime.yaml")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2" and "v2" in runtime["spec"]["protocolVersions"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_serving_runtime_probes_the_v2_health_routes_on_the_served_port() -> None:
    (container,) = _one("servingruntime.yaml")["spec"]["containers"]
    (port,) = container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert port["containerPort"] == int(env["AE_PORT"])
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/v2/health/ready",
        "port": port["containerPort"],
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port["containerPort"]}
    assert container["resources"]["requests"] == container["resources"]["limits"]


def test_rayservice_serves_the_same_application_as_deploy_ray() -> None:
    spec = _one("rayservice.yaml")["spec"]
    embedded = yaml.safe_load(spec["serveConfigV2"])
    local = yaml.safe_load(SERVE_YAML.read_text())
    (served,) = embedded["applications"]
    (ours,) = local["applications"]
    assert served["import_path"] == ours["import_path"]
    assert served["deployments"] == ours["deployments"]
    # On Kubernetes the models are in the image, not in a checkout: only the models dir may differ.
    differ = {
        k
        for k in set(served["runtime_env"]["env_vars"]) | set(ours["runtime_env"]["env_vars"])
        if served["runtime_env"]["env_vars"].get(k) != ours["runtime_env"]["env_vars"].get(k)
    }
    assert differ <= {"AE_MODELS_DIR"}, differ


def test_rayservice_head_takes_no_replicas_and_workers_fit_one_replica_each() -> None:
    cluster = _one("rayservice.yaml")["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (deployment,) = yaml.safe_load(SERVE_YAML.read_text())["applications"][0]["deployments"]
    per_replica = float(deployment["ray_actor_options"]["num_cpus"])
    for group in cluster["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        cpus = float(container["resources"]["limits"]["cpu"])
        assert cpus >= per_replica * deployment["max_replicas_per_node"], group["groupName"]
