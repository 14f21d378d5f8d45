"""Route templates for the metrics `path` label: which route a request went to, in gin syntax."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.routing import Mount, WebSocketRoute, compile_path
from starlette.types import Scope

from workspace_server.middleware.asgi import ABORTED
from workspace_server.observability.metrics import UNMATCHED, route_template


@dataclass(frozen=True)
class _RouteEntry:
    route: Any
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None: a WebSocket route or a mount
    websocket: bool
    template: str


def effective_routes(app: Any) -> Iterable[tuple[Any, str, Any]]:
    """(route, full path, methods) for every route, prefixes of included routers applied."""
    routes = getattr(getattr(app, "router", None), "routes", [])
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI releases that flatten included routers at include time
        return [(r, getattr(r, "path", ""), getattr(r, "methods", None)) for r in routes]
    return [(rc.original_route, rc.path or "", rc.methods) for rc in iter_route_contexts(routes)]


class RouteTemplates:
    """Maps a request to its route template in gin syntax (`/workspaces/:id`) for the `path` label.

    Built lazily from the app's routes: `scope["route"]` is the route object the router picked, but its own
    `path` lacks the prefix of an enclosing `include_router`, so the full path is looked up here.
    """

    def __init__(self) -> None:
        self._built = False
        self._entries: list[_RouteEntry] = []
        self._by_route: dict[int, list[_RouteEntry]] = {}
        self._foreign: set[int] = set()  # sub-app routes: not in the table, do not rebuild again
        # (id(route), method, websocket?) -> template, for routes with one table entry: the router already
        # matched the path, so the regex test is redundant and the label is a dict hit per request.
        self._memo: dict[tuple[int, str, bool], str] = {}

    def _build(self, app: Any) -> None:
        entries = []
        for route, path, methods in effective_routes(app):
            if isinstance(route, Mount):
                path = path.rstrip("/") + "/{path:path}"
            regex, _, _ = compile_path(path)
            websocket = isinstance(route, WebSocketRoute)
            allowed = frozenset(methods) if methods and not websocket else None
            entries.append(_RouteEntry(route, regex, allowed, websocket, route_template(path)))
        by_route: dict[int, list[_RouteEntry]] = {}
        for entry in entries:
            by_route.setdefault(id(entry.route), []).append(entry)
        self._entries, self._by_route, self._built = entries, by_route, True
        self._memo = {}

    def label(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None and not scope.get(ABORTED):
            return UNMATCHED  # the router found nothing (404, or its trailing-slash redirect)
        key = (id(route), scope.get("method", "GET"), scope["type"] == "websocket")
        if route is not None and (hit := self._memo.get(key)) is not None:
            return hit
        label = self._resolve(scope, route)
        if route is not None and label != UNMATCHED and len(self._by_route.get(id(route), ())) == 1:
            self._memo[key] = label
        return label

    def _resolve(self, scope: Scope, route: Any) -> str:
        if not self._built:
            self._build(scope.get("app"))
        if route is not None and id(route) not in self._by_route and id(route) not in self._foreign:
            self._build(scope.get("app"))  # a route added after the table was built
            if id(route) not in self._by_route:
                self._foreign.add(id(route))
        candidates = self._entries if route is None else self._by_route.get(id(route), [])
        path = _route_path(scope)
        for entry in candidates:
            if entry.websocket != (scope["type"] == "websocket") or not entry.regex.match(path):
                continue
            if entry.methods is not None and scope["method"] not in entry.methods:
                continue  # wrong method: the reference has no 405, it is an unmatched 404
            return entry.template
        return UNMATCHED


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
