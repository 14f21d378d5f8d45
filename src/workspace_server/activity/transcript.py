"""`GET /workspaces/:id/transcript` (spec 04 §4): proxy to the agent's own `/transcript` endpoint.

The URL comes from the agent card, which the agent itself writes, so it is untrusted. The check is the
reference's lenient one (loopback allowed: local agents live on 127.0.0.1), hardened where that costs
nothing: names are resolved and every address is judged, and redirects are never followed, so neither
DNS nor a 30x can steer the request to a metadata service. Only `since` and `limit` are forwarded.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from workspace_server.auth import ssrf
from workspace_server.common.errors import ApiError
from workspace_server.context import AppContext
from workspace_server.workspaces.store import get_workspace

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
MAX_BODY_BYTES = 1 << 20  # a runaway transcript must not melt the canvas; the rest is cut silently
BANNED_HOSTS = ("metadata.google.internal", "metadata.azure.com", "metadata")
METADATA_IP = ipaddress.ip_address("169.254.169.254")
_BLOCKED_NETS = tuple(
    ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "224.0.0.0/24", "ff02::/16", "fd00::/8")
)


@dataclass(frozen=True)
class Upstream:
    status: int
    content_type: str | None
    body: bytes


def ip_allowed(ip: ssrf.IPAddress) -> bool:
    """The lenient policy: no metadata, link-local (unicast/multicast) or fd00::/8 address."""
    ip = ssrf.normalise_ip(ip)
    if ip == METADATA_IP:
        return False
    return not any(ip.version == n.version and ip in n for n in _BLOCKED_NETS)


async def check_url(url: str) -> httpx.URL:
    """The URL to dial, or ApiError 400 (`invalid workspace URL` / `workspace URL not allowed`)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ApiError(400, "invalid workspace URL") from None
    try:
        host = ssrf.parse_host(url)
        if host in BANNED_HOSTS:
            raise ssrf.UnsafeURL(f"metadata hostname {host}")
        literal = ssrf.ip_literal(host)
        addrs = [literal] if literal is not None else await ssrf.resolve(host)
        if not all(ip_allowed(ip) for ip in addrs):
            raise ssrf.UnsafeURL(f"{host} is a blocked address")
    except ssrf.UnsafeURL as exc:
        log.warning("transcript: workspace URL %r rejected: %s", url, exc)
        raise ApiError(400, "workspace URL not allowed") from None
    return parsed


async def _agent_url(ctx: AppContext, ws_id: str) -> str:
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
    return url


async def fetch_transcript(
    ctx: AppContext, ws_id: str, *, since: str, limit: str, authorization: str
) -> Upstream:
    base = await check_url(await _agent_url(ctx, ws_id))
    params = {k: v for k, v in (("limit", limit), ("since", since)) if v}
    target = base.copy_with(path="/transcript", query=None, fragment=None).copy_merge_params(params)
    headers = {"Authorization": authorization} if authorization else {}
    try:
        async with ctx.http.stream(
            "GET", target, headers=headers, timeout=TIMEOUT_SECONDS, follow_redirects=False
        ) as resp:
            body = await _read_capped(resp)
            return Upstream(resp.status_code, resp.headers.get("content-type"), body)
    except ApiError:
        raise
    except httpx.HTTPError as exc:
        # the target and reason stay in our log: they would reveal internal hosts to the caller
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
