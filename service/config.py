"""The one settings class: every ``AE_*`` environment variable the service reads.

Settings are read once, by the app factory or ``ae-serve``; nothing reads the environment at
import time, and tests pass a ``Settings(...)`` of their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A checkout keeps the shipped models next to the package: <repo>/models.
_CHECKOUT_MODELS = Path(__file__).resolve().parents[1] / "models"


def _default_models_dir() -> Path:
    """The checkout's ``models/`` when running from one, else ``./models`` (containers set AE_MODELS_DIR)."""
    return _CHECKOUT_MODELS if _CHECKOUT_MODELS.is_dir() else Path("models")


class Settings(BaseSettings):
    """Configuration of one service process; see docs/api.md for the table."""

    # env_ignore_empty: an empty AE_X (e.g. an unset compose variable) means "use the default".
    model_config = SettingsConfigDict(env_prefix="AE_", extra="ignore", frozen=True, env_ignore_empty=True)

    models_dir: Path = Field(default_factory=_default_models_dir)
    # What a request that names no model gets: /denoise (and the demo page) the best denoiser;
    # /encode and /decode the blind autoencoder, which has a code. Both are checked at start-up.
    default_denoise_model: str = "mnist-s2d"
    default_code_model: str = "mnist-denoise"
    # Deprecated: the one default of earlier versions; sets both of the above unless they are set.
    default_model: str | None = None
    device: Literal["auto", "cuda", "cpu"] = "auto"

    # Micro-batching (per graph).
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    # 0: no waiting for company. Batches still fill under load from the requests that queue while
    # the previous batch runs; a wait only delays a request when the server is idle (measured: 1 ms
    # cost a third of the throughput at concurrency 1 and gained nothing at 8 or 64; docs/benchmarks.md).
    max_wait_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    max_queue: int = Field(default=512, ge=1)
    batch_workers: int = Field(default=1, ge=1, le=16)

    # Input limits.
    max_upload_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # 4 MP (2048×2048): eight times a full-HD frame's area cut to what a 28×28 model can use; a
    # photo to shrink is JPEG, decoded at 1/8 scale, so 4 MP of JPEG costs what 64 K pixels do.
    max_pixels: int = Field(default=2048 * 2048, ge=28 * 28)
    max_batch_items: int = Field(default=64, ge=1)
    # Uploads this small (declaring at most 64×64 pixels) decode on the event loop; larger ones in
    # decode threads, whose concurrent allocations share the memory budget (docs/api.md, limits).
    inline_decode_bytes: int = Field(default=8192, ge=0)
    # One thread: large uploads are rare for a 28×28 service, and each decode thread that runs
    # Python-level parsing (Pillow's chunk handlers) competes with the event loop for the GIL.
    decode_workers: int = Field(default=1, ge=1, le=64)
    decode_memory_mb: int = Field(default=128, ge=8)
    decode_queue: int = Field(default=64, ge=1)

    # onnxruntime threads; 0 lets onnxruntime choose (one intra-op thread per core). The default is
    # 1: the event loop needs a core of its own for HTTP work, and these small graphs gain little
    # from splitting an operator; on 2 cores, 1 thread served /denoise faster at every concurrency,
    # for about half the CPU per request (docs/benchmarks.md). Scale with AE_WORKERS or replicas.
    intra_op_threads: int = Field(default=1, ge=0)
    inter_op_threads: int = Field(default=0, ge=0)

    api_key: SecretStr | None = None
    # Fail closed: refuse to start without a key (a deployment that means to have one, deploy/k8s).
    require_api_key: bool = False
    # NoDecode: accept a plain comma-separated list ("https://a, https://b") as well as JSON.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Connections and requests (docs/api.md, "Limits"): every one ends in bounded time and memory.
    # A body must arrive completely within this many seconds of its headers (408, then close).
    body_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # The request line and headers must arrive within this many seconds (408, then close); an idle
    # new connection that sends nothing is closed after the same time.
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # Request line plus headers, in bytes, and the number of header lines (431, then close).
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    max_headers: int = Field(default=100, ge=8, le=10_000)
    # Requests being handled at once (from headers to the end of the response); past it 503 +
    # Retry-After at once. Probes (/healthz, /readyz, /metrics) are never refused.
    max_concurrent_requests: int = Field(default=256, ge=1)
    # Open connections (uvicorn's limit_concurrency); past it uvicorn answers 503 and closes.
    max_connections: int = Field(default=1024, ge=1)
    # Idle keep-alive connections close after this; below the idle timeout of a load balancer in
    # front (deploy/nginx/nginx.conf keeps its upstream connections idle for at most 4 s).
    keep_alive_timeout_s: int = Field(default=5, ge=1, le=3600)
    # On SIGTERM, requests in flight get this long to finish (deploy/k8s adds the preStop pause).
    shutdown_timeout_s: int = Field(default=30, ge=0, le=3600)

    # Every response carries X-Served-By: <this> when set: which replica (and node) answered, for a
    # deployment of several (deploy/ray sets it per replica).
    served_by: str | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _legacy_default(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("default_model"):
            for name in ("default_denoise_model", "default_code_model"):
                data.setdefault(name, data["default_model"])
        return data

    @model_validator(mode="after")
    def _key_when_required(self) -> Settings:
        if self.require_api_key and self.api_key is None:
            raise ValueError("AE_REQUIRE_API_KEY is set but AE_API_KEY is unset or empty")
        return self

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        # AE_API_KEY="" (an unset compose variable) means "no key", not "the empty key".
        return None if value == "" else value
