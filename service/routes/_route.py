"""A route class for endpoints that take the request alone and return a finished response."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class RequestOnlyRoute(APIRoute):
    """Calls ``endpoint(request)`` directly: no per-request dependency solving, no response serialising.

    For the hot image routes, which read their query parameters, API key and body themselves
    (service/routes/images.py). FastAPI's generic handler still costs a sixth of the event loop's time
    per request with nothing to solve (docs/benchmarks.md). The OpenAPI schema is built as for any
    route. The endpoint must take only the request and return a ``Response``; a router using this
    class must be included without ``dependencies``, which this handler would not run.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        d = self.dependant
        extra = [*d.path_params, *d.query_params, *d.header_params, *d.cookie_params, *d.body_params]
        if extra or d.dependencies or d.request_param_name is None:
            raise TypeError(f"{path}: a RequestOnlyRoute endpoint takes the Request and nothing else")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint
