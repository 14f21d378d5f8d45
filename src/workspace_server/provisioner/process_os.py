"""What the process backend asks of the operating system: commands on a pty (the terminal), process
groups stopped with a grace period, log tails and directory removal. No workspace state lives here."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import termios
from pathlib import Path
from typing import Any

import anyio.to_thread
import psutil

from workspace_server.provisioner.base import (
    MAX_EXEC_OUTPUT,
    BackendError,
)

STOP_GRACE_SECONDS = 5.0
BASE_PATH = os.defpath  # "/bin:/usr/bin": the agent needs nothing else, and exec gets a plain PATH


class ProcessExecSession:
    """A command on a pty: raw bytes in and out, resizable."""

    def __init__(self, proc: subprocess.Popen[bytes], master_fd: int) -> None:
        self.proc = proc
        self.fd = master_fd
        self._closed = False

    async def _wait(self, add: Any, remove: Any) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        add(self.fd, ready)
        try:
            await fut
        finally:
            remove(self.fd)

    async def read(self, max_bytes: int = 4096) -> bytes:
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                return os.read(self.fd, max_bytes)
            except BlockingIOError:
                await self._wait(loop.add_reader, loop.remove_reader)
            except OSError:  # EIO: the command exited and its pty side is closed
                return b""
        return b""

    async def write(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            if self._closed:
                raise BackendError("session closed")
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                await self._wait(loop.add_writer, loop.remove_writer)
            except OSError as exc:
                raise BackendError("session closed") from exc

    async def resize(self, rows: int, cols: int) -> None:
        if self._closed or rows <= 0 or cols <= 0:
            return
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def wait(self) -> int:
        return await anyio.to_thread.run_sync(self.proc.wait)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self.proc.poll() is None:
            await anyio.to_thread.run_sync(kill_group, self.proc.pid, self.proc)


def spawn_on_pty(argv: list[str], workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    # util-linux `setsid --ctty` makes the pty the controlling terminal (so ^C reaches the command) in a
    # new session whose process group close() can kill; without it, just a new session.
    setsid = shutil.which("setsid", path=BASE_PATH)
    full = [setsid, "--ctty", *argv] if setsid else argv
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell; the caller chose the command
            full,
            cwd=workdir,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=not setsid,
            close_fds=True,
        )
    except OSError:
        os.close(master)
        raise
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return proc, master


def kill_group(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period; reap our own child."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            if proc is not None:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            else:
                psutil.Process(pid).wait(timeout=STOP_GRACE_SECONDS)
            break
        except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
            continue
        except psutil.Error:
            break
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_SECONDS)


async def read_capped(stream: asyncio.StreamReader) -> tuple[bytes, bool]:
    buf, truncated = bytearray(), False
    while chunk := await stream.read(65536):
        room = MAX_EXEC_OUTPUT - len(buf)
        truncated = truncated or len(chunk) > room
        buf += chunk[: max(room, 0)]
    return bytes(buf), truncated


def tail_bytes(path: Path, lines: int, max_bytes: int = 1024 * 1024) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read()
    return b"".join(data.splitlines(keepends=True)[-lines:])


def remove_all(root: Path, targets: list[Path]) -> None:
    for target in targets:
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
    for name in ("agent.log", "agent.log.1"):
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()
    with contextlib.suppress(OSError):
        root.rmdir()  # only when nothing else (a kept workspace dir, a pidfile) is left
