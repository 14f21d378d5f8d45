"""`org.yaml` loading with the `!include <path>` tag (spec 06 §3.5), on top of `yaml.SafeLoader` only.

Why a tag at all: large orgs split their tree into per-team and per-role files. Why this shape: the tag
constructor only records *what* to include; a second walk loads it relative to the including file, so
every path goes through one confinement check (`resolve_inside_root`: no `..` escape, no symlink
escape, template root only), and cycles, depth > 16, missing and empty files are errors the caller maps
to `org template expansion failed`. Plain YAML errors stay `yaml.YAMLError` (`invalid org template`).
Aliases are walked once per object, so an alias bomb cannot make the walk exponential.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workspace_server.common.paths import resolve_inside_root

MAX_INCLUDE_DEPTH = 16
MAX_FILE_BYTES = 1024 * 1024
INCLUDE_TAG = "!include"


class IncludeError(Exception):
    """An `!include` that cannot be honoured (escape, missing, empty, cycle, too deep)."""


@dataclass(frozen=True)
class _Include:
    path: str


class _IncludeLoader(yaml.SafeLoader):
    """SafeLoader plus the `!include` scalar tag (nothing else: no Python object tags)."""


def _construct_include(loader: yaml.SafeLoader, node: yaml.Node) -> _Include:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(None, None, "!include takes a path", node.start_mark)
    return _Include(str(loader.construct_scalar(node)))


_IncludeLoader.add_constructor(INCLUDE_TAG, _construct_include)


def _read(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError:
        raise IncludeError("cannot read") from None
    if len(raw) > MAX_FILE_BYTES:
        raise IncludeError("file too large")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise IncludeError("not UTF-8") from None


def _target(root: Path, base_dir: Path, rel: str) -> Path:
    """`rel` (relative to the including file's dir) inside `root`, else IncludeError."""
    if not rel or "\x00" in rel or os.path.isabs(rel):
        raise IncludeError("include path must be relative")
    joined = os.path.normpath(os.path.join(base_dir, rel))
    inside = resolve_inside_root(root, os.path.relpath(joined, root))
    if inside is None:
        raise IncludeError("include escapes the template root")
    return inside


def load_org_file(path: Path, root: Path) -> Any:
    """Parse `path` (inside `root`) and expand its includes. FileNotFoundError if `path` is absent."""
    root = Path(os.path.abspath(root))
    if not path.is_file():
        raise FileNotFoundError(path)
    text = _read(path)
    doc = yaml.load(text, Loader=_IncludeLoader)  # noqa: S506 - a SafeLoader subclass
    return _Expander(root).expand(doc, path.parent, (os.path.realpath(path),))


class _Expander:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: set[int] = set()

    def expand(self, node: Any, base_dir: Path, stack: tuple[str, ...]) -> Any:
        if isinstance(node, _Include):
            return self._include(node.path, base_dir, stack)
        if isinstance(node, dict | list):
            if id(node) in self.seen:  # an alias of something already expanded
                return node
            self.seen.add(id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in list(items):
                node[key] = self.expand(value, base_dir, stack)
        return node

    def _include(self, rel: str, base_dir: Path, stack: tuple[str, ...]) -> Any:
        if len(stack) > MAX_INCLUDE_DEPTH:
            raise IncludeError("include depth exceeded")
        target = _target(self.root, base_dir, rel)
        real = os.path.realpath(target)
        if real in stack:
            raise IncludeError("include cycle")
        if not target.is_file():
            raise IncludeError("included file not found")
        text = _read(target)
        try:
            doc = yaml.load(text, Loader=_IncludeLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError:
            raise IncludeError("included file is not valid YAML") from None
        if doc is None:
            raise IncludeError("included file is empty")
        return self.expand(doc, target.parent, (*stack, real))
