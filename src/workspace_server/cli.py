"""`workspace-server serve|migrate`."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import typer
import uvicorn

from workspace_server.config import Settings
from workspace_server.serving import HeadLimits, bounded_httptools


def server_config(
    app: Any, host: str, port: int, log_level: str = "info", settings: Settings | None = None
) -> uvicorn.Config:
    """uvicorn as `serve` runs it (the tests' live server too). `settings`: the app's by default.

    - the client IP is the TCP peer (spec 03 §4), never X-Forwarded-For;
    - wsproto for WebSockets: uvicorn's default (websockets' sans-I/O protocol) sends a refused
      handshake's HTTP response (`websocket.http.response`) correctly but then logs "ASGI callable
      returned without completing handshake" as an ERROR for every refusal; wsproto's does not;
    - no uvicorn access log: the metrics middleware writes it (ACCESS_LOG), with the duration;
    - no `server: uvicorn` header: the reference (Go net/http) sends none, and it only tells a scanner
      what answers (every response, the hot routes' included, carries one header less);
    - httptools with the request-head caps of serving.py (size, header count, URL, header timeout), the
      WebSocket message cap, a keep-alive timeout and a connection cap, all from Settings.
    """
    settings = settings or getattr(getattr(app, "state", None), "settings", None) or Settings()
    limits = HeadLimits(
        max_head_bytes=settings.MAX_HEADER_BYTES,
        max_headers=settings.MAX_HEADER_COUNT,
        max_url_bytes=settings.MAX_URL_BYTES,
        head_timeout=settings.HEADER_TIMEOUT_SECONDS,
        body_idle_timeout=settings.BODY_IDLE_TIMEOUT_SECONDS,
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        proxy_headers=False,
        ws="wsproto",
        access_log=False,
        server_header=False,
        http=bounded_httptools(limits),
        ws_max_size=settings.WS_MAX_MESSAGE_BYTES,
        timeout_keep_alive=settings.KEEP_ALIVE_TIMEOUT_SECONDS,
        limit_concurrency=settings.MAX_CONNECTIONS if settings.MAX_CONNECTIONS > 0 else None,
    )


cli = typer.Typer(add_completion=False, no_args_is_help=True, help="workspace-server control plane")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
def serve(
    host: str = typer.Option(None, help="listen address (default: HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="listen port (default: PORT or 8080)"),
    workers: int = typer.Option(
        1, min=1, help="processes sharing the port, each a full replica (needs Postgres and REDIS_URL)"
    ),
    worker_fd: int = typer.Option(None, hidden=True, help="(internal) serve on this inherited socket"),
    worker_parent: int = typer.Option(None, hidden=True, help="(internal) stop when this pid is gone"),
) -> None:
    """Migrate the database, then serve the API."""
    from workspace_server import workers as supervisor

    _setup_logging()
    settings = Settings()
    if workers > 1 and (problem := supervisor.shared_state_problem(settings)) is not None:
        typer.echo(f"workspace-server: {problem}", err=True)
        raise typer.Exit(code=2)
    _require_encryption_key(settings)
    if worker_fd is None:  # a worker's parent migrated already
        _migrate(settings)
    host, port = host or settings.HOST, port or settings.PORT
    if workers > 1:
        raise typer.Exit(code=supervisor.run(host, port, workers))
    from workspace_server.app import create_app

    app = create_app(settings, migrate=False, freeze_gc=True)  # migrated just above (or by the parent)
    server = uvicorn.Server(server_config(app, host, port))
    if worker_fd is None:
        server.run()
        return
    if worker_parent is not None:
        supervisor.exit_with_parent(server, worker_parent)
    server.run(sockets=[socket.socket(fileno=worker_fd)])


@cli.command()
def migrate() -> None:
    """Apply database migrations and exit."""
    _setup_logging()
    _migrate(Settings())
    typer.echo("migrations applied")


def _require_encryption_key(settings: Settings) -> None:
    """Spec 06 §2.1 item 3: production without a valid SECRETS_ENCRYPTION_KEY neither migrates nor starts."""
    from workspace_server.secrets.crypto import EncryptionKeyRequired, init_strict

    try:
        init_strict(settings)
    except EncryptionKeyRequired as exc:
        typer.echo(f"workspace-server: {exc}", err=True)
        raise typer.Exit(code=1) from None


def _migrate(settings: Settings) -> None:
    from workspace_server.db.engine import make_engine
    from workspace_server.db.migrate import upgrade_to_head
    from workspace_server.secrets.atrest import prepare as prepare_secrets
    from workspace_server.secrets.crypto import EncryptionKeyRequired

    async def run() -> None:
        engine = make_engine(settings.DATABASE_URL)
        try:
            await upgrade_to_head(engine)
            await prepare_secrets(settings, engine)  # the secrets key, and stored secrets under it
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except EncryptionKeyRequired as exc:  # e.g. encrypted rows but the generated key file is gone
        typer.echo(f"workspace-server: {exc}", err=True)
        raise typer.Exit(code=1) from None


def main() -> None:
    cli()
