"""Image refresh (spec 02 §6): re-pull runtime images, then recreate the workspaces running them.

`refresh(orch, runtimes, recreate)`:
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
import anyio.to_thread

from workspace_server.provisioner import images
from workspace_server.provisioner.base import MANAGED_LABEL, WORKSPACE_LABEL, PullProgress

log = logging.getLogger(__name__)

PULL_BUDGET_SECONDS = 300.0
GHCR = "ghcr.io"


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


def _pull_sync(client: Any, ref: str, platform: str | None, auth: dict[str, str] | None) -> None:
    def report(ev: PullProgress) -> None:
        log.debug("refresh: %s %s %s", ev.image, ev.layer, ev.status)

    if auth is not None and ref.startswith(GHCR + "/"):
        # images.pull has no auth parameter; the SDK takes it per call
        for ev in client.api.pull(ref, stream=True, decode=True, platform=platform, auth_config=auth):
            if ev.get("error"):
                raise RuntimeError(str(ev["error"]))
        return
    images.pull(client, ref, platform, report)


def _containers_sync(client: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": f"{MANAGED_LABEL}=true"})
    out = []
    for row in rows:
        try:
            info = client.api.inspect_container(row["Id"])
        except Exception:  # gone between list and inspect, or a transient error: skip it
            log.warning("refresh: inspect %s failed", str(row.get("Id", ""))[:12], exc_info=True)
            continue
        name = str(info.get("Name") or "").lstrip("/")
        labels = (info.get("Config") or {}).get("Labels") or {}
        out.append(
            {
                "name": name,
                "image": (info.get("Config") or {}).get("Image") or "",
                "workspace_id": labels.get(WORKSPACE_LABEL) or "",
            }
        )
    return out


async def refresh(orch: Any, runtimes: list[str], recreate: bool) -> RefreshResult:
    backend = orch.backend
    client = backend.client
    platform = backend._platform()
    auth = registry_auth(orch.settings.GHCR_USER, orch.settings.GHCR_TOKEN)
    res = RefreshResult()
    pulled_images: set[str] = set()
    with anyio.move_on_after(PULL_BUDGET_SECONDS) as scope:
        for rt in runtimes:
            ref = orch.images.image_for(rt)
            try:
                await anyio.to_thread.run_sync(
                    _pull_sync, client, ref, platform, auth, abandon_on_cancel=True
                )
            except Exception as exc:
                log.warning("refresh: pull of %s (%s) failed: %s", rt, ref, exc)
                res.failed.append(rt)
                continue
            res.pulled.append(rt)
            pulled_images.add(ref)
    if scope.cancelled_caught:
        done = set(res.pulled) | set(res.failed)
        res.failed.extend(rt for rt in runtimes if rt not in done)
    if not recreate or not pulled_images:
        return res
    try:
        containers = await anyio.to_thread.run_sync(_containers_sync, client)
    except Exception:
        log.exception("refresh: listing containers failed")
        raise RefreshError(res) from None
    for c in containers:
        if c["image"] not in pulled_images or not c["workspace_id"]:
            continue
        try:
            await backend.stop(c["workspace_id"])
        except Exception:
            log.warning("refresh: stopping %s failed", c["name"], exc_info=True)
            continue
        res.recreated.append(c["name"])
        orch.spawn(orch.restart_by_id(c["workspace_id"]), f"refresh-restart-{c['workspace_id']}")
    return res
