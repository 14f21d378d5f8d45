"""A2A JSON-RPC v0.3 at the server root (spec 07 §5): always HTTP 200, compact JSON."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from molecule_agent.config import AgentConfig
from molecule_agent.platform import PlatformClient

log = logging.getLogger("molecule_agent.a2a")

MAX_BODY = 10 * 1024 * 1024


def text_of(message: Any) -> str:
    """Concatenate the text parts of an A2A message (parts may use `kind` or `type`)."""
    if not isinstance(message, dict):
        return ""
    texts = []
    for part in message.get("parts") or []:
        if isinstance(part, dict) and (part.get("kind") or part.get("type")) == "text":
            texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def reply_message(text: str) -> dict[str, Any]:
    return {
        "kind": "message",
        "messageId": str(uuid.uuid4()),
        "role": "agent",
        "parts": [{"kind": "text", "text": text}],
    }


def ask_llm(cfg: AgentConfig, text: str) -> str:
    """One chat completion against an OpenAI-compatible endpoint."""
    body = {"model": cfg.llm_model or "default", "messages": [{"role": "user", "content": text}]}
    req = urllib.request.Request(  # noqa: S310 - endpoint comes from the operator's config
        cfg.llm_base_url + "/chat/completions", data=json.dumps(body).encode(), method="POST"
    )
    req.add_header("Content-Type", "application/json")
    if cfg.llm_api_key:
        req.add_header("Authorization", f"Bearer {cfg.llm_api_key}")
    with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310
        data = json.loads(resp.read())
    return str(data["choices"][0]["message"]["content"])


class Agent:
    def __init__(self, cfg: AgentConfig, platform: PlatformClient | None) -> None:
        self.cfg = cfg
        self.platform = platform

    def handle(self, req: Any) -> dict[str, Any]:
        rid = req.get("id") if isinstance(req, dict) else None
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            return _error(rid, -32600, "Invalid Request")
        if req["method"] != "message/send":
            return _error(rid, -32601, "Method not found")
        params = req.get("params") if isinstance(req.get("params"), dict) else {}
        text = text_of((params or {}).get("message"))
        if self.platform:
            self.platform.task_started(text)
        ok = True
        try:
            if self.cfg.reply_delay > 0:
                time.sleep(self.cfg.reply_delay)
            reply = ask_llm(self.cfg, text) if self.cfg.llm_base_url else text
        except (OSError, KeyError, IndexError, ValueError, urllib.error.URLError) as e:
            ok = False
            log.warning("model call failed: %s", e)
            return _error(rid, -32603, "model endpoint failed")
        finally:
            if self.platform:
                self.platform.task_finished(ok)
        return {"jsonrpc": "2.0", "id": rid, "result": reply_message(reply)}

    def card(self) -> dict[str, Any]:
        if self.platform:
            return self.platform.agent_card()
        return {"name": self.cfg.name, "url": self.cfg.advertised_url, "skills": self.cfg.skills}


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def make_handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "molecule-agent/0.1"
        # buffer the response and send headers + body in one write (flushed after each request): two
        # small writes meet Nagle and a delayed ACK, and every reply waited ~40 ms for it
        wbufsize = -1

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug(fmt, *args)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/.well-known/agent-card.json", "/.well-known/agent.json"):
                self._send(200, agent.card())
            elif path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(200, _error(None, -32600, "Request too large"))
                self.close_connection = True
                return
            raw = self.rfile.read(length) if length else b""
            try:
                req = json.loads(raw)
            except ValueError:
                self._send(200, _error(None, -32700, "Parse error"))
                return
            self._send(200, agent.handle(req))

    return Handler


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(
    agent: Agent, host: str = "0.0.0.0", port: int = 8000, sock: socket.socket | None = None
) -> AgentServer:
    """The A2A server on (host, port), or around `sock`, a socket already bound and listening."""
    if sock is None:
        return AgentServer((host, port), make_handler(agent))
    address = sock.getsockname()[:2]
    server = AgentServer(address, make_handler(agent), bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.server_name, server.server_port = address  # what server_bind would set, without its DNS lookup
    return server
