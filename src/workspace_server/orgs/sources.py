"""Where org templates live and how their side files are read (spec 06 §2.3, §3.5).

Every path an org.yaml names (`dir`, `files_dir`, `prompt_file`, `initial_prompt_file`, `.env`) goes
through `resolve_inside_root`, so a template can read only files under its own directory: no `..`, no
absolute paths, no symlink that points out (the reference joined some of these unchecked).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from dotenv import dotenv_values

from workspace_server.common.paths import resolve_inside_root
from workspace_server.config import Settings

ORG_DIR_NAME = "org-templates"
MAX_SIDE_FILE_BYTES = 1024 * 1024
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VAR_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def org_templates_dir(settings: Settings) -> Path:
    """`org-templates`, `../org-templates`, `<configs>/../org-templates`: the first that is a directory,
    else the literal name (spec 06 §2.3), made absolute."""
    for cand in (Path(ORG_DIR_NAME), Path("..") / ORG_DIR_NAME, settings.configs_dir.parent / ORG_DIR_NAME):
        if cand.is_dir():
            return cand.resolve()
    return Path(ORG_DIR_NAME).resolve()


def inside(root: Path, base: Path, rel: str) -> Path | None:
    """`base/rel` when it stays inside `root` (base is root or below it), else None."""
    if not rel or "\x00" in rel or os.path.isabs(rel):
        return None
    joined = os.path.normpath(os.path.join(base, rel))
    return resolve_inside_root(root, os.path.relpath(joined, root))


def read_side_file(root: Path, base: Path, rel: str) -> str | None:
    """A confined UTF-8 text file (≤ 1 MiB), or None when escaping, missing, unreadable or too large."""
    path = inside(root, base, rel)
    if path is None or not path.is_file():
        return None
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SIDE_FILE_BYTES + 1)
        if len(raw) > MAX_SIDE_FILE_BYTES:
            return None
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def files_dir(root: Path, rel: str) -> Path | None:
    """A node's `files_dir`, confined to the template root; None when unset, escaping or not a dir."""
    path = inside(root, root, rel) if rel else None
    return path if path is not None and path.is_dir() else None


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=VALUE lines as python-dotenv reads them (`export `, quotes, comments, CRLF), without a BOM.
    No interpolation: a template's `${ADMIN_TOKEN}` must not pull the server's own environment into a
    workspace secret. Empty values and keys that are not env names are skipped."""
    values = dotenv_values(stream=io.StringIO(text.lstrip("\ufeff")), interpolate=False)
    return {k: v for k, v in values.items() if v and _ENV_KEY.match(k)}


def read_dotenv(root: Path, base: Path) -> dict[str, str]:
    text = read_side_file(root, base, ".env")
    return parse_dotenv(text) if text else {}


def expand_vars(value: str, *envs: dict[str, str]) -> str:
    """`${VAR}` / `$VAR` from the first env that has it; unknown names become "" (Go's os.Expand)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        for env in envs:
            if name in env:
                return env[name]
        return ""

    return VAR_PATTERN.sub(sub, value)
