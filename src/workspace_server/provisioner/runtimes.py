"""Runtime → image registry (spec 02 §2 "Images").

Built in: `echo` runs our reference agent image; the reference's runtimes run their template images.
`RUNTIME_IMAGES` (a JSON object runtime → image) overrides and adds entries; the key `"*"` replaces the
image used for runtimes with no entry (the reference's DefaultImage, the langgraph image).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from workspace_server.config import Settings

AGENT_IMAGE = "molecule/workspace-agent:latest"
REFERENCE_RUNTIMES = (
    "langgraph",
    "claude-code",
    "openclaw",
    "deepagents",
    "crewai",
    "autogen",
    "hermes",
    "gemini-cli",
)
DEFAULT_KEY = "*"


def template_image(runtime: str) -> str:
    return f"ghcr.io/molecule-ai/workspace-template-{runtime}:latest"


BUILTIN_IMAGES: dict[str, str] = {
    "echo": AGENT_IMAGE,
    **{rt: template_image(rt) for rt in REFERENCE_RUNTIMES},
    DEFAULT_KEY: template_image("langgraph"),
}

# A loose image-reference shape: no whitespace or control characters, no leading dash (argv safety).
_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@+]*$")
_RUNTIME_RE = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9._\-]*)$")


class RuntimeImagesError(ValueError):
    """RUNTIME_IMAGES is not a JSON object of runtime name → image reference."""


def parse_runtime_images(raw: str) -> dict[str, str]:
    """The overrides in `RUNTIME_IMAGES`; RuntimeImagesError with a message fit for a startup failure."""
    if not raw.strip():
        return {}
    hint = 'RUNTIME_IMAGES must be a JSON object of runtime name to image, e.g. {"echo":"repo/img:tag"}'
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RuntimeImagesError(f"{hint}: invalid JSON ({exc.msg} at position {exc.pos})") from exc
    if not isinstance(data, dict):
        raise RuntimeImagesError(f"{hint}: got a JSON {type(data).__name__}")
    out: dict[str, str] = {}
    for runtime, image in data.items():
        if not _RUNTIME_RE.match(runtime):
            raise RuntimeImagesError(f"{hint}: invalid runtime name {runtime!r}")
        if not isinstance(image, str) or not _IMAGE_RE.match(image.strip()):
            raise RuntimeImagesError(f"{hint}: invalid image for runtime {runtime!r}")
        out[runtime] = image.strip()
    return out


class RuntimeImages:
    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.images = {**BUILTIN_IMAGES, **(overrides or {})}

    @classmethod
    def from_settings(cls, settings: Settings) -> RuntimeImages:
        return cls(parse_runtime_images(settings.RUNTIME_IMAGES))

    def image_for(self, runtime: str) -> str:
        """The image for `runtime`; unknown or empty runtimes get the default image."""
        return self.images.get(runtime.strip()) or self.images[DEFAULT_KEY]

    def known(self) -> list[str]:
        return sorted(k for k in self.images if k != DEFAULT_KEY)
