"""The activity writer's sinks (`a2a/logstore.py`) store a batch as the proxy's rows say, in one statement.

On Postgres the batch is the rows' journal lines joined into one JSON document (`jsonb_to_recordset`); on
SQLite the SQLAlchemy insert binds the values. Both must give the same rows: JSON columns given as JSON
text read back as their values, a JSON column left None is SQL NULL (not JSON null), an absent status is
'ok', and the outbound caller is stamped. A batch that fails raises (the writer then retries row by row):
these tests call the sink itself, so a batch statement that Postgres refuses fails them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tests.integration.replica_support import seed
from workspace_server.a2a.journal import encode_entry
from workspace_server.a2a.logstore import sink_for
from workspace_server.common.ids import new_id
from workspace_server.db.engine import make_engine
from workspace_server.db.migrate import upgrade_to_head
from workspace_server.db.schema import activity_logs, workspaces

CREATED = datetime(2026, 12, 7, 6, 30, 1, 250000, tzinfo=UTC)


def row(ws_id: str, **values: Any) -> dict[str, Any]:
    base = {
        "id": new_id(),
        "workspace_id": ws_id,
        "activity_type": "a2a_receive",
        "source_id": None,
        "target_id": ws_id,
        "method": "message/send",
        "summary": "message/send → Agent",
        "request_body": None,
        "response_body": None,
        "tool_trace": None,
        "duration_ms": 3,
        "error_detail": None,
        "created_at": CREATED,
    }
    return base | values


async def migrated(db_url: str) -> Any:
    engine = make_engine(db_url)
    await upgrade_to_head(engine)  # the Postgres test database is migrated already; SQLite is a new file
    return engine


async def stored(engine: Any, ws_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        mine = activity_logs.c.workspace_id == ws_id
        got = (await conn.execute(sa.select(activity_logs).where(mine))).all()
        null_json = await conn.execute(
            sa.select(activity_logs.c.id).where(
                activity_logs.c.workspace_id == ws_id, activity_logs.c.response_body.is_(None)
            )
        )
        stamp = await conn.scalar(sa.select(workspaces.c.last_outbound_at).where(workspaces.c.id == ws_id))
    return {"rows": {r.id: r for r in got}, "null_response": {r.id for r in null_json}, "stamp": stamp}


async def test_a_batch_is_stored_as_its_rows_say(db_url: str) -> None:
    engine = await migrated(db_url)
    ws_id, _ = await seed(db_url)
    request = {"jsonrpc": "2.0", "id": "1", "params": {"text": "é \u2028 ☃"}}
    reply = {"result": {"parts": [{"text": "ok"}], "n": 2.5}}
    spliced = row(ws_id, request_body=request, response_body=reply, tool_trace=[{"tool": "x"}])
    raw = {
        "request_body": json.dumps(request, ensure_ascii=False).encode(),
        "response_body": b'{"result":{"parts":[{"text":"ok"}],"n":2.5}}',
    }
    failed = row(ws_id, status="error", error_detail="agent gone", duration_ms=None)
    plain = row(ws_id, request_body={"k": [1, None]})  # no text at hand: encoded from its values
    plain.pop("status", None)
    rows = [spliced, failed, plain]
    lines = [encode_entry(spliced, ws_id, raw), encode_entry(failed, None), encode_entry(plain, None)]
    sink = sink_for(engine)
    try:
        await sink.write(rows, {ws_id}, lines)
        got = await stored(engine, ws_id)
    finally:
        await sink.close()
        await engine.dispose()
    by_id = got["rows"]
    assert set(by_id) == {r["id"] for r in rows}
    first = by_id[spliced["id"]]
    assert (first.request_body, first.response_body, first.tool_trace) == (request, reply, [{"tool": "x"}])
    assert (first.status, first.duration_ms, first.summary) == ("ok", 3, "message/send → Agent")
    assert first.created_at == CREATED
    second = by_id[failed["id"]]
    assert (second.status, second.error_detail, second.duration_ms) == ("error", "agent gone", None)
    assert by_id[plain["id"]].request_body == {"k": [1, None]} and by_id[plain["id"]].status == "ok"
    assert got["null_response"] == {failed["id"], plain["id"]}  # SQL NULL, not JSON null
    assert got["stamp"] is not None


async def test_rows_without_lines_and_replies_that_are_not_strict_utf8(db_url: str) -> None:
    """A caller that hands no lines gets its rows encoded by the sink; an agent reply spliced in as bytes
    that are not strict UTF-8 (an encoded lone surrogate, which Python's JSON reader accepts) is written
    from the row's values instead of failing the batch."""
    engine = await migrated(db_url)
    ws_id, _ = await seed(db_url)
    odd = row(ws_id, response_body={"text": "fine"})
    odd_line = encode_entry(odd, None, {"response_body": b'{"text":"\xed\xa0\x80"}'})
    plain = row(ws_id, summary="no line")
    sink = sink_for(engine)
    try:
        await sink.write([odd], set(), [odd_line])
        await sink.write([plain], set())
        got = await stored(engine, ws_id)
    finally:
        await sink.close()
        await engine.dispose()
    assert got["rows"][odd["id"]].response_body == {"text": "fine"}
    assert got["rows"][plain["id"]].summary == "no line"
    assert got["stamp"] is None
