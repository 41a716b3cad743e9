"""Domain errors → HTTP responses: the one place that decides status codes and writes error bodies.

Everything below the routes raises its own exceptions (imaging, intake, registry, batching, state,
v2_protocol know nothing of HTTP), and so do the request core's limits. :func:`classify` gives each
its status, message and headers; :func:`error_body` writes the body every error response of the service
has: ``{"detail": ...}`` on the REST routes, the protocol's ``{"error": ...}`` under ``/v2``. The
request core (service/core.py), FastAPI's exception handlers for the other routes and the HTTP
protocol's header-phase refusals (service/protocol.py) all answer through :func:`error_body`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from service import imaging, intake
from service.batching import BatcherClosed, QueueFull
from service.registry import UnknownModel
from service.state import NonFiniteOutput
from service.v2_protocol import ProtocolError

V2_PREFIX = "/v2"


class ServiceError(Exception):
    """An error of the service's own (not of one input): its status travels with it."""

    status = 500
    headers: dict[str, str] = {}  # noqa: RUF012 (read-only class default)
    reason: str | None = None  # what it counts as in ae_rejections_total, if it is a refusal


class NotReady(ServiceError):
    status, headers, reason = 503, {"Retry-After": "1"}, "not_ready"


class Unauthorized(ServiceError):
    status, headers, reason = 401, {"WWW-Authenticate": "Bearer"}, "unauthorized"


class BodyTooLarge(ServiceError):
    status, headers, reason = 413, {"Connection": "close"}, "body_too_large"


class BodyTimeout(ServiceError):
    status, headers, reason = 408, {"Connection": "close"}, "body_timeout"


class TooManyRequests(ServiceError):
    status, headers, reason = 503, {"Retry-After": "1"}, "too_many_requests"


class BodyBufferFull(ServiceError):
    status, headers, reason = 503, {"Retry-After": "1", "Connection": "close"}, "body_buffer_full"


class NotFound(ServiceError):
    status = 404


class BadParameter(ServiceError):
    """A query parameter with a value the route does not take."""

    status = 422


class NoCode(ServiceError):
    """A model without encoder and decoder asked for a code."""

    status = 422


class ReloadFailed(ServiceError):
    """A reload found a model directory it could not load; the old models keep serving."""

    status = 422


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
_REJECTION = {QueueFull: "queue_full", intake.DecodeBusy: "decode_busy"}


@dataclass(frozen=True)
class Failure:
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # the ae_rejections_total label, for refusals


def classify(exc: Exception) -> Failure | None:
    """The response an error deserves, or None for one that is not the client's (a real 500)."""
    if isinstance(exc, ServiceError):
        return Failure(exc.status, str(exc), dict(exc.headers), exc.reason)
    if isinstance(exc, ProtocolError):
        return Failure(exc.status, str(exc))
    if isinstance(exc, QueueFull | intake.DecodeBusy):
        reason = _REJECTION[type(exc)]
        return Failure(503, str(exc), {"Retry-After": str(exc.retry_after)}, reason)
    if isinstance(exc, BatcherClosed):
        return Failure(503, f"service is shutting down ({exc})", {"Retry-After": "1"})
    if isinstance(exc, HTTPException):  # Starlette's own: 404/405 of unknown paths and methods
        return Failure(exc.status_code, str(exc.detail), dict(exc.headers or {}))
    for kind, status in _STATUS.items():
        if isinstance(exc, kind):
            return Failure(status, str(exc))
    return None


def is_v2(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def error_body(message: str, path: str) -> bytes:
    """The JSON body of an error response: ``{"error"}`` under /v2, else ``{"detail"}``."""
    return json.dumps({"error" if is_v2(path) else "detail": message}).encode()


# Every error type :func:`classify` answers, for FastAPI's handlers.
HANDLED: tuple[type[Exception], ...] = (
    *_STATUS,
    ServiceError,
    ProtocolError,
    QueueFull,
    intake.DecodeBusy,
    BatcherClosed,
    HTTPException,
)


async def _handle(request: Request, exc: Exception) -> Response:
    failure = classify(exc)
    if failure is None:  # pragma: no cover - HANDLED lists only classified types
        raise exc
    if failure.reason is not None:
        request.app.state.service.metrics.rejections.labels(failure.reason).inc()
    body = error_body(failure.message, request.url.path)
    return Response(body, failure.status, failure.headers, media_type="application/json")


async def _invalid_request(request: Request, exc: Exception) -> Response:
    # FastAPI's own validation of a declared parameter (the cold routes): one line, 422.
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    parts = [f"{'.'.join(map(str, e.get('loc', ()))) or 'request'}: {e.get('msg')}" for e in errors[:3]]
    return await _handle(request, BadParameter("; ".join(parts) or "invalid request"))


def install_error_handlers(app: FastAPI) -> None:
    for kind in HANDLED:
        app.add_exception_handler(kind, _handle)
    app.add_exception_handler(RequestValidationError, _invalid_request)
