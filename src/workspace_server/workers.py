"""`serve --workers N`: N replicas on one host sharing one listening socket (docs/operations.md).

Each worker is a whole `serve` process (its own event loop, pools, bus subscriber, leader-lease contender)
started as `python -m workspace_server serve --worker-fd FD`; the parent binds the socket once, migrates
once, and the kernel spreads accepted connections over the workers. They share state only through
Postgres and Redis, exactly as replicas on separate hosts do, so the parent refuses to start several on
SQLite or without REDIS_URL (events would reach only the worker that caused them).

We do not use uvicorn's own `--workers`: it pickles the Config into each child, which our app object and
the request-head limiter class (serving.py) are not, and it would make the workers something other than
the `serve` every replica runs.

The parent only supervises: a worker that dies (kill -9, OOM) is started again after RESTART_DELAY; a
SIGTERM/SIGINT to the parent is passed on once to every worker, which shut down gracefully (releasing
the lease), and are killed after STOP_GRACE. Workers run in their own session so a terminal's Ctrl-C
reaches them once, through the parent (uvicorn treats a second signal as "exit now"); in return each
worker exits by itself when the parent is gone (`exit_with_parent`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType

import uvicorn

from workspace_server.config import Settings

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
STOP_GRACE = 30.0
POLL = 0.2
PARENT_CHECK = 1.0


def shared_state_problem(settings: Settings) -> str | None:
    """Why workers of this configuration could not act as one server; None when they can."""
    if not settings.DATABASE_URL.lower().startswith(("postgres://", "postgresql")):
        return "--workers needs DATABASE_URL on Postgres: workers share state only through the database"
    if not settings.REDIS_URL:
        return "--workers needs REDIS_URL: without it events reach only the worker that caused them"
    return None


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def run(host: str, port: int, workers: int) -> int:
    """Serve with `workers` processes until SIGTERM/SIGINT; the exit status."""
    sock = bind(host, port)
    fd = sock.fileno()
    argv = [sys.executable, "-m", "workspace_server", "serve"]
    argv += ["--host", host, "--port", str(port), "--worker-fd", str(fd), "--worker-parent", str(os.getpid())]
    stopping = threading.Event()

    def spawn() -> subprocess.Popen[bytes]:
        # fixed argv, no shell; the environment (settings) is inherited
        return subprocess.Popen(argv, pass_fds=(fd,), start_new_session=True)  # noqa: S603

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    procs = [spawn() for _ in range(workers)]
    log.info("serving on %s:%d with %d workers: pids %s", host, port, workers, [p.pid for p in procs])
    try:
        while not stopping.wait(POLL):
            for i, proc in enumerate(procs):
                if proc.poll() is None:
                    continue
                log.error("worker %d exited with %s; starting another", proc.pid, proc.returncode)
                if stopping.wait(RESTART_DELAY):
                    break
                procs[i] = spawn()
                log.info("worker %d started", procs[i].pid)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop(procs)
        sock.close()
    return 0


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop within %.0fs; killing it", proc.pid, STOP_GRACE)
            proc.kill()
            proc.wait()


def exit_with_parent(server: uvicorn.Server, parent: int) -> None:
    """In a worker: shut down gracefully once the supervising parent is gone (killed with -9, say), so no
    worker outlives it holding the socket and the lease; a new parent would start a full set again.

    `parent` comes from the parent itself (`--worker-parent`), not from `os.getppid()` here: a worker
    still starting when its parent died would read the reaper's pid and never notice (it happened)."""

    def watch() -> None:
        while not server.should_exit:
            if os.getppid() != parent:
                log.warning("supervisor %d is gone; this worker stops", parent)
                server.should_exit = True
                return
            time.sleep(PARENT_CHECK)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
