"""TenantGuard: on a machine serving one org, requests addressed to another org see an empty 404."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from workspace_server.auth.deps import is_same_origin_canvas
from workspace_server.middleware.asgi import Refusal, Verdict, enact, header

TENANT_ALLOWLIST = frozenset({"/health", "/metrics", "/registry/register", "/registry/heartbeat"})


def org_from_replay_src(value: str) -> str:
    """The `state=` segment of Fly-Replay-Src (`k=v;k=v`, segments trimmed), or ""."""
    for segment in value.split(";"):
        segment = segment.strip()
        if segment.startswith("state="):
            return segment[len("state=") :]
    return ""


class TenantGuardMiddleware:
    """Active only when MOLECULE_ORG_ID is set: a request not addressed to this org gets an empty 404,
    so another org's machine cannot even be told apart from a missing route."""

    def __init__(self, app: ASGIApp, org_id: str) -> None:
        self.app = app
        self.org_id = org_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await enact(self.admit(scope), self.app, scope, receive, send)

    def admit(self, scope: Scope) -> Verdict:
        return [] if self._passes(scope) else _NOT_HERE

    def _passes(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path in TENANT_ALLOWLIST or path.startswith("/cp/"):
            return True
        if header(scope, b"x-molecule-org-id") == self.org_id:
            return True
        if org_from_replay_src(header(scope, b"fly-replay-src")) == self.org_id:
            return True
        ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
        if ctx is None:
            return False
        # It reads headers only; Request() refuses a websocket scope, so hand it an http view.
        return is_same_origin_canvas(ctx, Request({**scope, "type": "http"}))


_NOT_HERE = Refusal(404)
