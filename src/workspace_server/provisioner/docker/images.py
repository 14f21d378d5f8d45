"""Image references and the pull policy (DESIGN §7, spec 02 §2 "Moving-tag re-pull").

Moving tags (`latest`, none, `staging`, `main`, `dev`, `edge`, `nightly`, `rolling`) are re-pulled on
every start so a restart picks up a republished image; pinned tags and `@sha256:` digests are pulled only
when missing. A local copy that never came from its repository's registry (built on this host, like
`molecule/workspace-agent:latest` from `make runtime-image`) is local-only and counts as pinned: there is
nothing to pull it from, and trying would cost a registry round-trip, or a DNS timeout offline, per start.
A failed pull falls back to the cached copy; with no cached copy the start fails with
`ImageNotFound`, which names the image.

The pull itself (`ensure_image`) is blocking docker-SDK code: the docker backend runs it in a worker
thread and hands in a `report` callback that is already safe to call from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import docker.errors
import requests

from workspace_server.provisioner.base import ImageNotFound, PullProgress

log = logging.getLogger(__name__)

MOVING_TAGS = frozenset({"", "latest", "staging", "main", "dev", "edge", "nightly", "rolling"})


@dataclass(frozen=True)
class ImageRef:
    repository: str  # registry/path without tag or digest, e.g. `localhost:5000/foo`
    tag: str  # "" when the reference has none
    digest: str  # `sha256:…`, "" when none

    @property
    def moving(self) -> bool:
        return not self.digest and self.tag.lower() in MOVING_TAGS


def parse_image_ref(ref: str) -> ImageRef:
    """Split `repo[:tag][@digest]`; the tag is looked for in the last path segment only.

    `localhost:5000/foo` therefore has no tag (`:5000` is the registry port).
    """
    ref = ref.strip()
    name, _, digest = ref.partition("@")
    head, slash, last = name.rpartition("/")
    tag = ""
    if ":" in last:
        last, _, tag = last.partition(":")
    return ImageRef(repository=head + slash + last, tag=tag, digest=digest)


def is_moving(ref: str) -> bool:
    """True when `ref` must be re-pulled on every start."""
    return parse_image_ref(ref).moving


def should_pull(ref: str, present: bool, from_registry: bool = True) -> bool:
    """Missing → pull; moving → pull, unless the local copy was built here (nothing to pull it from)."""
    if not present:
        return True
    return is_moving(ref) and from_registry


def familiar_repository(repo: str) -> str:
    """`docker.io/library/ubuntu` → `ubuntu`, as the engine writes Docker Hub names in RepoDigests."""
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix) :]
            break
    return repo.removeprefix("library/")


def came_from_registry(ref: str, repo_digests: Iterable[str]) -> bool:
    """True when the local image was pulled from or pushed to `ref`'s repository (a RepoDigest names it)."""
    want = familiar_repository(parse_image_ref(ref).repository)
    return any(familiar_repository(parse_image_ref(d).repository) == want for d in repo_digests)


def is_image_not_found_error(msg: str) -> bool:
    """The reference's test (spec 02 §2 step 6, §8): "no such image", or both "not found" and "image"."""
    low = msg.lower()
    return "no such image" in low or ("not found" in low and "image" in low)


Report = Callable[[PullProgress], None]


class _Throttle:
    """Forward a layer's status changes and every quarter of its download, not each progress tick."""

    def __init__(self, image: str, report: Report) -> None:
        self.image = image
        self.report = report
        self.seen: dict[str, tuple[str, int]] = {}

    def feed(self, ev: dict[str, Any]) -> None:
        status = str(ev.get("status") or "")
        layer = str(ev.get("id") or "")
        detail = ev.get("progressDetail") if isinstance(ev.get("progressDetail"), dict) else {}
        current = int((detail or {}).get("current") or 0)
        total = int((detail or {}).get("total") or 0)
        quarter = (current * 4 // total) if total > 0 else 0
        if not status or self.seen.get(layer) == (status, quarter):
            return
        self.seen[layer] = (status, quarter)
        self.report(PullProgress(self.image, status, layer, current, total))


def pull(client: Any, ref: str, platform: str | None, report: Report) -> None:
    """Pull `ref`, streaming progress to `report`; raises RuntimeError with the engine's message."""
    throttle = _Throttle(ref, report)
    # The SDK reads a tag/digest out of the repository argument itself; no tag means `latest`.
    try:
        stream: Iterable[dict[str, Any]] = client.api.pull(
            ref, stream=True, decode=True, platform=platform or None
        )
        for ev in stream:
            if ev.get("error"):
                raise RuntimeError(str(ev["error"]))
            throttle.feed(ev)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise RuntimeError(str(exc)) from exc


def local_image(client: Any, ref: str) -> tuple[bool, bool]:
    """(present, came from ref's registry) for the local copy of `ref`."""
    try:
        attrs = client.api.inspect_image(ref)
    except docker.errors.NotFound:  # ImageNotFound is a subclass
        return False, False
    return True, came_from_registry(ref, attrs.get("RepoDigests") or [])


def ensure_image(client: Any, ref: str, platform: str | None, report: Report) -> None:
    """Make `ref` available locally per the pull policy; ImageNotFound when it cannot be."""
    present, from_registry = local_image(client, ref)
    if not should_pull(ref, present, from_registry):
        return
    report(PullProgress(ref, "pulling"))
    try:
        pull(client, ref, platform, report)
    except (RuntimeError, OSError) as exc:
        if present:
            log.warning("pull of %s failed, using the cached image: %s", ref, exc)
            report(PullProgress(ref, "using cached image"))
            return
        log.warning("pull of %s failed and no local copy: %s", ref, exc)
        report(PullProgress(ref, "failed"))
        raise ImageNotFound(ref, str(exc)) from exc
    report(PullProgress(ref, "pulled"))
