"""Domain errors → HTTP responses: the one place that decides their status codes.

The modules below the routes raise their own exceptions (imaging, intake, registry, batching,
state know nothing of HTTP). :func:`classify` gives each its status, message and headers; the REST
routes answer ``{"detail": ...}`` (:func:`install_error_handlers`) and the v2 routes answer the
protocol's ``{"error": ...}`` (service/routes/v2.py) from the same classification.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response

from service import imaging, intake
from service.batching import BatcherClosed, QueueFull
from service.registry import UnknownModel
from service.state import NonFiniteOutput, ServiceState
from service.v2_protocol import ProtocolError

_STATUS: dict[type[Exception], int] = {
    imaging.UndecodableImage: 400,
    intake.MalformedBody: 400,
    UnknownModel: 404,
    imaging.ImageTooLarge: 413,
    intake.UnsupportedMediaType: 415,
    imaging.WrongImageSize: 422,
    intake.InvalidInput: 422,
    NonFiniteOutput: 422,
}
# What each refusal counts as in ae_rejections_total.
_REJECTION = {QueueFull: "queue_full", intake.DecodeBusy: "decode_busy"}


@dataclass(frozen=True)
class Failure:
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def classify(exc: Exception) -> Failure | None:
    """The response an error deserves, or None for one that is not the client's (a real 500)."""
    if isinstance(exc, HTTPException):  # readiness, API key, body limit, FastAPI's own
        return Failure(exc.status_code, str(exc.detail), dict(exc.headers or {}))
    if isinstance(exc, ProtocolError):
        return Failure(exc.status, str(exc))
    if isinstance(exc, QueueFull | intake.DecodeBusy):
        return Failure(503, str(exc), {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, BatcherClosed):
        return Failure(503, f"service is shutting down ({exc})", {"Retry-After": "1"})
    for kind, status in _STATUS.items():
        if isinstance(exc, kind):
            return Failure(status, str(exc))
    return None


def count_rejection(request: Request, exc: Exception) -> None:
    for kind, reason in _REJECTION.items():
        if isinstance(exc, kind):
            state: ServiceState = request.app.state.service
            state.metrics.rejections.labels(reason).inc()


# Every error type :func:`classify` answers, for the handlers and the v2 route.
HANDLED: tuple[type[Exception], ...] = (
    *_STATUS,
    ProtocolError,
    QueueFull,
    intake.DecodeBusy,
    BatcherClosed,
)


async def _handle(request: Request, exc: Exception) -> Response:
    failure = classify(exc)
    assert failure is not None
    count_rejection(request, exc)
    return JSONResponse({"detail": failure.message}, status_code=failure.status, headers=failure.headers)


def install_error_handlers(app: FastAPI) -> None:
    handler: Callable[[Request, Exception], Awaitable[Response]] = _handle
    for kind in HANDLED:
        app.add_exception_handler(kind, handler)
