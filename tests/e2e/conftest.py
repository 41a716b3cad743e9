"""Fixtures for the end-to-end tests that need a container engine (marker ``container``).

Where no engine answers, these tests skip with the reason; with ``REQUIRE_CONTAINERS=1`` (set by
``.ci/run``) they fail instead, so CI can never pass them by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The compose file's own variables, set here so that a developer's shell cannot change what the
# tests build, publish or pass to the service.
TEST_IMAGE = "ae-denoise:e2e"
TEST_LB_IMAGE = "ae-denoise-lb:e2e"
UP_TIMEOUT_S = 900  # a first build on a fresh machine downloads the runtime dependencies
WAIT_TIMEOUT_S = 180


def _engine_problem() -> str | None:
    """Why no container engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    for cmd in (["docker", "info", "--format", "{{.ServerVersion}}"], ["docker", "compose", "version"]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` timed out"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            return f"`{' '.join(cmd[:2])}` failed: {last}"
    return None


def _skip_or_fail(problem: str) -> None:
    msg = (
        f"needs a container engine ({problem}); `make test-containers` starts this machine's engine "
        "and runs these tests (docs/deployment.md), or point DOCKER_HOST at any Docker engine"
    )
    if os.environ.get("REQUIRE_CONTAINERS") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def container_engine() -> None:
    """Skip (or, under REQUIRE_CONTAINERS=1, fail) unless a Docker engine and compose answer."""
    problem = _engine_problem()
    if problem:
        _skip_or_fail(problem)


@pytest.fixture(scope="session")
def compose_cli() -> None:
    """`docker compose` is installed (it checks files without an engine)."""
    if shutil.which("docker") is None:
        _skip_or_fail("no docker CLI on PATH")
    done = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        _skip_or_fail("no `docker compose` plugin")


def compose_env(**extra: str) -> dict[str, str]:
    """The process environment without any AE_* variable, plus the test's own settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AE_")}
    env.update(AE_IMAGE=TEST_IMAGE, AE_LB_IMAGE=TEST_LB_IMAGE, AE_PUBLISH="127.0.0.1:")
    env.update(extra)
    return env


@dataclass(frozen=True)
class Stack:
    """A running compose project: its command prefix and environment."""

    base: list[str]
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def url(self, service: str, port: int) -> str:
        """The host address that compose published for ``service``'s container ``port``."""
        address = self.run("port", service, str(port)).stdout.strip().splitlines()[0]
        return f"http://{address}"


ComposeUp = Callable[..., Stack]


@pytest.fixture(scope="module")
def compose_up(container_engine: None) -> Iterator[ComposeUp]:
    """A factory: ``compose_up(services, profiles, extra_files, **env)`` builds and starts a compose
    project and waits until its containers are healthy; every project is torn down when the module
    ends, also after a failure."""
    stacks: list[Stack] = []

    def start(
        services: Sequence[str] = (),
        profiles: Sequence[str] = (),
        extra_files: Sequence[str] = (),
        **env: str,
    ) -> Stack:
        base = ["docker", "compose", "-p", f"aee2e{uuid.uuid4().hex[:8]}"]
        for file in ("docker-compose.yml", *extra_files):
            base += ["-f", str(ROOT / file)]
        for profile in profiles:
            base += ["--profile", profile]
        stack = Stack(base, compose_env(**env))
        stacks.append(stack)  # registered before `up`, so that a failed start is torn down too
        up = stack.run(
            "up",
            "-d",
            "--build",
            "--wait",
            "--wait-timeout",
            str(WAIT_TIMEOUT_S),
            *services,
            timeout=UP_TIMEOUT_S,
            check=False,
        )
        if up.returncode != 0:
            logs = stack.run("logs", "--no-color", "--tail", "60", check=False).stdout
            pytest.fail(
                f"`docker compose up` failed ({up.returncode}):\n{up.stderr[-4000:]}\nlogs:\n{logs[-4000:]}"
            )
        return stack

    try:
        yield start
    finally:
        for stack in stacks:
            stack.run("down", "-v", "--remove-orphans", "--timeout", "20", check=False)
