"""`GET /workspaces/:id/traces` (spec 04 §4): a workspace's recent Langfuse traces.

Without a complete Langfuse configuration, or when Langfuse does not answer, the list is empty (200
`[]`): traces are a nicety and must never break the canvas. `ctx.http` puts the host through the egress
policy like every other dial (a Langfuse on a private address needs its CIDR in `EGRESS_ALLOW_CIDRS` in
production mode); a refused host is logged and answers `[]` like an unreachable one.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass

import httpx

from workspace_server.common.errors import ApiError
from workspace_server.config import Settings
from workspace_server.context import AppContext

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
MAX_BODY_BYTES = 10 << 20  # Langfuse pages are small; this only bounds a misbehaving host


@dataclass(frozen=True)
class TracesReply:
    status: int
    body: bytes | None  # None: answer `[]`


def _basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _configured(s: Settings) -> bool:
    return bool(s.LANGFUSE_HOST and s.LANGFUSE_PUBLIC_KEY and s.LANGFUSE_SECRET_KEY)


async def list_traces(ctx: AppContext, ws_id: str) -> TracesReply:
    s = ctx.settings
    if not _configured(s):
        return TracesReply(200, None)
    params = {"limit": "20", "orderBy": "timestamp", "orderDir": "desc", "tags": ws_id}
    try:
        request = ctx.http.build_request(
            "GET",
            s.LANGFUSE_HOST.rstrip("/") + "/api/public/traces",
            params=params,
            headers={"Authorization": _basic_auth(s.LANGFUSE_PUBLIC_KEY, s.LANGFUSE_SECRET_KEY)},
            timeout=TIMEOUT_SECONDS,
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, TypeError):
        log.warning("traces: LANGFUSE_HOST %r is not a usable URL", s.LANGFUSE_HOST)
        raise ApiError(500, "failed to create request") from None
    try:
        resp = await ctx.http.send(request, stream=True)
        try:
            body = await _read_capped(resp)
        finally:
            await resp.aclose()
    except httpx.HTTPError as exc:
        log.info("traces: Langfuse unavailable: %s", exc)
        return TracesReply(200, None)
    return TracesReply(resp.status_code, body)


async def _read_capped(resp: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise httpx.DecodingError("Langfuse reply too large")
        chunks.append(chunk)
    return b"".join(chunks)
