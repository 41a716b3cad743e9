"""The app factory, its lifespan, and ``ae-serve``.

Nothing happens at import: ``app`` is created on first access (``uvicorn service.main:app``), and
even then only routes and middleware are built. The models load in the lifespan or, under
``ae-serve``, just before the server starts, so that a broken model directory ends the process
with one clear line instead of a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings
from service.core import EXPOSED_HEADERS, Core
from service.deps import require_api_key
from service.errors import install_error_handlers
from service.logs import configure_logging, uvicorn_log_config
from service.metrics import Metrics
from service.protocol import HttpProtocol, protocol_class
from service.registry import ModelError, Registry, load_registry
from service.routes import WORK_ROUTES, admin, codes, demo, health, images, models, v2
from service.routes import metrics as metrics_routes
from service.state import ServiceState

logger = logging.getLogger("service.main")


def _reload_on_sighup(state: ServiceState) -> bool:
    """SIGHUP reloads the models, as for most daemons; False where no handler can be installed.

    Only an event loop in the main thread can take signals (a test client runs the lifespan in
    another thread), and Windows has no SIGHUP.
    """
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, state.request_reload)
    except (AttributeError, NotImplementedError, RuntimeError, ValueError):
        return False
    return True


# Set by ``ae-serve`` for the worker processes it starts, so that they know they are served by it.
_UNDER_AE_SERVE = "AE_SERVE_PROCESS"


class App(FastAPI):
    """FastAPI with the request core (service/core.py) in front of its own middleware stack.

    Every HTTP request meets the core first; the work endpoints are answered there, everything else
    goes on to FastAPI's stack (its error handling, CORS, the router) as usual.
    """

    def build_middleware_stack(self) -> ASGIApp:
        state: ServiceState = self.state.service
        return Core(super().build_middleware_stack(), state, WORK_ROUTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # HTTP goes straight to the core: FastAPI's own __call__ checks its optional telemetry on
        # every request (about 1 % of the event loop's time), which this service does not use.
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        await self.middleware_stack(scope, receive, send)


def create_app(
    settings: Settings | None = None, registry: Registry | None = None, *, under_ae_serve: bool = False
) -> FastAPI:
    """Build the app; ``registry`` skips loading in the lifespan (``ae-serve`` loads it up front)."""
    settings = settings if settings is not None else Settings()
    configure_logging(settings.log_level)
    if settings.default_model:
        logger.warning(
            "AE_DEFAULT_MODEL is deprecated: set AE_DEFAULT_DENOISE_MODEL and AE_DEFAULT_CODE_MODEL"
        )
    state = ServiceState(settings, Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not (under_ae_serve or os.environ.get(_UNDER_AE_SERVE)):
            logger.warning(
                "not started by ae-serve: the header limits (AE_HEADER_TIMEOUT_S, AE_MAX_HEADER_BYTES, "
                "AE_MAX_HEADERS), the connection cap (AE_MAX_CONNECTIONS), AE_KEEP_ALIVE_TIMEOUT_S and "
                "AE_SHUTDOWN_TIMEOUT_S are the server's business and do not apply; run ae-serve "
                "(docs/api.md, Limits)"
            )
        await state.start(registry)
        hup = _reload_on_sighup(state)
        try:
            yield
        finally:
            if hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await state.stop()

    app = App(
        title="ae-denoise",
        summary="Denoise 28×28 grayscale images and map them to and from compact latent codes.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.service = state
    install_error_handlers(app)
    # CORS for the routes FastAPI answers (preflights included); the core adds the same headers to
    # the work endpoints' answers.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=list(EXPOSED_HEADERS),
        )

    # The work endpoints are answered by the core; FastAPI holds them for the schema. They check the
    # API key themselves, and cannot take router dependencies (RequestOnlyRoute).
    app.include_router(images.router)
    app.include_router(codes.router)
    # Probes and scrapers never need the API key.
    app.include_router(health.router)
    app.include_router(metrics_routes.router)
    protected = [Depends(require_api_key)]
    for router in (models.router, admin.router):
        app.include_router(router, dependencies=protected)
    # v2 applies the API key per route (its health routes stay open); the demo page is public.
    app.include_router(v2.router)
    app.include_router(demo.router)
    return app


app: FastAPI  # declared only: __getattr__ below creates it on first access


def __getattr__(name: str) -> FastAPI:
    """``service.main:app`` (``uvicorn service.main:app``), built on first access (PEP 562).

    So importing this module, as ``ae-serve`` and the tests do, reads no settings at all.
    """
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ae-serve",
        description="Serve the autoencoders over HTTP. Every setting is an AE_* environment variable "
        "(docs/api.md); the options below override the matching ones.",
    )
    parser.add_argument("--host", help="bind address (AE_HOST)")
    parser.add_argument("--port", help="port (AE_PORT)")
    parser.add_argument("--workers", help="worker processes (AE_WORKERS)")
    parser.add_argument("--models-dir", help="directory of <model-id>/ folders (AE_MODELS_DIR)")
    parser.add_argument("--log-level", help="debug, info, warning or error (AE_LOG_LEVEL)")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> None:
    """``ae-serve``: serve with the ``AE_*`` settings; exit 1 with one line if a model is broken."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    # Options become AE_* variables: the one source of settings, inherited by worker processes.
    for name, value in vars(args).items():
        if value is not None:
            os.environ[f"AE_{name.upper()}"] = str(value)
    try:
        settings = Settings()
    except ValidationError as exc:
        sys.stderr.write(f"ae-serve: invalid setting:\n{exc}\n")
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    try:
        registry = load_registry(
            settings.models_dir,
            settings.default_denoise_model,
            settings.default_code_model,
            settings.device,
            settings.intra_op_threads,
            settings.inter_op_threads,
            scored=settings.ood_scores,
        )
    except ModelError as exc:
        logger.error("start-up failed: %s", exc)
        raise SystemExit(1) from None
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # the request core logs one structured line per request
        "log_config": uvicorn_log_config(settings.log_level),
        # No X-Forwarded-* rewriting: nothing here uses the client's address, and the middleware
        # that does it would sit on every request's path.
        "proxy_headers": False,
        # The header limits and the connection cap (idle connections make way for new ones) are in
        # the protocol (service/protocol.py); uvicorn's limit_concurrency would count idle
        # connections against working ones.
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
    }
    if settings.workers == 1:
        http = protocol_class(settings)
        app = create_app(settings, registry, under_ae_serve=True)
        uvicorn.run(app, http=http, **common)  # type: ignore[arg-type]
    else:
        # Each worker process loads its own models; the check above already proved they load.
        # Workers are spawned: they import the protocol by name and read its limits from AE_*.
        del registry
        http_name = f"{HttpProtocol.__module__}:{HttpProtocol.__qualname__}"
        os.environ[_UNDER_AE_SERVE] = "1"
        uvicorn.run("service.main:app", workers=settings.workers, http=http_name, **common)  # type: ignore[arg-type]
