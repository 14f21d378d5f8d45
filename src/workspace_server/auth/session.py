"""Control-plane session cookie verification (spec 03 §3 "Session cookie")."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from workspace_server.context import AppContext

log = logging.getLogger(__name__)

POSITIVE_TTL = 30.0
NEGATIVE_TTL = 5.0
MAX_ENTRIES = 10_000


def _cache_of(ctx: AppContext) -> dict[bytes, tuple[bool, float]]:
    """One cache per app: two apps in a process (tests, embedded use) never share verdicts."""
    return ctx.session_cache


def _key(slug: str, cookie: str) -> bytes:
    return hashlib.sha256(slug.encode() + b"\x00" + cookie.encode()).digest()


async def verify_cp_session(ctx: AppContext, cookie: str) -> tuple[bool, bool]:
    """(valid, presented). Membership of this tenant's slug is required, not just a login."""
    s = ctx.settings
    if not cookie or not s.MOLECULE_ORG_SLUG:
        return False, False
    if not s.CP_UPSTREAM_URL:
        return False, True
    cache = _cache_of(ctx)
    key = _key(s.MOLECULE_ORG_SLUG, cookie)
    now = time.monotonic()
    hit = cache.get(key)
    if hit and hit[1] > now:
        return hit[0], True
    try:
        resp = await ctx.http.get(
            s.CP_UPSTREAM_URL.rstrip("/") + "/cp/auth/tenant-member",
            params={"slug": s.MOLECULE_ORG_SLUG},
            headers={"Cookie": cookie, "User-Agent": "molecule-tenant-platform/session-verifier"},
            timeout=3.0,
        )
    except (httpx.HTTPError, httpx.InvalidURL):
        return False, True  # transport errors are not cached
    valid = resp.status_code == 200 and _is_member(resp)
    if len(cache) >= MAX_ENTRIES:
        for k in [k for k, (_, exp) in cache.items() if exp <= now] or list(cache)[:128]:
            cache.pop(k, None)
    cache[key] = (valid, now + (POSITIVE_TTL if valid else NEGATIVE_TTL))
    return valid, True


def _is_member(resp: httpx.Response) -> bool:
    """`{"member": true, "user_id": "<non-empty>"}`; any other shape (or non-JSON) is a no."""
    try:
        body = resp.json()
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    user_id = body.get("user_id")
    return body.get("member") is True and isinstance(user_id, str) and bool(user_id)
