"""The HTTP/1.1 protocol ``ae-serve`` runs: uvicorn's httptools protocol plus the header limits it lacks.

uvicorn bounds neither how long a client may take over its request line and headers (a connection
that sends nothing, or one header byte a second, stays open for good) nor how large they may grow
(httptools buffers a header value until it ends, so one endless header grows without limit). Here:

- the request line and headers must arrive within ``header_timeout_s`` of the connection opening
  or of the request's first byte; otherwise 408 and the connection closes (an idle new connection
  that has sent nothing is just closed, as uvicorn closes an idle keep-alive one);
- they may total ``max_header_bytes`` and ``max_headers`` lines; past either, 431 and close;
- at most ``max_connections`` connections are open: a new one past the cap closes the connection
  that has been idle longest (no request in progress: never sent one, or waiting between
  keep-alive requests), so idle connections cannot crowd out working ones; only when every
  connection is busy is the new one answered 503 and closed.

uvicorn's ``HttpToolsProtocol`` has no public extension point for these, so this subclass depends on
its internals: pyproject.toml pins uvicorn exactly, and tests/service/test_protocol.py checks that the
methods overridden here still exist with the signatures used.

The body is the app's business: ``service.limits`` gives it a deadline (408) where the request log
and metrics see it. Refusals here come before the app sees a request, so they have no request id;
each is one ``service.protocol`` line at info.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.config import Settings
from service.errors import error_body

logger = logging.getLogger(__name__)

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}
# After a refusal, how long the client's further bytes are read and dropped before closing.
_LINGER_S = 2.0


@dataclass(frozen=True)
class HeaderLimits:
    timeout_s: float
    max_bytes: int
    max_count: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HeaderLimits:
        return cls(
            settings.header_timeout_s,
            settings.max_header_bytes,
            settings.max_headers,
            settings.max_connections,
        )


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; ``data_received`` answers ``status``."""


class HttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a header deadline and header size and count limits.

    ``limits`` is set on a subclass by :func:`protocol_class`; left unset (``uvicorn --workers``
    imports this class by name in each worker) it comes from the ``AE_*`` environment, once.
    """

    limits: ClassVar[HeaderLimits | None] = None
    # Open connections with no request in progress, longest idle first (one server per process).
    _idle: ClassVar[OrderedDict[HttpProtocol, None]] = OrderedDict()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = type(self).limits
        if limits is None:
            limits = HttpProtocol.limits = HeaderLimits.from_settings(Settings())
        self._limits = limits
        self._header_timer: asyncio.TimerHandle | None = None
        # Between a request's first byte and the end of its headers.
        self._in_headers = False
        self._header_bytes = 0  # counted by the parser callbacks (exact, once a header is complete)
        self._header_chunks = 0  # bytes of reads that ended inside the headers (catches a header
        # that never ends, which httptools buffers without a callback)
        self._header_count = 0
        self._refusal: tuple[int, str] | None = None
        self._discarding = False  # refused: what still arrives is dropped (see _linger)
        self._url = b""

    # Connection: the header deadline runs from the moment it opens.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_header_timer()
        if len(self.connections) > self._limits.max_connections and not self._evict_idle():
            self._refuse(503, f"more than {self._limits.max_connections} connections (AE_MAX_CONNECTIONS)")
            return
        self._idle[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._idle.pop(self, None)
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._idle[self] = None
            self._idle.move_to_end(self)

    def _evict_idle(self) -> bool:
        """Close the connection idle longest to make room for this one; False when none is idle."""
        for other in self._idle:
            if other is not self:
                del self._idle[other]
                logger.info("idle connection closed for a new one (AE_MAX_CONNECTIONS)")
                other.transport.close()
                return True
        return False

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, but a refusal decided in a callback gets its own status, not 400.
        if self._discarding:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
                return
            logger.info("invalid HTTP request", extra={"fields": {"client": self._client_text()}})
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_headers:
            self._header_chunks += len(data)
            if self._header_chunks > self._limits.max_bytes:
                self._refuse(431, self._too_large())

    # Parser callbacks.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._idle.pop(self, None)
        self._url = b""
        self._in_headers = True
        self._header_bytes = self._header_chunks = self._header_count = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self._url += url[:16]
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_count:
            self._refusal = (431, f"more than {self._limits.max_count} header lines (AE_MAX_HEADERS)")
            raise _Refused
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    # Helpers.
    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self._limits.max_bytes:
            self._refusal = (431, self._too_large())
            raise _Refused

    def _too_large(self) -> str:
        return f"request line and headers over {self._limits.max_bytes} bytes (AE_MAX_HEADER_BYTES)"

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self._limits.timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if not self._in_headers:
            # A connection that never sent a byte: nothing to answer.
            self.transport.close()
            return
        detail = f"request headers not received within {self._limits.timeout_s:g} s (AE_HEADER_TIMEOUT_S)"
        self._refuse(408, detail)

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` with a JSON detail and close, whatever the parser was in the middle of."""
        self._cancel_header_timer()
        self._in_headers = False
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request while the previous response is still going out: no room to answer.
            self.transport.close()
            return
        logger.info(
            "request refused",
            extra={"fields": {"status": status, "detail": detail, "client": self._client_text()}},
        )
        body = error_body(detail, self._url.decode("latin-1"))
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self._linger()

    def _linger(self) -> None:
        """Close after the answer, reading (and dropping) what the client still sends for a moment.

        Closing at once with unread bytes makes the kernel reset the connection, and a client still
        sending would lose the answer with it; nginx's lingering close does the same.
        """
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._discarding = True
        self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    def _client_text(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else ""


def protocol_class(settings: Settings) -> type[HttpProtocol]:
    """:class:`HttpProtocol` with the header limits of ``settings``."""
    return type("HttpProtocol", (HttpProtocol,), {"limits": HeaderLimits.from_settings(settings)})
