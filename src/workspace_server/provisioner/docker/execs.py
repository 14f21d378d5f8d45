"""Commands inside a running container: exec (capped output), the terminal's pty session, and logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import anyio
import anyio.to_thread
import docker
import docker.errors

from workspace_server.provisioner.base import (
    MAX_EXEC_OUTPUT,
    BackendError,
    ExecResult,
    ExecSession,
    InstanceNotRunning,
    instance_name,
)
from workspace_server.provisioner.docker.engine import ENGINE_ERRORS, DockerBase

log = logging.getLogger(__name__)


class ExecMixin(DockerBase):
    # ---- exec / terminal / logs ----
    async def exec(self, ws_id: str, argv: list[str], tty: bool = False) -> ExecResult:
        if not argv:
            raise BackendError("empty command")
        try:
            # abandon_on_cancel: a caller's fail_after releases it; the engine finishes the exec alone
            return await anyio.to_thread.run_sync(self._exec_sync, ws_id, argv, tty, abandon_on_cancel=True)
        except BackendError:
            raise
        except ENGINE_ERRORS as exc:
            log.warning("exec in %s failed: %s", instance_name(ws_id), exc)
            raise BackendError("exec failed", str(exc)) from exc

    def _exec_sync(self, ws_id: str, argv: list[str], tty: bool) -> ExecResult:
        container = self._running_container(ws_id)
        api = self.client.api
        env = self._exec_env(container) or None  # None: exactly the call the cold path always made
        exec_id = api.exec_create(container.id, argv, stdout=True, stderr=True, tty=tty, environment=env)[
            "Id"
        ]
        out, err, size, truncated = bytearray(), bytearray(), 0, False
        for chunk in api.exec_start(exec_id, stream=True, demux=not tty, tty=tty):
            stdout, stderr = (chunk, None) if tty else chunk
            for buf, data in ((out, stdout), (err, stderr)):
                if not data:
                    continue
                room = MAX_EXEC_OUTPUT - size
                if room <= 0:
                    truncated = True
                    continue
                buf += data[:room]
                size += min(len(data), room)
                truncated = truncated or len(data) > room
        code = api.exec_inspect(exec_id).get("ExitCode")
        return ExecResult(int(code if code is not None else -1), bytes(out), bytes(err), truncated)

    async def open_session(self, ws_id: str, argv: list[str]) -> ExecSession:
        if not argv:
            raise BackendError("empty command")
        try:
            return await self._run(self._open_session_sync, ws_id, argv)
        except BackendError:
            raise
        except ENGINE_ERRORS as exc:
            log.warning("exec session in %s failed: %s", instance_name(ws_id), exc)
            raise BackendError("failed to create shell session", str(exc)) from exc

    def _open_session_sync(self, ws_id: str, argv: list[str]) -> DockerExecSession:
        container = self._running_container(ws_id)
        api = self.client.api
        env = [*self._exec_env(container), "TERM=xterm-256color"]
        exec_id = api.exec_create(container.id, argv, stdin=True, tty=True, environment=env)["Id"]
        sock_io = api.exec_start(exec_id, socket=True, tty=True)
        return DockerExecSession(self, exec_id, sock_io)

    async def logs(self, ws_id: str, tail: int = 200) -> str:
        try:
            raw = await self._run(lambda: self.client.api.logs(self._log_source(ws_id), tail=max(1, tail)))
        except docker.errors.NotFound as exc:
            raise InstanceNotRunning from exc
        except ENGINE_ERRORS as exc:
            raise BackendError("could not read logs", str(exc)) from exc
        return bytes(raw).decode("utf-8", "replace")


class DockerExecSession:
    """A `docker exec` with a pty, over the engine's hijacked socket (raw bytes: tty mode has no framing)."""

    def __init__(self, backend: DockerBase, exec_id: str, sock_io: Any) -> None:
        self.backend = backend
        self.exec_id = exec_id
        self._io = sock_io  # keeps the HTTP response (and so the socket) alive
        self.sock: socket.socket = getattr(sock_io, "_sock", sock_io)
        self.sock.setblocking(False)
        self._closed = False

    async def read(self, max_bytes: int = 4096) -> bytes:
        if self._closed:
            return b""
        try:
            return await asyncio.get_running_loop().sock_recv(self.sock, max_bytes)
        except OSError:
            return b""

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise BackendError("session closed")
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        except OSError as exc:
            raise BackendError("session closed") from exc

    async def resize(self, rows: int, cols: int) -> None:
        if rows <= 0 or cols <= 0:
            return
        with contextlib.suppress(*ENGINE_ERRORS):
            await self.backend._run(lambda: self.backend.client.api.exec_resize(self.exec_id, rows, cols))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(Exception):
            self._io.close()
