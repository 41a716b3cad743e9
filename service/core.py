"""The request core: the one ASGI layer every HTTP request passes through, once.

It gives each request an id, enforces the per-request limits, reads the body, records the metrics
and writes the one log line. The work endpoints (``/denoise``, ``/encode``, ``/decode``, their batch
forms and ``/v2/models/{name}/infer``, see :data:`service.routes.WORK_ROUTES`) are answered here:
body → :class:`~service.calls.Call` → handler → :class:`~service.calls.Reply` → two ``send`` calls,
with nothing in between. Every other route (probes, cards, metrics, admin, the demo page, OpenAPI)
goes on to FastAPI, whose application this layer sits in front of (``service.main.App``).

Limits, in the order a request meets them (docs/api.md, "Limits"):

1. work routes: readiness (503) and the API key (401), from the headers alone;
2. a declared ``Content-Length`` over AE_MAX_UPLOAD_BYTES: 413 before a byte of the body is read;
3. the body is read into memory that AE_BODY_BUFFER_MB bounds for all requests together (503 when
   full), within AE_BODY_TIMEOUT_S of the headers and never slower than AE_MIN_BODY_RATE bytes per
   second once AE_BODY_RATE_GRACE_S has passed (408 either way); past AE_MAX_UPLOAD_BYTES, 413;
4. only then, once the request is *admitted* (its body read), it counts against
   AE_MAX_CONCURRENT_REQUESTS (503): a client that trickles a body or holds a connection idle does
   no work and takes no place that working clients need.

Refusals before the body is read close the connection (``Connection: close``), so that a client
cannot keep sending a body nobody will read. A client that goes away mid-body is logged once, at
info, as 499 ("client closed request"), never as a server error.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors, ood
from service.calls import Call, Reply, header_map
from service.config import Settings
from service.deps import check_api_key
from service.metrics import Metrics
from service.state import ServiceState

logger = logging.getLogger(__name__)
access_log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "X-Request-ID"
SERVED_BY_HEADER = "X-Served-By"
# What a page of another origin may read of an answer (Access-Control-Expose-Headers), here and in
# FastAPI's CORS middleware: the request id, Retry-After, the model, the replica, and the
# out-of-distribution score of an image body (docs/api.md).
EXPOSED_HEADERS = (
    REQUEST_ID_HEADER,
    "Retry-After",
    "X-Model",
    SERVED_BY_HEADER,
    ood.PERCENTILE_HEADER,
    ood.FLAG_HEADER,
    ood.THRESHOLD_HEADER,
)
_EXPOSED = ", ".join(EXPOSED_HEADERS).encode()
CLIENT_CLOSED_REQUEST = 499
UNMATCHED_ROUTE = "<unmatched>"
# Accept a caller's id only if it is short and harmless in a log line or a header.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Probes and the scrape are never refused for load: a pod under attack should not also fail its
# liveness probe and be restarted.
_NEVER_REFUSED = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
_CLOSE = (b"connection", b"close")

Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class WorkRoute:
    """A work endpoint: answered by the core, declared to FastAPI only for the OpenAPI schema."""

    method: str
    template: str  # the path, with {name} for path parameters (as in the OpenAPI schema)
    handler: Handler


class _RequestIds:
    """32 hex digits like a UUID: 16 random per process, then a counter; unique, and no syscall each."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


class ClientGone(Exception):
    """The client disconnected before its request was complete."""


class BodyBuffer:
    """Bytes of request bodies held in memory by all requests together (AE_BODY_BUFFER_MB)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used = 0

    def take(self, nbytes: int) -> None:
        if self.used + nbytes > self.limit_bytes:
            raise errors.BodyBufferFull(
                f"the request-body buffer of {self.limit_bytes >> 20} MB (AE_BODY_BUFFER_MB) is in use "
                "by other requests; retry shortly"
            )
        self.used += nbytes

    def give(self, nbytes: int) -> None:
        self.used -= nbytes


class _Router:
    """Method + path → work route and path parameters; fixed paths by dict, templated by segments."""

    def __init__(self, routes: list[WorkRoute]) -> None:
        self._fixed: dict[tuple[str, str], WorkRoute] = {}
        self._templated: list[tuple[WorkRoute, list[str]]] = []
        for route in routes:
            if "{" in route.template:
                self._templated.append((route, route.template.strip("/").split("/")))
            else:
                self._fixed[(route.method, route.template)] = route

    def match(self, method: str, path: str) -> tuple[WorkRoute, dict[str, str]] | None:
        route = self._fixed.get((method, path))
        if route is not None:
            return route, {}
        if not self._templated or not path.startswith("/v2/"):
            return None
        parts = path.strip("/").split("/")
        for route, pattern in self._templated:
            if route.method != method or len(parts) != len(pattern):
                continue
            params: dict[str, str] = {}
            for part, want in zip(parts, pattern, strict=True):
                if want.startswith("{"):
                    if not part:
                        break
                    params[want[1:-1]] = part
                elif part != want:
                    break
            else:
                return route, params
        return None


class Core:
    """The ASGI layer described in the module docstring, in front of ``cold`` (FastAPI's stack)."""

    def __init__(self, cold: ASGIApp, state: ServiceState, routes: list[WorkRoute]) -> None:
        s: Settings = state.settings
        self.cold = cold
        self.state = state
        self.metrics: Metrics = state.metrics
        self.router = _Router(routes)
        self.max_body = s.max_upload_bytes
        self.body_timeout_s = s.body_timeout_s
        self.min_rate = float(s.min_body_rate)
        self.rate_grace_s = s.body_rate_grace_s
        self.max_in_flight = s.max_concurrent_requests
        self.buffer = BodyBuffer(s.body_buffer_mb << 20)
        self.in_flight = 0
        self.served_by = s.served_by.encode() if s.served_by else None
        self.cors = frozenset(s.cors_origins)
        self._ids = _RequestIds()
        self._latency: dict[tuple[str, str, int], Any] = {}

    # -- the layer -------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.cold(scope, receive, send)  # lifespan
            return
        started = time.perf_counter()
        headers = header_map(scope["headers"])
        incoming = headers.get("x-request-id", "")
        request_id = incoming if incoming and _REQUEST_ID.fullmatch(incoming) else self._ids.next()
        scope.setdefault("state", {})["request_id"] = request_id
        extra = [(b"x-request-id", request_id.encode())]
        if self.served_by is not None:
            extra.append((b"x-served-by", self.served_by))
        path = scope["path"]
        matched = self.router.match(scope["method"], path)
        status = 500
        template = matched[0].template if matched is not None else UNMATCHED_ROUTE
        try:
            if matched is not None:
                if self.cors:  # FastAPI's CORS middleware answers the other routes
                    extra += self._cors_headers(headers)
                status = await self._work(scope, receive, send, headers, extra, *matched)
            else:
                status, template = await self._cold(scope, receive, send, headers, extra)
        except ClientGone:
            status = CLIENT_CLOSED_REQUEST
        finally:
            self._record(scope["method"], template, path, status, request_id, started)

    async def _work(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        extra: list[tuple[bytes, bytes]],
        route: WorkRoute,
        params: dict[str, str],
    ) -> int:
        path = scope["path"]
        reserved = 0
        body_read = False
        try:
            try:
                if not self.state.ready:
                    raise errors.NotReady("not ready: the models are loading")
                check_api_key(self.state, headers)
                body, reserved = await self._read_body(receive, headers)
                body_read = True
                counted = self._admit(path)
            except errors.ServiceError as exc:
                return await self._fail(send, exc, path, extra, body_unread=not body_read)
            try:
                call = Call(self.state, path, headers, scope["query_string"], body, params)
                reply = await route.handler(call)
            except Exception as exc:
                return await self._fail(send, exc, path, extra)
            finally:
                self._release(counted)
        finally:
            if reserved:
                self.buffer.give(reserved)
        out = [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", b"%d" % len(reply.body)),
            *extra,
            *[(name.lower().encode(), value.encode()) for name, value in reply.headers.items()],
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        await send({"type": "http.response.body", "body": reply.body})
        return reply.status

    async def _cold(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        extra: list[tuple[bytes, bytes]],
    ) -> tuple[int, str]:
        path = scope["path"]
        reserved = 0
        status = 500
        started = False
        try:
            body_read = False
            try:
                body, reserved = await self._read_body(receive, headers)
                body_read = True
                counted = self._admit(path)
            except errors.ServiceError as exc:
                status = await self._fail(send, exc, path, extra, body_unread=not body_read)
                return status, UNMATCHED_ROUTE
            if body:
                receive = _replay(body, receive)

            async def send_with_headers(message: Message) -> None:
                nonlocal status, started
                if message["type"] == "http.response.start":
                    status, started = message["status"], True
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
                await send(message)

            try:
                await self.cold(scope, receive, send_with_headers)
            except Exception:
                # FastAPI's ServerErrorMiddleware has answered 500 (if it could) and re-raises.
                logger.exception("unhandled error", extra={"fields": {"request_id": extra[0][1].decode()}})
                status = 500
                if not started:
                    await self._send_error(send, errors.Failure(500, "internal server error"), path, extra)
            finally:
                self._release(counted)
        finally:
            if reserved:
                self.buffer.give(reserved)
        route = scope.get("route")
        template = getattr(route, "path", None)
        return status, template if isinstance(template, str) else UNMATCHED_ROUTE

    # -- the pieces ------------------------------------------------------------------------------
    def _admit(self, path: str) -> bool:
        """Take an in-flight place for a request whose body is read (503 past the cap); False for
        the probes and the scrape, which are neither refused nor counted. :meth:`_release` gives it back."""
        if path in _NEVER_REFUSED:
            return False
        if self.in_flight >= self.max_in_flight:
            raise errors.TooManyRequests(
                f"too many requests in flight: at most {self.max_in_flight} at once "
                "(AE_MAX_CONCURRENT_REQUESTS); retry shortly"
            )
        self.in_flight += 1
        self.metrics.in_flight.inc()
        return True

    def _release(self, counted: bool) -> None:
        if counted:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    def _too_large(self) -> errors.BodyTooLarge:
        return errors.BodyTooLarge(
            f"request body too large: the limit is {self.max_body} bytes (AE_MAX_UPLOAD_BYTES)"
        )

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> tuple[bytes, int]:
        """The whole body and the bytes reserved for it in the buffer (to give back when done)."""
        declared = headers.get("content-length")
        chunked = "transfer-encoding" in headers
        if not chunked and (declared is None or declared == "0"):
            return b"", 0
        expected = int(declared) if declared is not None and declared.isdigit() else 0
        if expected > self.max_body:
            raise self._too_large()
        self.buffer.take(expected)
        reserved = expected
        try:
            loop = asyncio.get_running_loop()
            begun = loop.time()
            deadline = begun + self.body_timeout_s
            chunks: list[bytes] = []
            size = 0
            try:
                async with asyncio.timeout_at(min(deadline, begun + self.rate_grace_s)) as timer:
                    while True:
                        message = await receive()
                        if message["type"] != "http.request":
                            raise ClientGone
                        chunk = message.get("body", b"")
                        if chunk:
                            size += len(chunk)
                            if size > self.max_body:
                                raise self._too_large()
                            if size > reserved:
                                self.buffer.take(size - reserved)
                                reserved = size
                            chunks.append(chunk)
                        if not message.get("more_body", False):
                            break
                        # Kestrel's MinRequestBodyDataRate: past the grace period, the bytes so far
                        # must keep up with the minimum rate; and the whole body with the deadline.
                        timer.reschedule(min(deadline, begun + self.rate_grace_s + size / self.min_rate))
            except TimeoutError:
                if loop.time() >= deadline - 1e-3:
                    raise errors.BodyTimeout(
                        f"request body not received within {self.body_timeout_s:g} s (AE_BODY_TIMEOUT_S)"
                    ) from None
                raise errors.BodyTimeout(
                    f"request body arriving slower than {self.min_rate:g} bytes/s (AE_MIN_BODY_RATE)"
                ) from None
        except BaseException:
            self.buffer.give(reserved)
            raise
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), reserved

    async def _fail(
        self,
        send: Send,
        exc: Exception,
        path: str,
        extra: list[tuple[bytes, bytes]],
        *,
        body_unread: bool = False,
    ) -> int:
        """Answer an error through the one error map; unexpected errors are logged and answer 500."""
        if isinstance(exc, ClientGone):
            raise exc
        failure = errors.classify(exc)
        if failure is None:
            fields = {"request_id": extra[0][1].decode()}
            logger.error("unhandled error", exc_info=exc, extra={"fields": fields})
            failure = errors.Failure(500, "internal server error")
        if failure.reason is not None:
            self.metrics.rejections.labels(failure.reason).inc()
        return await self._send_error(send, failure, path, extra, close=body_unread)

    async def _send_error(
        self,
        send: Send,
        failure: errors.Failure,
        path: str,
        extra: list[tuple[bytes, bytes]],
        *,
        close: bool = False,
    ) -> int:
        body = errors.error_body(failure.message, path)
        out = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *extra]
        out += [(name.lower().encode(), value.encode()) for name, value in failure.headers.items()]
        if close and _CLOSE not in out:
            out.append(_CLOSE)
        await send({"type": "http.response.start", "status": failure.status, "headers": out})
        await send({"type": "http.response.body", "body": body})
        return failure.status

    def _cors_headers(self, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        origin = headers.get("origin")
        if origin is None or not ("*" in self.cors or origin in self.cors):
            return []
        return [
            (b"access-control-allow-origin", b"*" if "*" in self.cors else origin.encode()),
            (b"access-control-expose-headers", _EXPOSED),
            (b"vary", b"Origin"),
        ]

    def _record(
        self, method: str, template: str, path: str, status: int, request_id: str, started: float
    ) -> None:
        elapsed = time.perf_counter() - started
        key = (method, template, status)
        child = self._latency.get(key)
        if child is None:
            child = self._latency[key] = self.metrics.request_latency.labels(method, template, str(status))
        child.observe(elapsed)
        if status >= 400:
            self.metrics.errors.labels(template, str(status)).inc()
        if access_log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": request_id,
                "method": method,
                "route": template,
                "path": path,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
            }
            access_log.info("request", extra={"fields": fields})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already read body once, then whatever the client does next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
