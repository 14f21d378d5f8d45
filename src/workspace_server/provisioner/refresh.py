"""Image refresh (spec 02 §6): re-pull runtime images, then recreate the workspaces running them.

`refresh(orch, runtimes, recreate)`, on a backend that `pulls_images` (its `pull_image` and `image_users`):
- pulls each runtime's image (from the runtime registry, so `RUNTIME_IMAGES` overrides count) under one
  5-minute budget; a failed pull fails only its own runtime;
- with `recreate`, finds our containers whose `Config.Image` is one of the pulled images, stops each and
  restarts its workspace through `restart_by_id` (DECIDE: the reference only force-removed them and left
  the restart to the 15 s health sweep; restarting directly brings them back without waiting for a sweep
  and also works where the sweep interval is long). Paused, hibernated or removed rows are not restarted.
Result `{"pulled":[runtimes],"failed":[runtimes],"recreated":[container names]}`; it fails (with the
partial result) only when the container list cannot be read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio

from workspace_server.provisioner.base import Backend

log = logging.getLogger(__name__)

PULL_BUDGET_SECONDS = 300.0
GHCR = "ghcr.io"  # registry credentials are sent only to it (the Docker backend's pull_image checks too)


class RefreshError(Exception):
    """Listing containers failed after the pulls; `result` holds what was done."""

    def __init__(self, result: RefreshResult) -> None:
        super().__init__("container list failed")
        self.result = result


@dataclass
class RefreshResult:
    pulled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        # a struct upstream, so its field order (not sorted keys) is the wire order
        return {"pulled": self.pulled, "failed": self.failed, "recreated": self.recreated}


def registry_auth(user: str, token: str) -> dict[str, str] | None:
    """GHCR credentials for the engine, only when both are set (public images pull without)."""
    user, token = user.strip(), token.strip()
    if not user or not token:
        return None
    return {"username": user, "password": token, "serveraddress": GHCR}


async def refresh(orch: Any, runtimes: list[str], recreate: bool) -> RefreshResult:
    backend: Backend = orch.backend
    auth = registry_auth(orch.settings.GHCR_USER, orch.settings.GHCR_TOKEN)
    res = RefreshResult()
    pulled_images: set[str] = set()
    with anyio.move_on_after(PULL_BUDGET_SECONDS) as scope:
        for rt in runtimes:
            ref = orch.images.image_for(rt)
            try:
                await backend.pull_image(ref, auth)
            except Exception as exc:
                log.warning("refresh: pull of %s (%s) failed: %s", rt, ref, exc)
                res.failed.append(rt)
                continue
            res.pulled.append(rt)
            pulled_images.add(ref)
            try:  # a moving tag never serves a stale pool: its members go, the refill uses the new image
                await backend.drain_warm_pool(ref)
            except Exception:
                log.warning("refresh: draining the warm pool of %s failed", ref, exc_info=True)
    if scope.cancelled_caught:
        done = set(res.pulled) | set(res.failed)
        res.failed.extend(rt for rt in runtimes if rt not in done)
    if not recreate or not pulled_images:
        return res
    try:
        containers = await backend.image_users()
    except Exception:
        log.exception("refresh: listing containers failed")
        raise RefreshError(res) from None
    for c in containers:
        if c.image not in pulled_images or not c.workspace_id:
            continue
        try:
            await backend.stop(c.workspace_id)
        except Exception:
            log.warning("refresh: stopping %s failed", c.name, exc_info=True)
            continue
        res.recreated.append(c.name)
        orch.spawn(orch.restart_by_id(c.workspace_id), f"refresh-restart-{c.workspace_id}")
    return res
