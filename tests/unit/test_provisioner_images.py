"""Image-ref classification and the pull policy (DESIGN §7, spec 02 §2 moving-tag re-pull)."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest

from workspace_server.provisioner import ImageNotFound, PullProgress
from workspace_server.provisioner.docker.images import (
    came_from_registry,
    ensure_image,
    is_image_not_found_error,
    is_moving,
    parse_image_ref,
    should_pull,
)

MOVING = [
    "molecule/workspace-agent:latest",
    "molecule/workspace-agent",
    "ghcr.io/molecule-ai/workspace-template-hermes:latest",
    "ghcr.io/molecule-ai/workspace-template-hermes",
    "ubuntu",
    "ubuntu:staging",
    "repo/img:main",
    "repo/img:dev",
    "repo/img:edge",
    "repo/img:nightly",
    "repo/img:rolling",
    "localhost:5000/foo",  # :5000 is the registry port, not a tag
    "localhost:5000/foo:latest",
    "127.0.0.1:5000/team/agent",
    "registry.example.com:443/a/b/c",
    "repo/img:LATEST",  # tag comparison ignores case
]
PINNED = [
    "repo/img:1.2.3",
    "repo/img:v1.2.3",
    "repo/img:1.2",
    "repo/img:sha-4f2a9c1",
    "repo/img:2026-04-27",
    "repo/img:20260427",
    "repo/img:build-1234",
    "repo/img:latest-2",  # only the exact moving words move
    "repo/img:mainline",
    "workspace-template:hermes",  # the legacy local-only tag
    "localhost:5000/foo:v2",
    "repo/img@sha256:" + "a" * 64,
    "repo/img:latest@sha256:" + "b" * 64,  # a digest pins even a moving tag
    "localhost:5000/foo@sha256:" + "c" * 64,
]


@pytest.mark.parametrize("ref", MOVING)
def test_moving_tags_are_repulled(ref: str) -> None:
    assert is_moving(ref) is True


@pytest.mark.parametrize("ref", PINNED)
def test_pinned_refs_are_not_repulled(ref: str) -> None:
    assert is_moving(ref) is False


def test_case_count() -> None:
    assert len(MOVING) + len(PINNED) >= 22


@pytest.mark.parametrize(
    ("ref", "repo", "tag", "digest"),
    [
        ("localhost:5000/foo", "localhost:5000/foo", "", ""),
        ("localhost:5000/foo:bar", "localhost:5000/foo", "bar", ""),
        ("a/b:c@sha256:abc", "a/b", "c", "sha256:abc"),
        ("  ubuntu:22.04 ", "ubuntu", "22.04", ""),
    ],
)
def test_parse_image_ref(ref: str, repo: str, tag: str, digest: str) -> None:
    parsed = parse_image_ref(ref)
    assert (parsed.repository, parsed.tag, parsed.digest) == (repo, tag, digest)


def test_should_pull_policy() -> None:
    assert should_pull("a/b:latest", present=False) is True
    assert should_pull("a/b:1.0", present=False) is True
    assert should_pull("a/b:latest", present=True) is True
    assert should_pull("a/b:1.0", present=True) is False
    # a moving tag built on this host has no registry to be re-pulled from
    assert should_pull("a/b:latest", present=True, from_registry=False) is False


def test_came_from_registry_matches_repository() -> None:
    assert came_from_registry("127.0.0.1:5000/x:latest", ["127.0.0.1:5000/x@sha256:1"]) is True
    assert came_from_registry("127.0.0.1:5000/x:latest", ["127.0.0.1:5000/y@sha256:1"]) is False
    assert came_from_registry("docker.io/library/ubuntu:latest", ["ubuntu@sha256:1"]) is True
    assert came_from_registry("molecule/workspace-agent:latest", []) is False


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        ('No such image: "repo/x:1"', True),
        ('image "ghcr.io/x:latest" not found', True),
        ("manifest for image not found", True),
        ("container not found", False),
        ("connection refused", False),
        ("", False),
    ],
)
def test_image_not_found_error(msg: str, expected: bool) -> None:
    assert is_image_not_found_error(msg) is expected


class FakeAPI:
    """The two docker-SDK calls `ensure_image` makes."""

    def __init__(self, present: bool, digests: list[str], pull_events: list[Any] | Exception) -> None:
        self.present = present
        self.digests = digests
        self.pull_events = pull_events
        self.pulls: list[str] = []

    def inspect_image(self, ref: str) -> dict[str, Any]:
        if not self.present:
            raise docker.errors.ImageNotFound("No such image")
        return {"RepoDigests": self.digests}

    def pull(self, ref: str, **_: Any) -> Any:
        self.pulls.append(ref)
        if isinstance(self.pull_events, Exception):
            raise self.pull_events
        return iter(self.pull_events)


class FakeClient:
    def __init__(self, api: FakeAPI) -> None:
        self.api = api


REG = "127.0.0.1:5000/team/agent"


def _run(api: FakeAPI, ref: str) -> list[PullProgress]:
    events: list[PullProgress] = []
    ensure_image(FakeClient(api), ref, None, events.append)
    return events


def test_moving_tag_from_registry_is_pulled_with_progress() -> None:
    layer = {"status": "Downloading", "id": "l1", "progressDetail": {"current": 5, "total": 10}}
    api = FakeAPI(True, [f"{REG}@sha256:1"], [{"status": "Pulling fs layer", "id": "l1"}, layer, layer])
    events = _run(api, f"{REG}:latest")
    assert api.pulls == [f"{REG}:latest"]
    assert [e.status for e in events] == ["pulling", "Pulling fs layer", "Downloading", "pulled"]
    assert events[2].current == 5 and events[2].total == 10  # the repeated tick was not forwarded


def test_pinned_present_is_not_pulled() -> None:
    api = FakeAPI(True, [f"{REG}@sha256:1"], [])
    assert _run(api, f"{REG}:v1") == []
    assert api.pulls == []


def test_pinned_missing_is_pulled() -> None:
    api = FakeAPI(False, [], [{"status": "Downloaded newer image"}])
    events = _run(api, f"{REG}:v1")
    assert api.pulls == [f"{REG}:v1"]
    assert events[-1].status == "pulled"


def test_failed_pull_falls_back_to_cached_image() -> None:
    api = FakeAPI(True, [f"{REG}@sha256:1"], [{"error": "manifest unknown"}])
    events = _run(api, f"{REG}:latest")
    assert [e.status for e in events] == ["pulling", "using cached image"]


def test_missing_image_and_failed_pull_is_image_not_found() -> None:
    api = FakeAPI(False, [], docker.errors.APIError("500 Server Error: connection refused"))
    with pytest.raises(ImageNotFound) as err:
        _run(api, f"{REG}:latest")
    assert err.value.message == (
        f'image "{REG}:latest" not found: it is not available locally and pulling it failed'
    )
    assert "connection refused" in err.value.detail  # for the log, not the user
