"""Confine user-supplied relative paths to a root directory (CWE-22; upstream #226, #241)."""

from __future__ import annotations

import os
from pathlib import Path


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_inside_root(root: Path | str, user_path: str, *, allow_root: bool = False) -> Path | None:
    """`root/user_path` if it stays inside `root`, else None.

    Rejected: empty, NUL bytes, absolute paths, `..` that climbs out, and symlinks under root whose
    target lies outside it (the reference checked only the lexical form). The target need not exist.
    `allow_root` admits a path that resolves to root itself (e.g. ".").
    """
    if not user_path or "\x00" in user_path or os.path.isabs(user_path):
        return None
    root_abs = Path(os.path.abspath(root))
    joined = Path(os.path.normpath(os.path.join(root_abs, user_path)))
    if not _within(joined, root_abs):
        return None
    real_root = Path(os.path.realpath(root_abs))
    if not _within(Path(os.path.realpath(joined)), real_root):
        return None
    if not allow_root and joined == root_abs:
        return None
    return joined
