"""Pure ASGI middleware: request ids, access log and HTTP metrics; the request-body size limit.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, and the body limit can
count bytes as they arrive instead of after buffering them.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

access_log = logging.getLogger("service.access")
logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
SERVED_BY_HEADER = "X-Served-By"
# Accept a caller's id only if it is short and harmless in a log line or a header.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED_ROUTE = "<unmatched>"
CLIENT_CLOSED_REQUEST = 499


class _RequestIds:
    """32 hex digits like a UUID: 16 random per process, then a counter; unique, and no syscall each.

    ``uuid.uuid4()`` reads the kernel's random source on every call, a measurable share of a request.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def _route_template(scope: Scope) -> str:
    # The template (/models/{model_id}), not the path: one metrics series per route, not per id.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestContextMiddleware:
    """Gives each request an id (echoed as X-Request-ID), logs one line and records metrics for it.

    With ``served_by`` every response also says which replica answered it (X-Served-By).

    A client that disconnects before its response is complete is recorded as 499 (nginx's "client
    closed request"): one info line, no traceback, never a 5xx in the metrics.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, served_by: str | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.served_by = served_by
        self._ids = _RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER.lower(), "")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else self._ids.next()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # what the client gets if the app raises before responding
        started = time.perf_counter()
        responded = client_gone = False

        async def watched_receive() -> Message:
            nonlocal client_gone
            message = await receive()
            # uvicorn also says "disconnect" to a read after the response: only one before counts.
            if message["type"] == "http.disconnect" and not responded:
                client_gone = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                if self.served_by is not None:
                    headers[SERVED_BY_HEADER] = self.served_by
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                responded = True
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, watched_receive, send_with_id)
        except ClientDisconnect:
            if not client_gone:
                status = 500
                logger.exception("unhandled error", extra={"fields": {"request_id": request_id}})
                raise
            # The client went away mid-request: not an error of ours, and nobody is left to answer.
        except Exception:
            status, client_gone = 500, False
            logger.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            raise
        finally:
            if client_gone:
                # nginx's "client closed request": whatever the app answered went nowhere.
                status = CLIENT_CLOSED_REQUEST
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            code = str(status)
            self.metrics.request_latency.labels(scope["method"], route, code).observe(elapsed)
            if status >= 400:
                self.metrics.errors.labels(route, code).inc()
            access_log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": route,
                        "path": scope["path"],
                        "status": status,
                        "latency_ms": round(elapsed * 1000, 3),
                    }
                },
            )


class BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes``: from Content-Length up front, else while reading.

    Nothing is buffered here; the limit is enforced on the stream, so a chunked upload without a
    Content-Length cannot grow past it either.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    def _detail(self) -> str:
        return f"request body too large: the limit is {self.max_bytes} bytes (AE_MAX_UPLOAD_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            self.metrics.rejections.labels("body_too_large").inc()
            await self._reject(send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    self.metrics.rejections.labels("body_too_large").inc()
                    # Raised inside the endpoint's read: the app's exception handling turns it into 413.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": self._detail()}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        # Close the connection: the client may still be sending the body we refuse to read.
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
