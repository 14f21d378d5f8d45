"""Nothing lost on a crash (issue 14 §4): a proxied call's activity row is journaled before the call is
answered, so a server killed before its batch was written stores the row at its next start.

A real `serve` process with a flush delay of a minute (no batch is written while it runs), a stub agent,
three answered calls, kill -9; the rows are not in the database, the journal holds them; a new server on
the same DATA_DIR stores them, exactly once, and empties the journal.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.integration.registry_support import add_workspace
from tests.integration.replica_support import ADMIN_H, Replica, poll, query, replica_env, seed, wait_all_ready
from tests.integration.stub_http import StubHandler, StubServer
from tests.integration.test_http_shell_routes import ctx_of
from workspace_server.a2a.journal import OUTBOUND_KEY, ActivityJournal, encode_entry
from workspace_server.db.schema import activity_logs


class EchoAgent(StubServer):
    def __init__(self) -> None:
        class Handler(StubHandler):
            def do_POST(self) -> None:
                req = self.read_json()
                reply = {"jsonrpc": "2.0", "id": req.get("id"), "result": {"kind": "message", "parts": []}}
                self.respond(200, json.dumps(reply).encode())

        super().__init__(Handler)


@pytest.fixture
def agent() -> Iterator[EchoAgent]:
    a = EchoAgent()
    yield a
    a.close()


def journal_lines(data_dir: Path) -> list[dict[str, Any]]:
    """Each entry as {"row", "outbound"}: a line is the row's columns, the caller to stamp under
    OUTBOUND_KEY."""
    entries = [
        json.loads(line)
        for path in sorted((data_dir / "activity-journal").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    return [{"outbound": e.pop(OUTBOUND_KEY, None), "row": e} for e in entries]


async def rows_of(db_url: str, ws_id: str) -> list[Any]:
    stmt = sa.select(activity_logs.c.id, activity_logs.c.request_body, activity_logs.c.status)
    return await query(db_url, stmt.where(activity_logs.c.workspace_id == ws_id))


async def test_rows_of_answered_calls_survive_a_kill_9(db_url: str, tmp_path: Path, agent: EchoAgent) -> None:
    data_dir = tmp_path / "data"

    def env(port: int, **extra: str) -> dict[str, str]:
        return replica_env(db_url, "", data_dir, port, **extra)

    first = Replica("first", lambda port: env(port, ACTIVITY_FLUSH_SECONDS="60"), tmp_path)
    try:
        wait_all_ready([first])
        ws_id, _ = await seed(db_url, url=agent.url)  # the server made the schema
        async with httpx.AsyncClient(base_url=first.url, headers=ADMIN_H, timeout=30) as c:
            for i in range(3):
                body = {
                    "jsonrpc": "2.0",
                    "id": str(i),
                    "method": "message/send",
                    "params": {"message": {"role": "user", "messageId": f"m-{i}", "parts": []}},
                }
                r = await c.post(f"/workspaces/{ws_id}/a2a", json=body)
                assert r.status_code == 200, r.text
        first.kill()
    finally:
        first.stop()

    assert await rows_of(db_url, ws_id) == []  # the batch was never written: only the journal has them
    journaled = journal_lines(data_dir)
    assert [e["row"]["request_body"]["id"] for e in journaled] == ["0", "1", "2"]

    second = Replica("second", env, tmp_path)
    try:
        wait_all_ready([second])
        rows = await poll(lambda: rows_of(db_url, ws_id), "restored rows", 30)
        assert sorted(r.request_body["id"] for r in rows) == ["0", "1", "2"]
        assert {r.id for r in rows} == {e["row"]["id"] for e in journaled}  # the ids fixed when journaled
        assert journal_lines(data_dir) == []
    finally:
        second.stop()
    assert len(await rows_of(db_url, ws_id)) == 3  # a clean stop wrote nothing twice


def test_recover_reads_dead_segments_and_skips_those_a_live_process_holds(tmp_path: Path) -> None:
    """A dead process's segment in this format (a torn last line skipped) and one an older version left
    (`{"row", "outbound", "raw"}` lines) are read back; a live process's segment is left alone."""
    ours, theirs = ActivityJournal(tmp_path), ActivityJournal(tmp_path)
    assert theirs.open() and ours.open()
    theirs.append(encode_entry({"id": "live"}, None))
    dead = tmp_path / "123-dead.jsonl"
    dead.write_bytes(encode_entry({"id": "a", "n": 1}, "w1") + b'\n{"id":"b","outb')  # torn last line
    old = tmp_path / "122-old.jsonl"
    old.write_text('{"row":{"id":"c","request_body":null},"outbound":null,"raw":{"request_body":{"k":1}}}\n')
    found = ours.recover()
    assert [(p.name, [(e.row, e.outbound) for e in entries]) for p, _, entries in found] == [
        ("122-old.jsonl", [({"id": "c", "request_body": {"k": 1}}, None)]),
        ("123-dead.jsonl", [({"id": "a", "n": 1}, "w1")]),
    ]
    for path, fd, _ in found:
        ActivityJournal.release(path, fd)
    assert not dead.exists() and not old.exists()
    theirs.close()
    ours.close()


def test_a_stored_segment_is_removed_and_later_rows_go_to_a_new_one(tmp_path: Path) -> None:
    journal = ActivityJournal(tmp_path)
    assert journal.open()
    assert journal.rotate() is None  # nothing appended: nothing to hand over
    journal.append(encode_entry({"id": "a"}, None))
    seg = journal.rotate()
    assert seg is not None and seg.rows == 1
    journal.append(encode_entry({"id": "b"}, None))
    journal.discard(seg)
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and seg.path.name not in names
    fd = os.open(tmp_path / names[0], os.O_RDONLY)
    with pytest.raises(OSError):  # still ours
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
    journal.close()


def test_columns_given_as_json_text_read_back_as_their_values(tmp_path: Path) -> None:
    writer, reader = ActivityJournal(tmp_path / "j"), ActivityJournal(tmp_path / "j")
    assert writer.open()
    compact = {"jsonrpc": "2.0", "params": {"text": "é\u2028\n"}}
    pretty = {"result": [1, 2.5, None]}
    raw = {
        "request_body": json.dumps(compact, ensure_ascii=False).encode(),
        "response_body": json.dumps(pretty, indent=2).encode(),  # has newlines: encoded, not spliced
    }
    row = {"id": "r1", "request_body": compact, "response_body": pretty, "tool_trace": None}
    writer.append(encode_entry(row, "w1", raw))
    null = {"id": "r2", "request_body": None}
    writer.append(encode_entry(null, None, {"request_body": b'{"x":1}'}))  # NULL stays NULL
    writer.unlock(writer.rotate().fd)  # type: ignore[union-attr]
    writer.close()
    [(_, fd, entries)] = reader.recover()
    assert [e.row for e in entries] == [row, {"id": "r2", "request_body": None}]
    assert entries[0].outbound == "w1"
    os.close(fd)


def test_rows_orjson_refuses_are_journaled_all_the_same(tmp_path: Path) -> None:
    """A lone surrogate (an agent's error text) or an integer past 64 bits (an agent's tool trace) take
    the stdlib's path; they read back as they were, beside a row that took orjson's, datetime included."""
    writer, reader = ActivityJournal(tmp_path / "j"), ActivityJournal(tmp_path / "j")
    assert writer.open()
    created = datetime(2026, 12, 7, 6, 30, 1, 250000, tzinfo=UTC)
    rows = [
        {"id": "plain", "summary": "a → b", "created_at": created, "request_body": {"k": 1}},
        {"id": "surrogate", "error_detail": "bad \ud800 text", "created_at": created},
        {"id": "huge", "tool_trace": [{"n": 2**70}], "request_body": {"k": 2}},
    ]
    for row in rows:
        raw = {"request_body": json.dumps(row["request_body"]).encode()} if "request_body" in row else None
        writer.append(encode_entry(row, None, raw))
    writer.unlock(writer.rotate().fd)  # type: ignore[union-attr]
    writer.close()
    [(_, fd, entries)] = reader.recover()
    os.close(fd)
    read = [e.row for e in entries]
    assert [r["id"] for r in read] == ["plain", "surrogate", "huge"]
    assert datetime.fromisoformat(read[0]["created_at"]) == created
    assert read[0]["summary"] == "a → b" and read[0]["request_body"] == {"k": 1}
    assert read[1]["error_detail"] == "bad \ud800 text"
    assert read[2]["tool_trace"] == [{"n": 2**70}] and read[2]["request_body"] == {"k": 2}


def test_an_unwritable_directory_disables_the_journal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    journal = ActivityJournal(blocker / "journal")
    assert not journal.open()
    journal.append(encode_entry({"id": "a"}, None))  # a no-op, not an error
    assert journal.rotate() is None


class SlowAgent(StubServer):
    """Answers after `delay` seconds; records each request it finished answering."""

    def __init__(self, delay: float) -> None:
        self.answered: list[str] = []
        done = threading.Event()
        self.done = done
        stub = self

        class Handler(StubHandler):
            def do_POST(self) -> None:
                req = self.read_json()
                time.sleep(delay)
                reply = {"jsonrpc": "2.0", "id": req.get("id"), "result": {"kind": "message", "parts": []}}
                self.respond(200, json.dumps(reply).encode())
                stub.answered.append(str(req.get("id")))
                done.set()

        super().__init__(Handler)


async def test_a_caller_that_hangs_up_does_not_abort_the_delivery(
    live_server_factory: Any, db_url: str
) -> None:
    """The proxy runs in the request's task: uvicorn must not cancel it when the client goes away, so the
    agent's reply is still read and recorded (a real uvicorn server, the client gone after 0.3 s)."""
    agent = SlowAgent(delay=1.5)
    try:
        srv = live_server_factory(MOLECULE_ENV="development")
        ws_id, _ = await seed(db_url, url=agent.url.replace("127.0.0.1", "localhost"))
        body = {
            "jsonrpc": "2.0",
            "id": "gone",
            "method": "message/send",
            "params": {"message": {"role": "user", "messageId": "m-gone", "parts": []}},
        }
        async with httpx.AsyncClient(base_url=srv.url, timeout=0.3) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.post(f"/workspaces/{ws_id}/a2a", json=body)
        rows = await poll(lambda: rows_of(db_url, ws_id), "the delivery's activity row", 20)
        assert [(r.request_body["id"], r.status) for r in rows] == [("gone", "ok")]
        assert agent.answered == ["gone"]
    finally:
        agent.close()


async def test_rows_are_held_while_the_database_is_away_and_stored_when_it_is_back(
    client_factory: Any, agent: EchoAgent
) -> None:
    """The writer's sink refuses with a lost connection (what an unreachable Postgres raises): the flush
    reports failure, the rows stay pending and journaled; once writes succeed the next flush stores them
    all, announces each, and removes the journal segments."""
    client = await client_factory(MOLECULE_ENV="development", ACTIVITY_FLUSH_SECONDS="30")
    ctx = ctx_of(client)
    target = await add_workspace(ctx, "t", status="online", url=agent.url)
    writer = ctx.a2a.log_writer
    seen: list[Any] = []
    ctx.bus.add_listener(lambda e: seen.append(e) if e.event == "ACTIVITY_LOGGED" else None)
    body = {"jsonrpc": "2.0", "id": "1", "method": "message/send", "params": {"message": {"parts": []}}}
    sink = writer.bound.sink
    real_write = sink.write

    async def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionRefusedError("database away")

    sink.write = unreachable  # type: ignore[method-assign]
    for _ in range(2):
        assert (await client.post(f"/workspaces/{target}/a2a", json=body)).status_code == 200
        assert await writer.flush() is False
    journal = ctx.settings.DATA_DIR / "activity-journal"
    assert len(journal_lines(ctx.settings.DATA_DIR)) == 2
    assert len(writer._pending) == 2 and seen == []

    sink.write = real_write  # type: ignore[method-assign]
    assert await writer.flush() is True
    stored = await ctx_rows(ctx, target)
    assert len(stored) == 2
    assert [e.workspace_id for e in seen] == [target, target]
    assert journal_lines(ctx.settings.DATA_DIR) == []
    assert len(list(journal.glob("*.jsonl"))) == 1  # only the fresh, empty current segment


async def ctx_rows(ctx: Any, ws_id: str) -> list[Any]:
    async with ctx.engine.connect() as conn:
        stmt = sa.select(activity_logs.c.id).where(activity_logs.c.workspace_id == ws_id)
        return list((await conn.execute(stmt)).all())
