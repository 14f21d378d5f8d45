"""serving.CoalescedWrites: a response's writes leave in one send, in order, and nothing is left held; the hot
lane's header check."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

from workspace_server.serving import COALESCE_MAX_BYTES, CoalescedWrites, whole_body_length


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


async def test_head_and_body_in_one_step_are_one_send() -> None:
    t = _Transport()
    w = CoalescedWrites(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    w.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert t.sent == []
    w.write(b"body")
    assert t.sent == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert t.sent == [b"HTTP/1.1 200 OK\r\n\r\nbody"]  # the scheduled flush found nothing


async def test_a_lone_write_leaves_when_the_step_ends() -> None:
    t = _Transport()
    w = CoalescedWrites(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    w.write(b"head")
    await asyncio.sleep(0)
    assert t.sent == [b"head"]
    w.write(b"chunk")  # a streamed response: each piece leaves by the end of the step that wrote it
    await asyncio.sleep(0)
    assert t.sent == [b"head", b"chunk"]


async def test_close_and_flush_send_what_is_held_first() -> None:
    t = _Transport()
    w = CoalescedWrites(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    w.write(b"head")
    w.flush()
    assert t.sent == [b"head"]
    w.write(b"last")
    w.close()
    assert (t.sent, t.closing, w.is_closing()) == ([b"head", b"last"], True, True)
    w.write(b"late")  # after close: dropped, as a closed transport drops it
    await asyncio.sleep(0)
    assert t.sent == [b"head", b"last"]


async def test_a_large_body_is_not_copied() -> None:
    t = _Transport()
    w = CoalescedWrites(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    big = b"x" * (COALESCE_MAX_BYTES + 1)
    w.write(b"head")
    w.write(big)
    assert t.sent == [b"head", big]


async def test_anything_else_is_the_transports() -> None:
    t = _Transport()
    w = CoalescedWrites(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    assert w.get_extra_info("peername") == "extra:peername"


class _SocketTransport(_Transport):
    def get_extra_info(self, name: str) -> object:  # type: ignore[override]
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_the_server_protocol_sends_a_response_in_one_write() -> None:
    """uvicorn's request cycle writes the head, then the body; through serving's protocol that is one
    transport write per response, keep-alive and pipelined requests answered in order."""
    import uvicorn
    from uvicorn.server import ServerState

    from workspace_server.serving import HeadLimits, bounded_httptools

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        assert scope["type"] == "http"
        body = str(scope["path"]).encode()
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body))],
        }
        await send(start)  # type: ignore[operator]
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]

    config = uvicorn.Config(
        app, http=bounded_httptools(HeadLimits(8192, 100, 8192, 10.0)), log_level="warning"
    )
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = _SocketTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    protocol.data_received(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(transport.sent) == 3, transport.sent
    assert [w.rsplit(b"\r\n\r\n", 1)[1] for w in transport.sent] == [b"/one", b"/two", b"/three"]
    assert all(w.startswith(b"HTTP/1.1 200 OK\r\n") for w in transport.sent)
    protocol.connection_lost(None)


def test_the_hot_answers_header_check_is_uvicorns() -> None:
    """serving._VALID_FIELDS (the hot lane's one-pass header check) refuses exactly the bytes uvicorn's
    HEADER_RE / HEADER_VALUE_RE refuse, in a name and in a value."""
    from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

    from workspace_server.serving import valid_fields

    for b in range(256):
        byte = bytes([b])
        name_ok = valid_fields(b"x-" + byte + b"y: v\r\n", 1)
        value_ok = valid_fields(b"x-y: v" + byte + b"w\r\n", 1)
        assert name_ok == (HEADER_RE.search(b"x-" + byte + b"y") is None), byte
        assert value_ok == (HEADER_VALUE_RE.search(b"v" + byte + b"w") is None), byte
    assert valid_fields(b"a: 1\r\nb: 2\r\n", 2)
    assert not valid_fields(b"a: 1\r\nb: 2\r\nc: 3\nd: 4\r\n", 3)  # a lone LF
    assert not valid_fields(b"a: 1\r\nb: 2\r\nset-cookie: x\r\n", 2)  # a whole line inside b's value


def test_only_a_small_declared_body_is_collected_whole() -> None:
    """The protocol collects a body for the hot lane only where the parser delivers it all without the app:
    a declared length up to uvicorn's high-water mark, no chunking, no 100-continue, no second length."""

    def length(*headers: tuple[bytes, bytes]) -> int | None:
        return whole_body_length({"headers": [(b"host", b"x"), *headers]})

    assert length((b"content-length", b"0")) == 0
    assert length((b"content-length", b"%d" % HIGH_WATER_LIMIT)) == HIGH_WATER_LIMIT
    assert length((b"content-length", b"%d" % (HIGH_WATER_LIMIT + 1))) is None
    assert length() is None  # no length: read through receive (an empty body answers the same)
    assert length((b"transfer-encoding", b"chunked")) is None
    assert length((b"content-length", b"5"), (b"expect", b"100-continue")) is None
    assert length((b"content-length", b"5"), (b"content-length", b"5")) is None
    assert length((b"content-length", b"+5")) is None


def test_field_lines_render_as_uvicorns_send_and_are_remembered() -> None:
    """serving.FieldLines: the lines uvicorn's send writes (name lower-cased), the first content-length, a
    `connection: close`; a field uvicorn refuses raises, remembered or not; the memory is bounded."""
    from workspace_server.serving import FIELD_LINE_MAX_BYTES, FIELD_LINES_MAX, FieldLines

    lines = FieldLines()
    fields = [
        (b"Content-Type", b"application/json"),
        (b"content-length", b"2"),
        (b"content-length", b"99"),  # uvicorn takes the first
        (b"X-Seen", b"1"),
    ]
    for _ in range(2):  # rendered, then from memory: the same
        assert lines.render(fields) == (
            b"content-type: application/json\r\ncontent-length: 2\r\ncontent-length: 99\r\nx-seen: 1\r\n",
            2,
            False,
        )
    assert lines.render([(b"connection", b"keep-alive, Close")])[2] is True
    assert lines.render([(b"connection", b"keep-alive")])[2] is False
    assert lines.render([(bytearray(b"x-a"), bytearray(b"b"))]) == (b"x-a: b\r\n", None, False)
    for bad in ([(b"x-a", b"b\r\nset-cookie: c")], [(b"x a", b"b")], [(b"x-a", b"b\nc")]):
        for _ in range(2):
            try:
                lines.render(bad)
            except RuntimeError:
                continue
            raise AssertionError(f"accepted {bad!r}")
    for n in range(FIELD_LINES_MAX * 3):  # values that never repeat (a rate limit's remaining count)
        lines.render([(b"x-ratelimit-remaining", b"%d" % n)])
    assert len(lines._lines) <= FIELD_LINES_MAX
    lines._lines.clear()
    long_value = b"v" * FIELD_LINE_MAX_BYTES
    assert lines.render([(b"x-long", long_value)])[0] == b"x-long: " + long_value + b"\r\n"
    assert lines._lines == {}  # a long line is rendered, never remembered
