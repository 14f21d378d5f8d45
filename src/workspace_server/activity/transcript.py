"""`GET /workspaces/:id/transcript` (spec 04 §4): proxy to the agent's own `/transcript` endpoint.

The URL comes from the agent card, which the agent itself writes, so it is untrusted: it goes through
the egress policy (egress/) like every URL the server dials, where the reference had a lenient check of
its own. Names are resolved and every address judged before the call, and `ctx.http` judges the address
it connects to again, so DNS cannot steer the request inward between the two; redirects are never
followed. A workspace whose agent this server started is reached at the address its backend assigned
(`egress.assigned`), not at whatever its card says. Only `since` and `limit` are forwarded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from workspace_server import egress
from workspace_server.common.errors import ApiError
from workspace_server.context import AppContext
from workspace_server.egress.clients import refused_cause
from workspace_server.registry.service import assigned_dial_url
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
MAX_BODY_BYTES = 1 << 20  # a runaway transcript must not melt the canvas; the rest is cut silently
NOT_ALLOWED = "workspace URL not allowed"


@dataclass(frozen=True)
class Upstream:
    status: int
    content_type: str | None
    body: bytes


async def check_url(ctx: AppContext, url: str) -> httpx.URL:
    """The URL to dial, or ApiError 400 (`invalid workspace URL` / `workspace URL not allowed`)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ApiError(400, "invalid workspace URL") from None
    try:
        await egress.policy_for(ctx.settings).check_url(url)
    except egress.UnsafeURL as exc:
        log.warning("transcript: workspace URL %r rejected: %s", url, exc)
        raise ApiError(400, NOT_ALLOWED) from None
    return parsed


def _assigned_client(ctx: AppContext) -> httpx.AsyncClient:
    """A plain client for server-assigned agent addresses (loopback ports, container names)."""
    return ctx.transcript_http


async def _agent_url(ctx: AppContext, ws_id: str) -> tuple[str, str]:
    """(the card's url, the row's url)."""
    try:
        async with ctx.engine.connect() as conn:
            row = await get_workspace(conn, ws_id)
    except Exception:
        log.exception("transcript: workspace lookup failed for %s", ws_id)
        row = None
    if row is None:
        raise ApiError(404, "workspace not found")
    card: Any = row.agent_card
    url = card.get("url") if isinstance(card, dict) else None
    if not isinstance(url, str) or not url:
        raise ApiError(503, "workspace not registered (no URL on file)")
    return url, str(row.url or "")


async def fetch_transcript(
    ctx: AppContext, ws_id: str, *, since: str, limit: str, authorization: str
) -> Upstream:
    card_url, row_url = await _agent_url(ctx, ws_id)
    assigned_url = egress.assigned(ctx).get(ws_id)
    if assigned_url and assigned_url == row_url:  # a stopped agent's row url is cleared
        base, http = httpx.URL(assigned_dial_url(ctx, ws_id, assigned_url)), _assigned_client(ctx)
    else:
        base, http = await check_url(ctx, card_url), ctx.http
    params = {k: v for k, v in (("limit", limit), ("since", since)) if v}
    target = base.copy_with(path="/transcript", query=None, fragment=None).copy_merge_params(params)
    headers = {"Authorization": authorization} if authorization else {}
    try:
        async with http.stream(
            "GET", target, headers=headers, timeout=TIMEOUT_SECONDS, follow_redirects=False
        ) as resp:
            body = await _read_capped(resp)
            return Upstream(resp.status_code, resp.headers.get("content-type"), body)
    except ApiError:
        raise
    except httpx.HTTPError as exc:
        # the target and reason stay in our log: they would reveal internal hosts to the caller
        refused = refused_cause(exc)
        if refused is not None:  # the name resolved inward when the connection was opened
            log.warning("transcript: workspace %s URL refused at connect time: %s", ws_id, refused)
            raise ApiError(400, NOT_ALLOWED) from None
        log.warning("transcript: workspace %s unreachable: %s", ws_id, exc)
        raise ApiError(502, "workspace unreachable") from None


async def _read_capped(resp: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in resp.aiter_bytes():
            chunks.append(chunk[: MAX_BODY_BYTES - size])
            size += len(chunks[-1])
            if size >= MAX_BODY_BYTES:
                break
    except httpx.HTTPError:
        raise ApiError(500, "failed to read workspace response") from None
    return b"".join(chunks)
