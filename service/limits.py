"""Per-request limits in time and number: the body deadline (408) and the in-flight cap (503).

Pure ASGI, between the request context (ids, log, metrics) and the app, so that each refusal is a
logged, counted response like any other. The header-phase limits come earlier, in
``service.protocol``; the body size limit is ``service.middleware.BodyLimitMiddleware``.

- **Body deadline**: the whole body must arrive within ``body_timeout_s`` of the request reaching
  the app. When it does not, the app is shown a disconnect (so whatever it was reading stops) and
  the client gets 408 with ``Connection: close``; a trickle of one byte a second cannot hold a
  request open longer than that.
- **Unread bodies close the connection**: a response that starts before the request's body has
  been read (a 401, 404 or 503 answered early) says ``Connection: close``, so a client cannot go on
  trickling a body nobody will read on a kept-alive connection.
- **In-flight cap**: past ``max_in_flight`` requests being handled at once, 503 + ``Retry-After``
  at once. Probes and the scrape (``_NEVER_REFUSED``) always pass: a pod under attack should not
  also fail its liveness probe and be restarted.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

_NEVER_REFUSED = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
_CLOSE = (b"connection", b"close")
_DISCONNECT: Message = {"type": "http.disconnect"}


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


class RequestLimitMiddleware:
    """The body deadline and the in-flight cap (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int, body_timeout_s: float, metrics: Metrics) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.body_timeout_s = body_timeout_s
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight and scope["path"] not in _NEVER_REFUSED:
            self.metrics.rejections.labels("too_many_requests").inc()
            detail = (
                f"too many requests in flight: at most {self.max_in_flight} at once "
                "(AE_MAX_CONCURRENT_REQUESTS); retry shortly"
            )
            headers = [(b"retry-after", b"1")] + ([_CLOSE] if _has_body(scope) else [])
            await _send_json(send, 503, detail, headers)
            return
        self.in_flight += 1
        try:
            await self._bounded(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        body_done = not _has_body(scope)
        expired = started = False

        async def timed_receive() -> Message:
            nonlocal body_done, expired
            if expired:
                return _DISCONNECT
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                expired = True
                return _DISCONNECT
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if expired:
                return  # the app's answer to the disconnect it was shown; the client gets the 408
            if message["type"] == "http.response.start":
                started = True
                if not body_done:
                    message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not expired:
                raise
            # Whatever the app made of the disconnect it was shown (Starlette's ClientDisconnect).
        if expired and not started:
            self.metrics.rejections.labels("body_timeout").inc()
            detail = f"request body not received within {self.body_timeout_s:g} s (AE_BODY_TIMEOUT_S)"
            await _send_json(send, 408, detail, [_CLOSE])
