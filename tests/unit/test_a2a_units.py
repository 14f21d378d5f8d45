"""Pure pieces of the A2A area: normalisation, busy classification, idle watch, usage, reply parsing."""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from workspace_server.a2a import delegation
from workspace_server.a2a.caches import QueueHint, TargetCache
from workspace_server.a2a.call import message_id as _message_id
from workspace_server.a2a.forward import _busy_error
from workspace_server.a2a.pool import IdleTimeout, IdleWatch, run_watched
from workspace_server.a2a.proxy import Outcome, ProxyResult, normalise
from workspace_server.a2a.record import parse_usage
from workspace_server.a2a.schemas import is_system_caller
from workspace_server.a2a.transport import BadReply, ConnectFailed, ConnectTimeout, Disconnected
from workspace_server.common.kv import MemoryKV
from workspace_server.config import Settings
from workspace_server.events.bus import Event
from workspace_server.provisioner.docker import DockerBackend
from workspace_server.provisioner.process import ProcessBackend
from workspace_server.registry.service import assigned_dial_url


def test_bare_body_is_wrapped_and_other_keys_dropped() -> None:
    out = normalise({"method": "message/send", "params": {"message": {"parts": []}}, "junk": 1})
    assert set(out) == {"jsonrpc", "id", "method", "params"}
    assert out["jsonrpc"] == "2.0" and isinstance(out["id"], str)
    assert isinstance(out["params"]["message"]["messageId"], str)


def test_missing_method_and_params_become_null() -> None:
    out = normalise({})
    assert out["method"] is None and out["params"] is None


def test_existing_envelope_untouched() -> None:
    body = {"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {"message": {"messageId": "m"}}}
    assert normalise(json.loads(json.dumps(body))) == body


def test_message_id_only_when_string() -> None:
    assert _message_id({"params": {"message": {"messageId": "abc"}}}) == "abc"
    assert _message_id({"params": {"message": {"messageId": 5}}}) == ""
    assert _message_id([1]) == ""


@pytest.mark.parametrize(
    ("exc", "busy"),
    [
        (Disconnected("connection closed before the reply was complete (EOF)"), True),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
        (ConnectFailed("cannot connect to agent:8000: [Errno 111] Connection refused"), False),
        (ConnectFailed("cannot resolve agent: [Errno -2] Name or service not known"), False),
        (ConnectTimeout("connect to agent:8000 timed out"), False),
        (BadReply("not an HTTP reply"), False),
        (IdleTimeout(5, ceiling=False), False),
    ],
)
def test_busy_classification(exc: Exception, busy: bool) -> None:
    assert _busy_error(exc) is busy


@pytest.mark.parametrize("caller", ["system:x", "webhook:github", "test:1", "channel:slack"])
def test_system_callers(caller: str) -> None:
    assert is_system_caller(caller)
    assert not is_system_caller("00000000-0000-0000-0000-000000000001")
    assert not is_system_caller("")


def test_usage_locations() -> None:
    assert parse_usage(b'{"result":{"usage":{"input_tokens":3,"output_tokens":4}}}') == (3, 4)
    assert parse_usage(b'{"usage":{"input_tokens":5}}') == (5, 0)
    assert parse_usage(b'{"usage":{"input_tokens":-5,"output_tokens":99999999999}}') == (0, 10_000_000)
    assert parse_usage(b"not json") == (0, 0)
    assert parse_usage(b'{"result":{"usage":{"input_tokens":"9"}}}') == (0, 0)


def test_response_text() -> None:
    reply = {"result": {"parts": [{"kind": "data"}, {"kind": "text", "text": "first"}]}}
    assert delegation.response_text(json.dumps(reply).encode()) == "first"
    arts = {"result": {"artifacts": [{"parts": [{"kind": "text", "text": "from artifact"}]}]}}
    assert delegation.response_text(json.dumps(arts).encode()) == "from artifact"
    assert delegation.response_text(b"plain") == "plain"
    raw = b'{"result":{"parts":[{"type":"text","text":"x"}]}}'
    assert delegation.response_text(raw) == raw.decode()


def _result(
    status: int, error: dict[str, Any] | None, outcome: Outcome = Outcome.NOT_DELIVERED
) -> ProxyResult:
    return ProxyResult(status, error=error, outcome=outcome)


def test_retry_rule() -> None:
    assert delegation.is_transient(_result(502, {"error": "failed to reach workspace agent"}))
    assert delegation.is_transient(_result(503, {"error": "x", "restarting": True}))
    assert not delegation.is_transient(_result(503, {"error": "x", "busy": True}, Outcome.BUSY))
    assert not delegation.is_transient(
        _result(502, {"error": "failed to read agent response"}, Outcome.DELIVERED)
    )
    assert not delegation.is_transient(_result(504, {"error": "timeout"}, Outcome.UNKNOWN))
    assert not delegation.is_transient(_result(200, None, Outcome.DELIVERED))


def test_reply_error() -> None:
    ok = ProxyResult(200, b'{"result":{}}')
    assert delegation.reply_error(ok) is None
    rpc = ProxyResult(200, b'{"error":{"code":-1,"message":"nope"}}')
    assert delegation.reply_error(rpc) == "nope"
    assert delegation.reply_error(_result(500, {"error": ""})) == "Internal Server Error"


async def test_idle_watch_times_out_a_quiet_dispatch() -> None:
    watch = IdleWatch()
    with pytest.raises(IdleTimeout) as info:
        await run_watched(watch, "ws", asyncio.sleep(30), idle=0.05, ceiling=None)
    assert info.value.ceiling is False


async def test_idle_watch_is_reset_by_events_for_the_target() -> None:
    watch = IdleWatch()
    stop = asyncio.Event()

    async def chatter() -> None:
        while not stop.is_set():
            watch.on_event(Event("WORKSPACE_HEARTBEAT", "ws", {}))
            watch.on_event(Event("WORKSPACE_HEARTBEAT", "other", {}))
            await asyncio.sleep(0.01)

    async def work() -> str:
        await asyncio.sleep(0.5)
        return "done"

    ticker = asyncio.create_task(chatter())
    try:
        assert await run_watched(watch, "ws", work(), idle=0.2, ceiling=None) == "done"
    finally:
        stop.set()
        await ticker


async def test_events_for_other_workspaces_do_not_reset() -> None:
    watch = IdleWatch()
    stop = asyncio.Event()

    async def chatter() -> None:
        while not stop.is_set():
            watch.on_event(Event("WORKSPACE_HEARTBEAT", "other", {}))
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(chatter())
    try:
        with pytest.raises(IdleTimeout):
            await run_watched(watch, "ws", asyncio.sleep(30), idle=0.1, ceiling=None)
    finally:
        stop.set()
        await ticker


async def test_ceiling_is_absolute() -> None:
    watch = IdleWatch()
    stop = asyncio.Event()

    async def chatter() -> None:
        while not stop.is_set():
            watch.on_event(Event("X", "ws", {}))
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(chatter())
    try:
        with pytest.raises(IdleTimeout) as info:
            await run_watched(watch, "ws", asyncio.sleep(30), idle=10, ceiling=0.1)
        assert info.value.ceiling is True
    finally:
        stop.set()
        await ticker
    assert watch.last_event("ws") == 0.0  # nothing left behind once no dispatch is in flight


async def test_a_later_dispatch_with_an_earlier_deadline_times_out_first() -> None:
    """One timer for all dispatches: a dispatch watched after a long one, with a shorter idle timeout,
    still times out at its own deadline (well before the first's); the first is left running."""
    watch = IdleWatch()
    long = asyncio.create_task(run_watched(watch, "a", asyncio.sleep(30), idle=20, ceiling=None))
    await asyncio.sleep(0)  # the long one is watched first
    with pytest.raises(IdleTimeout):
        await asyncio.wait_for(run_watched(watch, "b", asyncio.sleep(30), idle=0.05, ceiling=None), 5)
    assert not long.done()
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long  # cancelled by its caller, not by the watch: no IdleTimeout
    assert watch.last_event("a") == watch.last_event("b") == 0.0


async def test_finished_dispatches_do_not_pile_up_in_the_watch() -> None:
    """A dispatch that ends before its deadline leaves its heap entry behind; the heap is rebuilt once
    those outnumber the live ones, so thousands of quick calls under a 300 s timeout keep it small."""
    watch = IdleWatch()

    async def quick() -> str:
        return "ok"

    for _ in range(5000):
        assert await run_watched(watch, "ws", quick(), idle=300, ceiling=None) == "ok"
    assert len(watch._heap) <= 64 + 1


@pytest.mark.parametrize(
    ("in_docker", "network", "backend", "url", "dialled"),
    [
        # a server in a container reaches a bridged Docker agent by container name, not its own loopback
        (True, "bridge", "docker", "http://127.0.0.1:32768", "http://ws-0123456789ab:8000"),
        (False, "bridge", "docker", "http://127.0.0.1:32768", "http://127.0.0.1:32768"),
        # host networking: the agent has no container name to be reached by; its port is on the host
        (True, "host", "docker", "http://127.0.0.1:32768", "http://127.0.0.1:32768"),
        (True, "bridge", "process", "http://127.0.0.1:32768", "http://127.0.0.1:32768"),
        (True, "bridge", None, "http://127.0.0.1:32768", "http://127.0.0.1:32768"),
        (True, "bridge", "docker", "http://agent.example:8000", "http://agent.example:8000"),  # registered
    ],
)
def test_container_url_rewrite(
    in_docker: bool, network: str, backend: str | None, url: str, dialled: str
) -> None:
    settings = Settings(MOLECULE_IN_DOCKER=in_docker, DOCKER_NETWORK_MODE=network)
    # the real backend of that name: its own answer (Backend.dial_url) decides, not its name
    real = {"docker": DockerBackend(settings, client=SimpleNamespace()), "process": ProcessBackend(settings)}
    ctx = SimpleNamespace(settings=settings, backend=real[backend] if backend else None)
    target = "0123456789ab-cdef-4000-8000-000000000000"
    assert assigned_dial_url(ctx, target, url) == dialled  # type: ignore[arg-type]


def test_in_docker_defaults_to_dockerenv() -> None:
    assert Settings().in_docker is Path("/.dockerenv").exists()
    assert Settings(MOLECULE_IN_DOCKER=False).in_docker is False


# ---- queue hint and target cache ----


async def test_queue_hint_ignores_a_look_that_began_before_an_enqueue() -> None:
    hint = QueueHint()
    _, mark = await hint.look("ws")  # a probe starts: the queue is empty in the database
    hint.touch("ws")  # meanwhile a busy call queues an item for ws
    hint.seen_empty("ws", since=mark)  # the probe's stale "empty" arrives
    assert (await hint.look("ws"))[0] is False
    hint.seen_empty("ws", since=(await hint.look("ws"))[1])  # a look begun after the enqueue counts
    assert (await hint.look("ws"))[0] is True
    hint.touch("other")
    assert (await hint.look("ws"))[0] is True


async def test_queue_hint_marks_from_before_a_clear_do_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QueueHint, "MAX_KEYS", 2)
    hint = QueueHint()
    _, mark = await hint.look("a")
    for ws in ("a", "b", "c", "d"):  # "a" was touched, then forgotten by the clear
        hint.touch(ws)
    hint.seen_empty("a", since=mark)
    assert (await hint.look("a"))[0] is False


async def test_shared_queue_hint_trusts_empty_only_while_the_epoch_holds() -> None:
    """With replicas another process enqueues unseen here: its enqueue bumps the shared epoch, and an
    "empty" seen before that bump stops holding, on every replica."""
    kv = MemoryKV()
    here, there = QueueHint(kv), QueueHint(kv)
    _, mark = await here.look("ws")
    here.seen_empty("ws", since=mark)
    assert (await here.look("ws"))[0] is True
    there.touch("ws")
    await there.announce("ws")  # the other replica queued an item for ws
    assert (await here.look("ws"))[0] is False
    # a look that read the epoch before the bump does not count either
    _, stale = await here.look("other")
    await there.announce("other")
    here.seen_empty("other", since=stale)
    assert (await here.look("other"))[0] is False


async def test_shared_queue_hint_trusts_nothing_when_the_epoch_is_unreadable() -> None:
    class Down(MemoryKV):
        async def get(self, key: str) -> str | None:
            raise ConnectionError("redis away")

    hint = QueueHint(Down())
    empty, mark = await hint.look("ws")
    hint.seen_empty("ws", since=mark)
    assert empty is False and (await hint.look("ws"))[0] is False


async def test_target_cache_shares_one_query_among_concurrent_misses() -> None:
    cache, calls, release = TargetCache(), [], asyncio.Event()

    async def fetch() -> str:
        calls.append(1)
        await release.wait()
        return "row"

    waiters = [asyncio.ensure_future(cache.load("ws", fetch)) for _ in range(50)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one caller giving up does not cancel the query for the others
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert len(calls) == 1
    assert isinstance(results[0], asyncio.CancelledError) and results[1:] == ["row"] * 49
    assert cache.get("ws") == "row"


async def test_target_cache_does_not_keep_a_row_read_before_a_status_event() -> None:
    cache, release = TargetCache(), asyncio.Event()
    rows = iter(["stale", "fresh"])

    async def fetch() -> str:
        row = next(rows)
        if row == "stale":
            await release.wait()
        return row

    first = asyncio.ensure_future(cache.load("ws", fetch))
    await asyncio.sleep(0)
    cache.on_event(Event("WORKSPACE_OFFLINE", "ws"))  # the status changed while the read was running
    assert await cache.load("ws", fetch) == "fresh"  # a later caller does not join the old read
    release.set()
    assert await first == "stale"
    assert cache.get("ws") == "fresh"


async def test_target_cache_failed_query_reaches_every_waiter_and_is_not_cached() -> None:
    cache = TargetCache()

    async def broken() -> str:
        await asyncio.sleep(0)
        raise RuntimeError("db down")

    results = await asyncio.gather(*(cache.load("ws", broken) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert cache.get("ws") is None

    async def works() -> str:
        return "row"

    assert await cache.load("ws", works) == "row"


def test_activity_logged_payload_keys_are_sorted_as_go_marshals_them() -> None:
    from workspace_server.a2a.logwriter import _logged_payload

    row = {
        "workspace_id": "w",
        "activity_type": "a2a_receive",
        "target_id": "w",
        "summary": "s",
        "status": "ok",
    }
    for trace in (None, [{"tool": "x"}]):
        payload = _logged_payload(row | {"tool_trace": trace})
        assert list(payload) == sorted(payload)
        assert ("tool_trace" in payload) is (trace is not None)
