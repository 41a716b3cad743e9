"""service.config: the AE_* environment, parsed once into Settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings


def test_defaults_serve_the_checkout_models(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AE_MODELS_DIR", "AE_DEFAULT_MODEL", "AE_DEVICE", "AE_API_KEY", "AE_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AE_DEFAULT_DENOISE_MODEL", "AE_DEFAULT_CODE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.models_dir == Path(__file__).resolve().parents[2] / "models"
    assert (s.default_denoise_model, s.default_code_model) == ("mnist-s2d", "mnist-denoise")
    assert (s.device, s.api_key, s.cors_origins) == ("auto", None, [])


def test_the_old_single_default_still_sets_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_DEFAULT_MODEL", "mnist-conv")
    monkeypatch.delenv("AE_DEFAULT_DENOISE_MODEL", raising=False)
    monkeypatch.setenv("AE_DEFAULT_CODE_MODEL", "mnist-dense")
    s = Settings()
    assert (s.default_denoise_model, s.default_code_model) == ("mnist-conv", "mnist-dense")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AE_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("AE_DEVICE", "cpu")
    monkeypatch.setenv("AE_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("AE_MAX_WAIT_MS", "2.5")
    monkeypatch.setenv("AE_API_KEY", "k-9f3a77")
    monkeypatch.setenv("AE_LOG_LEVEL", "WARNING")
    s = Settings()
    assert (s.models_dir, s.device, s.max_batch_size, s.max_wait_ms) == (tmp_path, "cpu", 8, 2.5)
    assert s.api_key is not None and s.api_key.get_secret_value() == "k-9f3a77"
    assert s.log_level == "warning"
    assert "k-9f3a77" not in repr(s)  # the key never shows up in logs or tracebacks


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("https://a.example, https://b.example", ["https://a.example", "https://b.example"]),
        ('["https://a.example"]', ["https://a.example"]),
        ("*", ["*"]),
        ("", []),
    ],
)
def test_cors_origins_accept_a_list_or_json(
    monkeypatch: pytest.MonkeyPatch, raw: str, parsed: list[str]
) -> None:
    monkeypatch.setenv("AE_CORS_ORIGINS", raw)
    assert Settings().cors_origins == parsed


def test_empty_variables_mean_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AE_API_KEY", "AE_MAX_BATCH_SIZE", "AE_DEFAULT_MODEL"):
        monkeypatch.setenv(name, "")  # as compose passes an unset variable
    s = Settings()
    assert (s.api_key, s.max_batch_size, s.default_denoise_model) == (None, 32, "mnist-s2d")


@pytest.mark.parametrize(
    ("name", "value"),
    [("AE_DEVICE", "tpu"), ("AE_MAX_BATCH_SIZE", "0"), ("AE_MAX_QUEUE", "-1"), ("AE_MAX_WAIT_MS", "soon")],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("AE_").lower()):
        Settings()


def test_a_required_api_key_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_REQUIRE_API_KEY", "true")
    monkeypatch.setenv("AE_API_KEY", "")  # as a Secret with an empty value
    with pytest.raises(ValidationError, match="AE_REQUIRE_API_KEY is set but AE_API_KEY is unset or empty"):
        Settings()
    monkeypatch.setenv("AE_API_KEY", "k-1")
    assert Settings().require_api_key


def test_connection_limits_have_their_documented_defaults() -> None:
    s = Settings()
    assert (s.body_timeout_s, s.header_timeout_s, s.keep_alive_timeout_s, s.shutdown_timeout_s) == (
        10,
        10,
        5,
        30,
    )
    assert (s.max_header_bytes, s.max_headers) == (16 * 1024, 100)
    assert (s.max_concurrent_requests, s.max_connections) == (256, 1024)


@pytest.mark.parametrize("value", ["none", "None", " NONE "])
def test_no_default_code_model_is_spelled_none(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AE_DEFAULT_CODE_MODEL", value)
    assert Settings().default_code_model is None
    assert Settings(default_code_model="none").default_code_model is None


def test_the_developers_environment_never_reaches_a_test() -> None:
    import os

    assert not [name for name in os.environ if name.startswith("AE_")]  # tests/conftest.py clears them
