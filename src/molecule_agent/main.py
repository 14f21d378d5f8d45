"""`python -m molecule_agent`: serve A2A, register, heartbeat until SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

from molecule_agent import config
from molecule_agent.a2a import Agent, serve
from molecule_agent.platform import PlatformClient


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config.load()
    platform = PlatformClient(cfg)
    server = serve(Agent(cfg, platform), host=os.environ.get("A2A_HOST", "0.0.0.0"), port=cfg.port)
    stop = threading.Event()

    def _term(_sig: int, _frame: FrameType | None) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    threading.Thread(target=platform.run_forever, args=(stop,), daemon=True, name="heartbeat").start()
    logging.getLogger("molecule_agent").info("A2A listening on :%d as %s", cfg.port, cfg.workspace_id)
    server.serve_forever()
