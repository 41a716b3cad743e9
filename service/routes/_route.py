"""FastAPI's view of the work endpoints: declared for the OpenAPI schema, answered by the same handlers.

The request core (service/core.py) answers the work endpoints itself, before FastAPI; FastAPI still
declares them, so that the OpenAPI schema and ``/docs`` describe every route exactly. The endpoint
FastAPI holds for each (:func:`endpoint`) runs the same checks and the same handler, so the route
also works where the app is served without the core in front.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from service.calls import call_from_request, to_response
from service.core import Handler
from service.deps import check_api_key, check_ready


class RequestOnlyRoute(APIRoute):
    """Calls ``endpoint(request)`` directly: no dependency solving, no response serialising.

    The endpoint must take only the request and return a ``Response``; its parameters and body are
    documented by ``openapi_extra``. A router using this class must be included without
    ``dependencies``, which this handler would not run.
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


def endpoint(handler: Handler) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    """The FastAPI endpoint of a work handler: the core's checks, then the handler."""

    async def run(request: Request) -> Response:
        state = check_ready(request.app.state.service)
        check_api_key(state, request.headers)
        call = await call_from_request(request, dict(request.path_params))
        return to_response(await handler(call))

    run.__name__ = run.__qualname__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run
