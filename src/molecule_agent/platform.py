"""Talking to the platform: register once, then heartbeat (spec 07 §4 "Startup/registration", "Heartbeat")."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from molecule_agent.config import AgentConfig

log = logging.getLogger("molecule_agent.platform")

# Registration retries: quick at first (the platform is normally up and the workspace waits on this one
# call to go online), then backing off to the cap so a platform that is down is not hammered.
# Task changes push a heartbeat at once, but at most one per PUSH_GAP seconds: under a stream of calls an
# agent would otherwise heartbeat after every task start and end (hundreds a second), costing itself and
# the platform more than the calls. The last change of a burst still goes out within PUSH_GAP.
PUSH_GAP = 0.25
REGISTER_RETRY_FIRST = 0.2
REGISTER_RETRY_MAX = 15.0


class PlatformClient:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.token = cfg.read_token()
        self.started = time.monotonic()
        self.active_tasks = 0
        self.current_task = ""
        self.errors = 0
        self.calls = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()

    # --- HTTP ---
    def _post(self, path: str, body: dict[str, Any], timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body, separators=(",", ":")).encode()
        req = urllib.request.Request(self.cfg.platform_url + path, data=data, method="POST")  # noqa: S310
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - platform URL from env
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, _json(e.read())

    def agent_card(self) -> dict[str, Any]:
        return {
            "name": self.cfg.name,
            "description": self.cfg.description,
            "version": self.cfg.version,
            "url": self.cfg.advertised_url,
            "skills": self.cfg.skills,
            "capabilities": {"streaming": False, "pushNotifications": False},
        }

    def register(self) -> bool:
        body = {"id": self.cfg.workspace_id, "url": self.cfg.advertised_url, "agent_card": self.agent_card()}
        try:
            status, resp = self._post("/registry/register", body)
        except OSError as e:
            log.warning("register failed: %s", e)
            return False
        if status == 401 and self._reload_token():
            status, resp = self._post("/registry/register", body)
        if status != 200:
            log.warning("register answered %s: %s", status, resp.get("error"))
            return False
        token = resp.get("auth_token")
        if isinstance(token, str) and token:
            self.token = token
            self.cfg.save_token(token)
        log.info("registered %s at %s", self.cfg.workspace_id, self.cfg.advertised_url)
        return True

    def _reload_token(self) -> bool:
        fresh = self.cfg.read_token()
        if fresh and fresh != self.token:
            self.token = fresh
            return True
        return False

    def heartbeat(self) -> int:
        with self._lock:
            body = {
                "workspace_id": self.cfg.workspace_id,
                "error_rate": (self.errors / self.calls) if self.calls else 0.0,
                "sample_error": "",
                "active_tasks": self.active_tasks,
                "current_task": self.current_task,
                "uptime_seconds": max(1, int(time.monotonic() - self.started)),
            }
        try:
            status, _ = self._post("/registry/heartbeat", body)
        except OSError as e:
            log.warning("heartbeat failed: %s", e)
            return 0
        if status == 401 and self._reload_token():
            status, _ = self._post("/registry/heartbeat", body)
        return status

    # --- task accounting (pushes an immediate heartbeat so the platform sees busy/idle at once) ---
    def task_started(self, summary: str) -> None:
        with self._lock:
            self.active_tasks += 1
            self.current_task = summary[:200]
            self.calls += 1
        self._wake.set()

    def task_finished(self, ok: bool) -> None:
        with self._lock:
            self.active_tasks = max(0, self.active_tasks - 1)
            if self.active_tasks == 0:
                self.current_task = ""
            if not ok:
                self.errors += 1
        self._wake.set()

    def run_forever(self, stop: threading.Event) -> None:
        """Register (retrying until it succeeds), then heartbeat every interval or on a task change.

        Called once the A2A socket is bound and listening (main.py), so the first attempt goes out at
        once: a platform that calls back right away queues on the backlog until serve_forever accepts.
        """
        delay = REGISTER_RETRY_FIRST
        while not stop.is_set() and not self.register():
            stop.wait(delay)
            delay = min(delay * 2, REGISTER_RETRY_MAX)
        while not stop.is_set():
            self._wake.clear()  # changes from here on are in this heartbeat or wake the next one
            self.heartbeat()
            sent = time.monotonic()
            self._wake.wait(self.cfg.heartbeat_interval)
            stop.wait(PUSH_GAP - (time.monotonic() - sent))  # no-op when the interval elapsed


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
