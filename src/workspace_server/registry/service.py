"""Registry rules: register, heartbeat, agent card, discovery, peers (spec 03 §1).

No HTTP here: routes parse and authenticate, then call these. Errors leave as `ApiError` with the
reference's exact messages; driver text never does.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.auth import tokens
from workspace_server.common.errors import ApiError
from workspace_server.common.kv import (
    URL_TTL,
    clear_workspace_keys,
    internal_url_key,
    liveness_key,
    url_key,
)
from workspace_server.common.time import rfc3339, utcnow
from workspace_server.context import AppContext
from workspace_server.egress import is_safe_url
from workspace_server.registry import store
from workspace_server.registry.access import can_communicate
from workspace_server.registry.batch import HeartbeatBatcher
from workspace_server.registry.schemas import Heartbeat, RuntimeMetadata
from workspace_server.workspaces.status import Status

log = logging.getLogger(__name__)

DEGRADE_ERROR_RATE = 0.5  # >= degrades (the docs' "> 0.5" is stale)
RECOVER_ERROR_RATE = 0.1  # < recovers, with an empty runtime_state
DEFAULT_RUNTIME = "langgraph"

# Background drain tasks, referenced so the loop does not garbage-collect them mid-flight.
DRAIN_GROUP = "registry-drain"  # the supervisor group of the queue drains heartbeats start
DRAIN_GRACE_SECONDS = 5.0  # at shutdown, how long a drain may take to finish (app.py SHUTDOWN_DEADLINE)


def _num(x: float) -> float | int:
    """Go marshals float64(1) as `1`; keep whole numbers integral on the wire."""
    return int(x) if x.is_integer() else x


# ---- runtime overrides (spec 04 §0): read by the A2A proxy and the idle timer ----


def _stored_capabilities(ctx: AppContext, ws_id: str) -> dict[str, bool] | None:
    caps = ctx.runtime_overrides.get(ws_id, {}).get("capabilities")
    return caps if isinstance(caps, dict) else None


def capabilities(ctx: AppContext, ws_id: str) -> dict[str, bool]:
    return dict(_stored_capabilities(ctx, ws_id) or {})


def has_capability(ctx: AppContext, ws_id: str, name: str) -> bool:
    caps = _stored_capabilities(ctx, ws_id)  # asked on every heartbeat: no copy of the map
    return caps is not None and bool(caps.get(name))


def idle_timeout_override(ctx: AppContext, ws_id: str) -> int | None:
    value = ctx.runtime_overrides.get(ws_id, {}).get("idle_timeout_seconds")
    return value if isinstance(value, int) and value > 0 else None


def _store_overrides(ctx: AppContext, ws_id: str, meta: RuntimeMetadata | None) -> None:
    if meta is None:
        ctx.runtime_overrides.pop(ws_id, None)
        return
    ctx.runtime_overrides[ws_id] = {
        "capabilities": dict(meta.capabilities),
        "idle_timeout_seconds": meta.idle_timeout_seconds or None,
    }


# ---- KV (cache only; failures are logged, never surfaced) ----


async def _cache_registration(ctx: AppContext, ws_id: str, host_url: str, internal_url: str) -> None:
    try:
        await ctx.kv.set(liveness_key(ws_id), "online", ctx.settings.LIVENESS_TTL_SECONDS)
        await ctx.kv.set(url_key(ws_id), host_url, URL_TTL)
        await ctx.kv.set(internal_url_key(ws_id), internal_url, URL_TTL)
    except Exception:
        log.exception("registry: caching urls for %s failed", ws_id)


async def _refresh_liveness(ctx: AppContext, ws_id: str) -> None:
    """EXPIRE semantics: extend the key if present; a heartbeat never re-creates it."""
    key, ttl = liveness_key(ws_id), ctx.settings.LIVENESS_TTL_SECONDS
    try:
        await ctx.kv.expire(key, ttl)
    except Exception:
        log.exception("registry: liveness refresh for %s failed", ws_id)


# ---- register ----


async def register(ctx: AppContext, ws_id: str, url: str, agent_card: Any, *, mint: bool) -> str | None:
    """Upsert and bring online; returns a freshly minted token when the workspace had none and `mint`
    (the route's caller may be given one: the open-bootstrap first caller or an admin, never an
    unauthenticated caller in production mode).

    A `removed` row stays removed and gets nothing: no cache entries (the A2A proxy trusts a cached
    url regardless of status), no WORKSPACE_ONLINE, no token that could never validate.
    """
    try:
        async with ctx.engine.begin() as conn:
            stored = await store.upsert_registration(conn, ws_id, url, agent_card, utcnow())
    except Exception:
        log.exception("registry: register upsert failed for %s", ws_id)
        raise ApiError(500, "registration failed") from None
    if stored is None:
        log.warning("registry: register for removed workspace %s ignored", ws_id)
        return None
    host_url = stored if stored.startswith(store.PROVISIONER_URL_PREFIX) else url
    await _cache_registration(ctx, ws_id, host_url, url)
    try:
        online = await ctx.lifecycle.transition(
            ws_id,
            to=Status.ONLINE,
            not_in=(Status.REMOVED,),
            event="WORKSPACE_ONLINE",
            payload={"url": host_url, "agent_card": agent_card},
        )
    except Exception:
        log.exception("registry: register transition failed for %s", ws_id)
        raise ApiError(500, "registration failed") from None
    if not online:  # deleted between the upsert and the transition
        await clear_workspace_keys(ctx.kv, ws_id)
        return None
    return await _mint_first_token(ctx, ws_id) if mint else None


async def _mint_first_token(ctx: AppContext, ws_id: str) -> str | None:
    try:
        async with ctx.engine.begin() as conn:
            if await tokens.has_live_token(conn, ws_id):
                return None
            return await tokens.issue_workspace_token(conn, ws_id)
    except Exception:
        log.exception("registry: token issuance failed for %s", ws_id)
        return None


# ---- heartbeat ----


async def heartbeat(ctx: AppContext, ws_id: str, hb: Heartbeat) -> None:
    now = utcnow()
    snap = await record_heartbeat(ctx, ws_id, hb, now)
    await after_heartbeat(ctx, ws_id, hb, snap, at=rfc3339(now) or "")


async def record_heartbeat(
    ctx: AppContext, ws_id: str, hb: Heartbeat, now: datetime
) -> store.HeartbeatSnapshot | None:
    """Write the heartbeat columns at `now`; the row as it was, or None when unknown/removed."""
    try:
        # Postgres does it in one statement, atomic without a transaction; SQLite reads then writes in one
        engine = ctx.autocommit if ctx.engine.dialect.name == "postgresql" else ctx.engine
        async with engine.begin() as own:
            return await _write_heartbeat(own, ws_id, hb, now)
    except Exception:
        log.exception("registry: heartbeat update failed for %s", ws_id)
        raise ApiError(500, "failed to update") from None


async def _write_heartbeat(
    conn: AsyncConnection, ws_id: str, hb: Heartbeat, now: datetime
) -> store.HeartbeatSnapshot | None:
    return await store.apply_heartbeat(
        conn,
        ws_id,
        now=now,
        error_rate=hb.error_rate,
        sample_error=hb.sample_error,
        active_tasks=hb.active_tasks,
        uptime_seconds=hb.uptime_seconds,
        current_task=hb.current_task,
        monthly_spend=store.clamp_spend(hb.monthly_spend),
    )


def batcher(ctx: AppContext) -> HeartbeatBatcher | None:
    """The Postgres heartbeat batcher of this app (registry/batch.py); None on SQLite."""
    if ctx.engine.dialect.name != "postgresql":
        return None
    return ctx.heartbeat_batcher


async def after_heartbeat(
    ctx: AppContext,
    ws_id: str,
    hb: Heartbeat,
    snap: store.HeartbeatSnapshot | None,
    *,
    queue_pending: bool | None = None,
    at: str = "",
) -> None:
    """Events, status moves and the queue drain after the write. `queue_pending`: whether the write
    already saw A2A items for `ws_id` (None: unknown, the drain probes for itself). `at`: the moment the
    write recorded (RFC 3339), the events' timestamp; now when not given."""
    if snap is None:
        # Unknown or removed: 200 as the reference, but no events and no per-id state, so
        # unauthenticated heartbeats for made-up ids cannot grow memory or spam the stream.
        ctx.runtime_overrides.pop(ws_id, None)
        return
    await _refresh_liveness(ctx, ws_id)
    status_mgmt = has_capability(ctx, ws_id, "status_mgmt")  # previous heartbeat's view
    moves = _status_moves(snap.status, hb, status_mgmt=status_mgmt)
    if moves:
        await _move_status(ctx, ws_id, moves)
    if hb.current_task != snap.current_task:
        await ctx.events.broadcast(
            "TASK_UPDATED", ws_id, {"active_tasks": hb.active_tasks, "current_task": hb.current_task}, at
        )
    await ctx.events.broadcast(
        "WORKSPACE_HEARTBEAT",
        ws_id,
        {"active_tasks": hb.active_tasks, "uptime_seconds": hb.uptime_seconds},
        at,
    )
    _store_overrides(ctx, ws_id, hb.runtime_metadata)
    if queue_pending is False:
        return
    if hb.active_tasks < max(snap.max_concurrent_tasks, 1):
        _schedule_drain(ctx, ws_id)


_Move = tuple[str, str, str, dict[str, Any]]  # (expect, to, event, payload)


def _status_moves(status: str, hb: Heartbeat, *, status_mgmt: bool) -> list[_Move]:
    """The heartbeat status table: the moves this heartbeat calls for from `status` (most call for none)."""
    moves: list[_Move] = []
    payload: dict[str, Any]
    if hb.runtime_state == "wedged" and status == Status.ONLINE:
        payload = {"runtime_state": "wedged", "sample_error": hb.sample_error}
        moves.append((Status.ONLINE, Status.DEGRADED, "WORKSPACE_DEGRADED", payload))
    if not status_mgmt and status == Status.ONLINE and hb.error_rate >= DEGRADE_ERROR_RATE:
        payload = {"error_rate": _num(hb.error_rate), "sample_error": hb.sample_error}
        moves.append((Status.ONLINE, Status.DEGRADED, "WORKSPACE_DEGRADED", payload))
    recovered = hb.error_rate < RECOVER_ERROR_RATE and hb.runtime_state == ""
    if not status_mgmt and status == Status.DEGRADED and recovered:
        moves.append((Status.DEGRADED, Status.ONLINE, "WORKSPACE_ONLINE", {}))
    if status == Status.OFFLINE:
        moves.append((Status.OFFLINE, Status.ONLINE, "WORKSPACE_ONLINE", {}))
    if status == Status.PROVISIONING:
        moves.append(
            (Status.PROVISIONING, Status.ONLINE, "WORKSPACE_ONLINE", {"recovered_from": "provisioning"})
        )
    return moves


async def _move_status(ctx: AppContext, ws_id: str, moves: list[_Move]) -> None:
    """Each move is a compare-and-set, so races resolve to one winner."""
    for expect, to, event, payload in moves:
        try:
            await ctx.lifecycle.transition(ws_id, to=to, expect=(expect,), event=event, payload=payload)
        except Exception:
            log.exception("registry: heartbeat transition %s->%s failed for %s", expect, to, ws_id)


def _schedule_drain(ctx: AppContext, ws_id: str) -> None:
    """Capacity freed: let the A2A queue (when wired) dispatch one queued item in the background."""
    hook = ctx.queue_drain
    if not callable(hook):
        return
    try:
        result = hook(ws_id)
    except Exception:
        log.exception("registry: queue drain hook failed for %s", ws_id)
        return
    if inspect.isawaitable(result):
        ctx.tasks.spawn(f"queue-drain:{ws_id}", _drain(result), group=DRAIN_GROUP)


async def _drain(result: Awaitable[object]) -> None:
    try:
        await result
    except Exception:
        log.exception("registry: queue drain failed")


async def shutdown(ctx: AppContext) -> None:
    """Stop the batcher, before the engine it uses is disposed.

    Drains still running were given DRAIN_GRACE_SECONDS by the app's task supervisor before this runs
    (most find nothing and end within milliseconds); only then were they cancelled. Cancelling one
    mid-statement abandons its pooled connection: on SQLite the driver thread then answers into a closed
    loop. A cancelled dispatch keeps its lease and is retried.
    """
    found = ctx.heartbeat_batcher
    if found is not None:
        await found.close()


# ---- agent card ----


async def update_card(ctx: AppContext, ws_id: str, agent_card: Any) -> None:
    try:
        async with ctx.engine.begin() as conn:
            changed = await store.update_agent_card(conn, ws_id, agent_card, utcnow())
    except Exception:
        log.exception("registry: update-card failed for %s", ws_id)
        raise ApiError(500, "failed to update card") from None
    if changed:
        await ctx.events.record("AGENT_CARD_UPDATED", ws_id, {"agent_card": agent_card})


# ---- discovery ----


def internal_url(ws_id: str) -> str:
    """The Docker-network address of a workspace container (`ws-<id[:12]>`, port 8000)."""
    return f"http://ws-{ws_id[:12]}:8000"


TRUSTED_URL_PREFIX = "http://127.0.0.1:"  # what our own backends store for the agents they start


def assigned_dial_url(ctx: AppContext, ws_id: str, url: str) -> str:
    """The address to dial for a URL our backend assigned, as seen from where this server runs.

    Our backends store an agent's address as `http://127.0.0.1:<port>`; the backend says what this server
    dials for it (`Backend.dial_url`: the Docker backend names the container when the server itself runs
    in a container, spec 04 §1.3). Callers pass only a URL the egress rules found server-assigned: the
    rewrite is platform-derived, never agent input.
    """
    backend = ctx.backend
    if not url.startswith(TRUSTED_URL_PREFIX) or backend is None:
        return url
    return backend.dial_url(ws_id, url)


def _for_container(url: str) -> str:
    """A host-loopback URL as seen from inside a container (first occurrence of each, as upstream)."""
    return url.replace("127.0.0.1", "host.docker.internal", 1).replace("localhost", "host.docker.internal", 1)


async def discover(ctx: AppContext, caller: str, target: str) -> dict[str, Any]:
    if not await can_communicate(ctx.engine, caller, target):
        raise ApiError(403, "not authorized to discover this workspace")
    try:
        async with ctx.engine.connect() as conn:
            rows = await store.discovery_rows(conn, [target, caller])
    except Exception:
        log.exception("registry: discovery lookup failed for %s", target)
        raise ApiError(500, "lookup failed") from None
    row = rows.get(target)
    if row is None:
        raise ApiError(404, "workspace not found")
    name = row.name or ""
    if (row.runtime or DEFAULT_RUNTIME) == "external" and row.url:
        caller_row = rows.get(caller)
        caller_runtime = (caller_row.runtime if caller_row else None) or DEFAULT_RUNTIME
        url = row.url if caller_runtime == "external" else _for_container(row.url)
        if not await is_safe_url(url, ctx.settings):
            raise ApiError(503, "workspace URL failed safety check")
        return {"id": target, "name": name, "url": url}
    cached = await _cached_internal_url(ctx, target)
    if cached:
        return {"id": target, "name": name, "url": cached}
    if row.status in (Status.ONLINE, Status.DEGRADED):
        url = internal_url(target)
        try:
            await ctx.kv.set(internal_url_key(target), url, URL_TTL)
        except Exception:
            log.exception("registry: caching internal url for %s failed", target)
        return {"id": target, "name": name, "url": url}
    # ApiError's first parameter is named `status`, so the body key is added after construction.
    raise ApiError(503, "workspace not available", status=row.status)


async def _cached_internal_url(ctx: AppContext, ws_id: str) -> str | None:
    try:
        return await ctx.kv.get(internal_url_key(ws_id))
    except Exception:
        log.exception("registry: reading internal url for %s failed", ws_id)
        return None


# ---- peers ----


def _peer_json(row: Any) -> dict[str, Any]:
    # keys in Go's map order (sorted), so responses match the reference byte for byte
    return {
        "active_tasks": row.active_tasks,
        "agent_card": row.agent_card,
        "id": row.id,
        "name": row.name,
        "parent_id": row.parent_id,
        "role": row.role or None,
        "status": row.status,
        "tier": row.tier,
        "url": row.url or "",
    }


def _matches(row: Any, needle: str) -> bool:
    return needle in (row.name or "").lower() or needle in (row.role or "").lower()


async def peers(ctx: AppContext, ws_id: str, q: str) -> list[dict[str, Any]]:
    try:
        async with ctx.engine.connect() as conn:
            exists, parent_id = await store.parent_of(conn, ws_id)
            rows = await store.peer_rows(conn, ws_id, parent_id) if exists else []
    except Exception:
        log.exception("registry: peers lookup failed for %s", ws_id)
        raise ApiError(500, "lookup failed") from None
    if not exists:
        raise ApiError(404, "workspace not found")
    needle = q.strip().lower()
    return [_peer_json(r) for r in rows if not needle or _matches(r, needle)]


async def check_access(ctx: AppContext, caller: str, target: str) -> bool:
    return await can_communicate(ctx.engine, caller, target)
