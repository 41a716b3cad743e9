"""Domain errors → HTTP responses, all as JSON ``{"detail": ...}``.

The modules below the routes raise their own exceptions (imaging, registry, batching know nothing
of HTTP); this is the one place that decides their status codes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from service import imaging
from service.batching import BatcherClosed, QueueFull
from service.registry import UnknownModel
from service.state import ServiceState

_STATUS: dict[type[Exception], int] = {
    imaging.UndecodableImage: 400,
    UnknownModel: 404,
    imaging.ImageTooLarge: 413,
    imaging.WrongImageSize: 422,
}


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _client_error(request: Request, exc: Exception) -> Response:
    status = next(code for kind, code in _STATUS.items() if isinstance(exc, kind))
    return _json(status, str(exc))


async def _queue_full(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QueueFull)
    state: ServiceState = request.app.state.service
    state.metrics.rejections.labels("queue_full").inc()
    return _json(503, str(exc), {"Retry-After": str(exc.retry_after)})


async def _closed(request: Request, exc: Exception) -> Response:
    return _json(503, f"service is shutting down ({exc})", {"Retry-After": "1"})


def install_error_handlers(app: FastAPI) -> None:
    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
        kind: _client_error for kind in _STATUS
    }
    handlers[QueueFull] = _queue_full
    handlers[BatcherClosed] = _closed
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
