"""Global middleware (spec 06 §1.1). Placeholder until the HTTP-shell work lands."""

from __future__ import annotations

from fastapi import FastAPI

from workspace_server.config import Settings


def install_middleware(app: FastAPI, settings: Settings) -> None:
    return None
