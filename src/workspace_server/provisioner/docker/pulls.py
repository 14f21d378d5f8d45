"""Images of the Docker backend: inspect-or-pull before a create, and the image refresh's pulls."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.to_thread
import docker
import docker.errors

from workspace_server.provisioner.base import (
    MANAGED_LABEL,
    ImageUser,
    PullProgress,
)
from workspace_server.provisioner.docker import images
from workspace_server.provisioner.docker.engine import DockerBase
from workspace_server.provisioner.refresh import GHCR

log = logging.getLogger(__name__)


class PullsMixin(DockerBase):
    def _image_attrs(self, ref: str, report: images.Report) -> dict[str, Any]:
        """The image's inspect; pulled first (images.ensure_image) when the pull policy says so.

        One inspect answers both "present, and must it be pulled?" and "which user and id?" on the
        common path; only a pull inspects again.
        """
        try:
            attrs: dict[str, Any] | None = self.client.api.inspect_image(ref)
        except docker.errors.NotFound:  # ImageNotFound is a subclass
            attrs = None
        if attrs is not None:
            from_registry = images.came_from_registry(ref, attrs.get("RepoDigests") or [])
            if not images.should_pull(ref, True, from_registry):
                return attrs
        images.ensure_image(self.client, ref, self._platform(), report)
        return dict(self.client.api.inspect_image(ref))

    async def pull_image(self, ref: str, auth: dict[str, str] | None) -> None:
        """Pull `ref` again (image refresh); abandoned, not awaited, when the refresh budget runs out."""
        await anyio.to_thread.run_sync(self._pull_sync, ref, auth, abandon_on_cancel=True)

    def _pull_sync(self, ref: str, auth: dict[str, str] | None) -> None:
        platform = self._platform()

        def report(ev: PullProgress) -> None:
            log.debug("refresh: %s %s %s", ev.image, ev.layer, ev.status)

        if auth is not None and ref.startswith(GHCR + "/"):
            # images.pull has no auth parameter; the SDK takes it per call
            for ev in self.client.api.pull(
                ref, stream=True, decode=True, platform=platform, auth_config=auth
            ):
                if ev.get("error"):
                    raise RuntimeError(str(ev["error"]))
            return
        images.pull(self.client, ref, platform, report)

    async def image_users(self) -> list[ImageUser]:
        return await anyio.to_thread.run_sync(self._image_users_sync)

    def _image_users_sync(self) -> list[ImageUser]:
        rows: list[dict[str, Any]] = self.client.api.containers(
            all=True, filters={"label": f"{MANAGED_LABEL}=true"}
        )
        out = []
        for row in rows:
            try:
                info = self.client.api.inspect_container(row["Id"])
            except Exception:  # gone between list and inspect, or a transient error: skip it
                log.warning("refresh: inspect %s failed", str(row.get("Id", ""))[:12], exc_info=True)
                continue
            name = str(info.get("Name") or "").lstrip("/")
            labels = (info.get("Config") or {}).get("Labels") or {}
            image = (info.get("Config") or {}).get("Image") or ""
            wid = self._workspace_of(str(row["Id"]), labels) or ""
            out.append(ImageUser(name=name, image=image, workspace_id=wid))
        return out
