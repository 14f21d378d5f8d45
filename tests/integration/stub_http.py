"""Shared helpers for tests that need a tiny HTTP server on loopback (no tests of its own).

`StubServer` serves a request handler on a free 127.0.0.1 port from a daemon thread until `close()`;
`StubHandler` is a quiet `BaseHTTPRequestHandler` with one-call helpers to read a JSON body and to answer.
A stub subclasses `StubServer`, sets up the state its handler records into or answers from, and passes
its handler class (usually defined inside `__init__`, closing over the stub) to `super().__init__`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StubHandler(BaseHTTPRequestHandler):
    """Logs nothing; `read_json()` reads the request body, `respond()` sends a whole response."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_json(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class StubServer:
    """`handler` served on a free loopback port (`url`) from a daemon thread, until `close()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ModelStub(StubServer):
    """An OpenAI-compatible chat endpoint on loopback answering "noted"; records each request's last
    message (`prompts`) and Authorization header (`auth`)."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.auth: list[str] = []
        stub = self

        class Handler(StubHandler):
            def do_POST(self) -> None:
                body = self.read_json()
                stub.prompts.append(body["messages"][-1]["content"])
                stub.auth.append(self.headers.get("Authorization") or "")
                self.respond(200, json.dumps({"choices": [{"message": {"content": "noted"}}]}).encode())

        super().__init__(Handler)
