"""`python -m molecule_agent`: serve A2A, register, heartbeat until SIGTERM.

Start-up order (the workspace counts as up once it has registered): bind the A2A socket, start
registering, and only then load the HTTP server's modules and wrap the already-listening socket. A
platform that calls the agent back as soon as it has the registration is queued on the socket's
backlog until `serve_forever` accepts it a moment later, so registering early never races the server.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from types import FrameType

from molecule_agent import config
from molecule_agent.platform import PlatformClient


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config.env_from_secret_files()  # before anything reads the env (Swarm secrets, `<NAME>_FILE`)
    cfg = config.load()
    platform = PlatformClient(cfg)
    listener = socket.create_server((os.environ.get("A2A_HOST", "0.0.0.0"), cfg.port))
    stop = threading.Event()
    threading.Thread(target=platform.run_forever, args=(stop,), daemon=True, name="heartbeat").start()

    from molecule_agent.a2a import Agent, serve  # its imports overlap the registration request

    server = serve(Agent(cfg, platform), sock=listener)

    def _term(_sig: int, _frame: FrameType | None) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    logging.getLogger("molecule_agent").info("A2A listening on :%d as %s", cfg.port, cfg.workspace_id)
    server.serve_forever()
