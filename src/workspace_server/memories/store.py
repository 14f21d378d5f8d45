"""SQL for `agent_memories`.

Text search: on Postgres `q` of two or more bytes is full-text (`plainto_tsquery('english')`, ranked by
`ts_rank`), served by the GIN index of migration 0004. SQLite has no text-search configuration, so there
every word of `q` must occur as a case-insensitive substring (a prefix-tolerant stand-in for stemming),
newest first. Substring filters (`ILIKE`) treat `%` and `_` in the query literally.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from workspace_server.common.ids import new_id
from workspace_server.common.time import utcnow
from workspace_server.db.schema import agent_memories, workspaces
from workspace_server.workspaces.status import Status

FTS_MIN_QUERY_BYTES = 2
_WORD = re.compile(r"\w+")
_ENGLISH: sa.ColumnElement[Any] = sa.literal_column("'english'::regconfig")
m, w = agent_memories, workspaces
COLUMNS = (m.c.id, m.c.workspace_id, m.c.content, m.c.scope, m.c.namespace, m.c.created_at)


async def insert_memory(
    conn: AsyncConnection, *, workspace_id: str, content: str, scope: str, namespace: str
) -> tuple[str, datetime]:
    memory_id, now = new_id(), utcnow()
    await conn.execute(
        sa.insert(m).values(
            id=memory_id,
            workspace_id=workspace_id,
            content=content,
            scope=scope,
            namespace=namespace,
            created_at=now,
            updated_at=now,
        )
    )
    return memory_id, now


async def delete_memory(conn: AsyncConnection, workspace_id: str, memory_id: str) -> bool:
    result = await conn.execute(sa.delete(m).where(m.c.id == memory_id, m.c.workspace_id == workspace_id))
    return bool(result.rowcount)


def _is_postgres(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


def _tsv() -> sa.ColumnElement[Any]:
    return sa.func.to_tsvector(_ENGLISH, m.c.content)


def _tsq(q: str) -> sa.ColumnElement[Any]:
    return sa.func.plainto_tsquery(_ENGLISH, q)


def text_filter(conn: AsyncConnection, q: str) -> tuple[list[sa.ColumnElement[bool]], list[Any]]:
    """(WHERE clauses, ORDER BY) for the REST search's `q` (spec 05 §2)."""
    newest = [m.c.created_at.desc(), m.c.id]
    if not q:
        return [], newest
    if len(q.encode()) < FTS_MIN_QUERY_BYTES:
        return [m.c.content.icontains(q, autoescape=True)], newest
    if _is_postgres(conn):
        match = _tsv().bool_op("@@")(_tsq(q))
        return [match], [sa.func.ts_rank(_tsv(), _tsq(q)).desc(), *newest]
    words = _WORD.findall(q)
    if not words:  # only punctuation: Postgres' tsquery would be empty and match nothing
        return [sa.false()], newest
    return [m.c.content.icontains(word, autoescape=True) for word in words], newest


async def search(
    conn: AsyncConnection,
    *,
    workspace_id: str,
    scope: str,
    team_anchor: str,
    namespace: str,
    q: str,
    limit: int,
) -> list[Any]:
    """The REST search: scope decides the rows (LOCAL own, GLOBAL all, TEAM the anchor's team, else own)."""
    where: list[sa.ColumnElement[bool]]
    stmt = sa.select(*COLUMNS)
    if scope == "LOCAL":
        where = [m.c.workspace_id == workspace_id, m.c.scope == "LOCAL"]
    elif scope == "GLOBAL":
        where = [m.c.scope == "GLOBAL"]
    elif scope == "TEAM":
        stmt = stmt.select_from(m.join(w, w.c.id == m.c.workspace_id))
        team = sa.or_(w.c.parent_id == team_anchor, w.c.id == team_anchor)
        where = [m.c.scope == "TEAM", w.c.status != Status.REMOVED, team]
    else:
        where = [m.c.workspace_id == workspace_id]
    if namespace:
        where.append(m.c.namespace == namespace)
    text_where, order = text_filter(conn, q)
    stmt = stmt.where(*where, *text_where).order_by(*order).limit(limit)
    return list((await conn.execute(stmt)).all())


async def recall(conn: AsyncConnection, workspace_id: str, scope: str, query: str) -> list[Any]:
    """The MCP `recall_memory` search: LOCAL own, TEAM self + same-parent siblings, else own LOCAL+TEAM."""
    stmt = sa.select(*COLUMNS)
    where: list[sa.ColumnElement[bool]]
    if scope == "LOCAL":
        where = [m.c.workspace_id == workspace_id, m.c.scope == "LOCAL"]
    elif scope == "TEAM":
        parent = (
            sa.select(w.c.parent_id)
            .where(w.c.id == workspace_id, w.c.parent_id.is_not(None))
            .scalar_subquery()
        )
        stmt = stmt.select_from(m.join(w, w.c.id == m.c.workspace_id))
        team = sa.or_(w.c.id == workspace_id, w.c.parent_id == parent)
        where = [m.c.scope == "TEAM", w.c.status != Status.REMOVED, team]
    else:
        where = [m.c.workspace_id == workspace_id, m.c.scope.in_(("LOCAL", "TEAM"))]
    if query:
        where.append(m.c.content.icontains(query, autoescape=True))
    stmt = stmt.where(*where).order_by(m.c.created_at.desc(), m.c.id).limit(50)
    return list((await conn.execute(stmt)).all())


# ---- admin backup (export / import) ----


async def export_rows(conn: AsyncConnection) -> list[Any]:
    """Every memory of every workspace (any status) with its workspace's name, oldest first."""
    stmt = (
        sa.select(
            m.c.id,
            m.c.workspace_id,
            m.c.content,
            m.c.scope,
            m.c.namespace,
            m.c.created_at,
            w.c.name.label("workspace_name"),
        )
        .select_from(m.join(w, w.c.id == m.c.workspace_id))
        .order_by(m.c.created_at, m.c.id)
    )
    return list((await conn.execute(stmt)).all())


async def workspace_id_by_name(conn: AsyncConnection, name: str) -> str | None:
    """The workspace an imported memory goes to: exact name, a live one before a removed one, then the
    oldest (the reference took whichever row came first)."""
    removed_last = sa.case((w.c.status == Status.REMOVED, 1), else_=0)
    stmt = sa.select(w.c.id).where(w.c.name == name).order_by(removed_last, w.c.created_at, w.c.id).limit(1)
    return (await conn.execute(stmt)).scalar()


async def memory_texts(conn: AsyncConnection, workspace_id: str) -> list[Any]:
    """(content, scope) of every memory the workspace holds (the import's duplicate check)."""
    stmt = sa.select(m.c.content, m.c.scope).where(m.c.workspace_id == workspace_id)
    return list((await conn.execute(stmt)).all())


async def insert_memories(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Bulk insert of rows with workspace_id, content, scope, namespace and created_at (None: now)."""
    now = utcnow()
    values = [{**r, "id": new_id(), "created_at": r["created_at"] or now, "updated_at": now} for r in rows]
    await conn.execute(sa.insert(m), values)
