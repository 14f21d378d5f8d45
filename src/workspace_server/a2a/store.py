"""SQL for the A2A proxy, its queue, token usage and delegation rows (which live in `activity_logs`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.db.schema import a2a_queue, activity_logs, workspace_token_usage, workspaces

ACTIVE = ("queued", "dispatched")
_ACTIVE_KEY = sa.text("idempotency_key IS NOT NULL AND status IN ('queued','dispatched')")


def _insert_for(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


# ---- the target of a proxied call ----


@dataclass(frozen=True, slots=True)
class TargetRow:
    """What the proxy needs about its target. A plain object, not the driver's row: the cached copy is
    read several times on every call, and a SQLAlchemy Row's attribute access costs ten times a slot's."""

    name: str | None
    url: str | None
    status: str | None
    runtime: str | None
    budget_limit: Any
    monthly_spend: Any


async def target_row(conn: AsyncConnection, ws_id: str) -> TargetRow | None:
    w = workspaces
    stmt = sa.select(w.c.name, w.c.url, w.c.status, w.c.runtime, w.c.budget_limit, w.c.monthly_spend)
    row = (await conn.execute(stmt.where(w.c.id == ws_id))).first()
    return None if row is None else TargetRow(*row)


async def queue_probe(conn: AsyncConnection, ws_id: str, key: str) -> tuple[str | None, bool]:
    """(the active item holding message `key`, whether the target has any active item at all)."""
    q = a2a_queue
    stmt = (
        sa.select(q.c.id, q.c.idempotency_key)
        .where(q.c.workspace_id == ws_id, q.c.status.in_(ACTIVE))
        .order_by((q.c.idempotency_key == key).desc())
        .limit(1)
    )
    row = (await conn.execute(stmt)).first()
    if row is None:
        return None, False
    return (str(row.id) if row.idempotency_key == key else None), True


async def workspace_name(conn: AsyncConnection, ws_id: str) -> str | None:
    name: str | None = (
        await conn.execute(sa.select(workspaces.c.name).where(workspaces.c.id == ws_id))
    ).scalar_one_or_none()
    return name


# ---- queue ----


async def enqueue(
    conn: AsyncConnection,
    *,
    ws_id: str,
    caller_id: str | None,
    body: Any,
    method: str | None,
    key: str | None,
    now: datetime,
    priority: int = 50,
) -> str:
    """Insert a queued item; with a key already active for this target, that row's id instead."""
    q = a2a_queue
    stmt = (
        _insert_for(conn)(q)
        .values(
            id=new_id(),
            workspace_id=ws_id,
            caller_id=caller_id,
            priority=priority,
            body=body,
            method=method,
            idempotency_key=key,
            enqueued_at=now,
            status="queued",
        )
        .on_conflict_do_nothing(
            index_elements=[q.c.workspace_id, q.c.idempotency_key], index_where=_ACTIVE_KEY
        )
        .returning(q.c.id)
    )
    new = (await conn.execute(stmt)).scalar_one_or_none()
    if new is not None:
        return str(new)
    existing = await active_by_key(conn, ws_id, key or "")
    if existing is None:  # the conflicting row finished in between: nothing holds the key now
        raise RuntimeError("queue idempotency conflict vanished")
    return existing


async def active_by_key(conn: AsyncConnection, ws_id: str, key: str) -> str | None:
    q = a2a_queue
    found = (
        await conn.execute(
            sa.select(q.c.id)
            .where(q.c.workspace_id == ws_id, q.c.idempotency_key == key, q.c.status.in_(ACTIVE))
            .limit(1)
        )
    ).scalar_one_or_none()
    return None if found is None else str(found)


async def queue_depth(conn: AsyncConnection, ws_id: str) -> int:
    q = a2a_queue
    n = (
        await conn.execute(
            sa.select(sa.func.count()).select_from(q).where(q.c.workspace_id == ws_id, q.c.status == "queued")
        )
    ).scalar_one()
    return int(n)


async def has_pending(conn: AsyncConnection, ws_id: str) -> bool:
    """Anything queued or in flight for `ws_id`? One index probe; the common answer on a heartbeat is no."""
    q = a2a_queue
    stmt = (
        sa.select(q.c.id).where(q.c.workspace_id == ws_id, q.c.status.in_(("queued", "dispatched"))).limit(1)
    )
    return (await conn.execute(stmt)).first() is not None


async def reclaim_expired(
    conn: AsyncConnection, ws_id: str, *, cutoff: datetime, max_attempts: int
) -> list[Row[Any]]:
    """Dispatched items whose lease ran out (the dispatcher died): back to queued, or failed when spent."""
    q = a2a_queue
    stmt = (
        sa.update(q)
        .where(q.c.workspace_id == ws_id, q.c.status == "dispatched", q.c.dispatched_at < cutoff)
        .values(
            status=sa.case((q.c.attempts >= max_attempts, "failed"), else_="queued"),
            dispatched_at=None,
            last_error="dispatch lease expired",
        )
        .returning(q.c.id, q.c.status, q.c.caller_id, q.c.body, q.c.workspace_id)
    )
    return list((await conn.execute(stmt)).all())


async def claim_next(conn: AsyncConnection, ws_id: str, now: datetime) -> Row[Any] | None:
    """Claim the oldest highest-priority unexpired queued item: one statement, so one winner.

    Postgres skips rows another claimer holds (FOR UPDATE SKIP LOCKED); SQLite runs one writer at a
    time and the outer `status = 'queued'` makes the UPDATE a compare-and-set.
    """
    q = a2a_queue
    candidate = (
        sa.select(q.c.id)
        .where(
            q.c.workspace_id == ws_id,
            q.c.status == "queued",
            sa.or_(q.c.expires_at.is_(None), q.c.expires_at > now),
        )
        .order_by(q.c.priority.desc(), q.c.enqueued_at, q.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        sa.update(q)
        .where(q.c.id == candidate, q.c.status == "queued")
        .values(status="dispatched", dispatched_at=now, attempts=q.c.attempts + 1)
        .returning(q.c.id, q.c.workspace_id, q.c.caller_id, q.c.body, q.c.method, q.c.attempts)
    )
    return (await conn.execute(stmt)).first()


async def renew_lease(conn: AsyncConnection, item_id: str, now: datetime) -> None:
    q = a2a_queue
    await conn.execute(
        sa.update(q).where(q.c.id == item_id, q.c.status == "dispatched").values(dispatched_at=now)
    )


async def mark_completed(conn: AsyncConnection, item_id: str, now: datetime, note: str | None = None) -> None:
    q = a2a_queue
    await conn.execute(
        sa.update(q).where(q.c.id == item_id).values(status="completed", completed_at=now, last_error=note)
    )


async def mark_failed(conn: AsyncConnection, item_id: str, error: str) -> None:
    q = a2a_queue
    await conn.execute(sa.update(q).where(q.c.id == item_id).values(status="failed", last_error=error))


async def requeue(conn: AsyncConnection, item_id: str, error: str, max_attempts: int) -> str:
    """Back to `queued` for the next drain, or `failed` once `max_attempts` are spent; the new status."""
    q = a2a_queue
    stmt = (
        sa.update(q)
        .where(q.c.id == item_id)
        .values(
            status=sa.case((q.c.attempts >= max_attempts, "failed"), else_="queued"),
            last_error=error,
            dispatched_at=None,
        )
        .returning(q.c.status)
    )
    status = (await conn.execute(stmt)).scalar_one_or_none()
    return str(status or "failed")


async def drop_stale(conn: AsyncConnection, *, cutoff: datetime, ws_id: str | None) -> list[Row[Any]]:
    q = a2a_queue
    stmt = sa.update(q).where(q.c.status == "queued", q.c.enqueued_at < cutoff)
    if ws_id:
        stmt = stmt.where(q.c.workspace_id == ws_id)
    note = "dropped by operator: stale queued item"
    stmt = stmt.values(
        status="dropped",
        last_error=sa.func.coalesce(sa.func.nullif(q.c.last_error, ""), note),
    ).returning(q.c.id, q.c.workspace_id, q.c.caller_id, q.c.body)
    return list((await conn.execute(stmt)).all())


# ---- token usage (spec 01 §3 "metrics") ----


async def upsert_token_usage(
    conn: AsyncConnection, ws_id: str, period_start: datetime, inp: int, out: int, cost: float
) -> None:
    u = workspace_token_usage
    stmt = _insert_for(conn)(u).values(
        id=new_id(),
        workspace_id=ws_id,
        period_start=period_start,
        input_tokens=inp,
        output_tokens=out,
        call_count=1,
        estimated_cost_usd=cost,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[u.c.workspace_id, u.c.period_start],
        set_={
            "input_tokens": u.c.input_tokens + stmt.excluded.input_tokens,
            "output_tokens": u.c.output_tokens + stmt.excluded.output_tokens,
            "call_count": u.c.call_count + 1,
            "estimated_cost_usd": u.c.estimated_cost_usd + stmt.excluded.estimated_cost_usd,
        },
    )
    await conn.execute(stmt)


async def token_usage(conn: AsyncConnection, ws_id: str, period_start: datetime) -> Any | None:
    """The (input, output, calls, cost) row of `ws_id` for the day starting at `period_start`, if any."""
    u = workspace_token_usage
    stmt = sa.select(u.c.input_tokens, u.c.output_tokens, u.c.call_count, u.c.estimated_cost_usd).where(
        u.c.workspace_id == ws_id, u.c.period_start == period_start
    )
    return (await conn.execute(stmt)).first()


# ---- delegation rows (activity_logs, method delegate / delegate_result) ----

_a = activity_logs


def _request_delegation_id() -> Any:
    return _a.c.request_body["delegation_id"].as_string()


def _response_delegation_id() -> Any:
    return _a.c.response_body["delegation_id"].as_string()


async def delegation_by_key(conn: AsyncConnection, ws_id: str, key: str) -> Row[Any] | None:
    stmt = (
        sa.select(_request_delegation_id().label("delegation_id"), _a.c.status, _a.c.target_id)
        .where(_a.c.workspace_id == ws_id, _a.c.idempotency_key == key)
        .limit(1)
    )
    return (await conn.execute(stmt)).first()


async def delete_failed_by_key(conn: AsyncConnection, ws_id: str, key: str) -> None:
    await conn.execute(
        sa.delete(_a).where(_a.c.workspace_id == ws_id, _a.c.idempotency_key == key, _a.c.status == "failed")
    )


async def set_delegation_status(
    conn: AsyncConnection, ws_id: str, delegation_id: str, status: str, error: str = ""
) -> int:
    """The `delegate` row's status; an empty error keeps the stored one (as upstream)."""
    values: dict[str, Any] = {"status": status}
    if error:
        values["error_detail"] = error
    stmt = (
        sa.update(_a)
        .where(
            _a.c.workspace_id == ws_id, _a.c.method == "delegate", _request_delegation_id() == delegation_id
        )
        .values(**values)
    )
    return int((await conn.execute(stmt)).rowcount or 0)


async def update_delegate_result(
    conn: AsyncConnection,
    ws_id: str,
    target_id: str,
    delegation_id: str,
    *,
    status: str,
    summary: str,
    response_body: Any,
    error: str | None = None,
) -> int:
    """Turn the `queued` delegate_result row of a delegation into its final one; rows changed."""
    stmt = (
        sa.update(_a)
        .where(
            _a.c.workspace_id == ws_id,
            _a.c.method == "delegate_result",
            _a.c.target_id == target_id,
            _response_delegation_id() == delegation_id,
        )
        .values(status=status, summary=summary, response_body=response_body, error_detail=error)
    )
    return int((await conn.execute(stmt)).rowcount or 0)


async def list_delegations(conn: AsyncConnection, ws_id: str, limit: int = 50) -> list[Row[Any]]:
    stmt = (
        sa.select(_a)
        .where(_a.c.workspace_id == ws_id, _a.c.method.in_(("delegate", "delegate_result")))
        .order_by(_a.c.created_at.desc(), _a.c.id.desc())
        .limit(limit)
    )
    return list((await conn.execute(stmt)).all())
