"""What a work endpoint takes and gives: a :class:`Call` (a read request) and a :class:`Reply`.

The request core (service/core.py) reads the request, body included and bounded, into a ``Call``
and writes the ``Reply`` back; the handlers in service/routes/ go from one to the other and know
nothing of ASGI. FastAPI's routes for the same paths build the same ``Call`` from a ``Request``
(:func:`call_from_request`), so either way a handler sees the same thing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from service.state import ServiceState

JSON = "application/json"


@dataclass(slots=True)
class Call:
    """One request, fully read: its headers (lower-case names), query string, path parameters, body."""

    state: ServiceState
    path: str
    headers: dict[str, str]
    query_string: bytes
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    _query: dict[str, str] | None = None

    def query(self, name: str) -> str | None:
        if self._query is None:
            self._query = dict(parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True))
        return self._query.get(name)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def wants_json(self) -> bool:
        return JSON in self.headers.get("accept", "").lower()


@dataclass(slots=True)
class Reply:
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


def json_reply(document: Any, headers: dict[str, str] | None = None) -> Reply:
    # allow_nan=False: the handlers refuse non-finite outputs before this, and JSON has no NaN.
    body = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    return Reply(body, JSON, headers or {})


def header_map(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI header pairs → a dict of lower-case names (a repeated header keeps its last value)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}


async def call_from_request(request: Request, params: dict[str, str] | None = None) -> Call:
    """The :class:`Call` of a Starlette request (FastAPI's routes for the work endpoints)."""
    return Call(
        state=request.app.state.service,
        path=request.url.path,
        headers=header_map(request.scope["headers"]),
        query_string=request.scope.get("query_string", b""),
        body=await request.body(),
        params=params or {},
    )


def to_response(reply: Reply) -> Response:
    return Response(reply.body, reply.status, reply.headers, media_type=reply.content_type)
