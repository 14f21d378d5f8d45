"""Hot routes: the few endpoints every agent calls all the time (the heartbeat, the A2A proxy).

A hot route is served by `HotLane`, outside every middleware (FastAPI's own included): a request that
fully matches one (path and method) runs through the hot shell (middleware/hot_shell.py: the same
middlewares' decisions, sharing the rate limiter and the metrics, in one ASGI callable) straight into the
endpoint. It skips FastAPI's error, telemetry and exception middlewares, exit stack, router walk and
dependency solver: about a third of the server's CPU for a proxied A2A call (bench/README.md). Its
handler takes the `Request` only and reads the context with `get_ctx`.

What a client sees does not change:
- errors render as on every other route, by the same functions the app's handlers call
  (`common.errors`): `ApiError`, `HTTPException`, the database or Redis being away (503), anything else
  a logged 500 with no detail;
- the routes also stay in the app's router, so a wrong method (404), a trailing slash (redirect) and
  the route table the metrics labels come from behave exactly as for any route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from workspace_server.common.errors import (
    ApiError,
    api_error_response,
    client_gone_response,
    http_error_response,
    unhandled_response,
)


class HotRoute(Route):
    """A Starlette route that records itself as `scope["route"]`, as FastAPI's routes do: the metrics
    middleware labels requests by it (`middleware.RouteTemplates`).

    Every request passes the hot lane, so a path that cannot match (it does not end with the template's
    literal tail, e.g. `/a2a`) is turned away before the route's regex."""

    def __init__(self, path: str, endpoint: Callable[..., Any], methods: list[str]) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.tail = path[path.rfind("}") + 1 :]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and not scope["path"].endswith(self.tail):
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def hot_route(path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str) -> HotRoute:
    return HotRoute(path, endpoint, methods=[method])


class PrebuiltResponse(Response):
    """A constant answer rendered once (status, body, headers), for a hot route to return every time.

    It sends what the response it was made from sends; only nothing is rendered per request. Each answer
    gets its own copy of the header list, since a layer may extend a response's headers in place."""

    def __init__(self, response: Response) -> None:  # not Response.__init__: nothing is rendered again
        if response.background is not None:
            raise ValueError("a prebuilt response cannot carry a background task")
        self.status_code = response.status_code
        self.body = response.body
        self.raw_headers = list(response.raw_headers)
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # hot routes are HTTP only; anything else as Response does it
            await super().__call__(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": list(self.raw_headers)}
        )
        await send({"type": "http.response.body", "body": self.body})


class HotEndpoint:
    """The innermost app of the hot lane: calls the matched route's endpoint and renders its errors."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: HotRoute = scope["route"]
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except ApiError as exc:
            response = api_error_response(exc)
        except HTTPException as exc:  # also the body cap's 413, raised from `receive` mid-read
            response = http_error_response(exc)
        except ClientDisconnect:
            response = client_gone_response(request)
        except Exception as exc:
            response = unhandled_response(request.method, request.url.path, exc)
        await response(scope, receive, send)


class HotLane:
    """Routes a full match of a hot route into `lane` (the shell around `HotEndpoint`), all else to `app`."""

    def __init__(self, app: ASGIApp, routes: Sequence[HotRoute], lane: ASGIApp) -> None:
        self.app = app
        self.routes = tuple(routes)
        self.lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await self.lane(scope, receive, send)
                    return
        await self.app(scope, receive, send)
