"""Plugin sources (spec 06 §3.1): `<scheme>://<spec>` strings, resolvers that stage a plugin into a
directory, and the integrity check of a staged plugin.

Two resolvers exist: `local://<name>` (a subdirectory of the server's plugins dir) and
`github://<owner>/<repo>#<ref>` (an anonymous shallow clone). Both copy regular files only: symlinks and
special files are dropped while staging, so nothing later (install, download) can be steered outside the
plugin by a link planted in it. `git` runs with an argv list, `--depth=1` and `--` before the URL, under
the caller's timeout, in a minimal environment (the server's own env holds ADMIN_TOKEN, DATABASE_URL…).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio.to_thread

from workspace_server.common.paths import resolve_inside_root
from workspace_server.config import passthrough_environ
from workspace_server.egress import EgressPolicy, UnsafeURL
from workspace_server.plugins.manifest import NAME_RE

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_GH_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
_GH_RE = re.compile(rf"^({_GH_PART})/({_GH_PART})(?:#([A-Za-z0-9_.][A-Za-z0-9_./-]{{0,254}}))?$")
_NOT_FOUND_MARKERS = ("repository not found", "could not find remote branch")
_PASSTHROUGH_ENV = ("PATH", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
MANIFEST_JSON = "manifest.json"


class SourceError(Exception):
    """Base of every source failure; the message is for logs only, never for clients."""


class InvalidSource(SourceError):
    """The source string (or a scheme-specific spec) does not parse."""


class UnknownScheme(SourceError):
    """No resolver is registered for the scheme."""


class InvalidPluginName(SourceError):
    """A local plugin name outside `^[a-z0-9][a-z0-9._-]{0,127}$` or with separators / `..`."""


class UnpinnedSource(SourceError):
    """`github://owner/repo` without `#ref` while PLUGIN_ALLOW_UNPINNED is off."""


class PluginNotFound(SourceError):
    """The plugin (dir, repository or ref) does not exist."""


class FetchFailed(SourceError):
    """Any other fetch failure (git missing, network, auth): a 502 for the client."""


class StagedTooLarge(SourceError):
    """The staged plugin passed the size cap; staging stopped there."""


@dataclass(frozen=True)
class SourceSpec:
    scheme: str
    spec: str

    @property
    def raw(self) -> str:
        return f"{self.scheme}://{self.spec}"


def parse_source(raw: str) -> SourceSpec:
    """Trimmed `scheme://spec`; no scheme means `local`; empty source or spec → InvalidSource."""
    text = raw.strip()
    if not text:
        raise InvalidSource("empty source")
    m = _SCHEME_RE.match(text)
    scheme, spec = (m.group(1), m.group(2).strip()) if m else ("local", text)
    if not spec:
        raise InvalidSource("empty spec")
    return SourceSpec(scheme, spec)


class Resolver(Protocol):
    scheme: str

    def validate(self, spec: str) -> None:
        """Raise InvalidSource / InvalidPluginName / UnpinnedSource before anything is fetched."""
        ...

    async def fetch(self, spec: str, dest: Path, max_bytes: int) -> str:
        """Stage the plugin's files into `dest` (an existing empty dir) and return the plugin's name."""
        ...


class SourceRegistry:
    """Resolvers by scheme; re-registering a scheme replaces it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_scheme: dict[str, Resolver] = {}

    def register(self, resolver: Resolver) -> None:
        with self._lock:
            self._by_scheme[resolver.scheme] = resolver

    def get(self, scheme: str) -> Resolver:
        with self._lock:
            found = self._by_scheme.get(scheme)
        if found is None:
            raise UnknownScheme(scheme)
        return found

    def schemes(self) -> list[str]:
        with self._lock:
            return sorted(self._by_scheme)


# ---------------------------------------------------------------- staging (regular files only)


def copy_regular_tree(src: Path, dest: Path, max_bytes: int, skip_top: frozenset[str] = frozenset()) -> int:
    """Copy the regular files under `src` into `dest`, never following a symlink; returns the bytes copied.

    StagedTooLarge as soon as the total passes `max_bytes` (what was copied stays for the caller to remove).
    """
    total = 0
    for dirpath, dirs, files, dir_fd in os.fwalk(src, follow_symlinks=False):
        rel = Path(dirpath).relative_to(src)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in skip_top]
            files = [f for f in files if f not in skip_top]
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            total += _copy_one(name, dir_fd, dest / rel / name, max_bytes - total)
    return total


def _copy_one(name: str, dir_fd: int, target: Path, budget: int) -> int:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return 0  # a symlink (ELOOP), a FIFO without writer, or a file that vanished
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return 0
        if st.st_size > budget:
            raise StagedTooLarge("staged plugin exceeds size limit")
        with open(target, "wb") as out:
            shutil.copyfileobj(f, out)
    return int(st.st_size)


def staged_size(root: Path) -> int:
    """Bytes of the regular files under `root` (symlinks not followed)."""
    total = 0
    for _dirpath, _dirs, files, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def integrity_ok(files: dict[str, bytes]) -> bool:
    """Spec 06 §3.1: a top-level manifest.json with a string `sha256` must match the staged files.

    The digest covers `<relpath>\\0<content>` of every file but manifest.json, sorted by path. No file or
    no field passes; a non-string field, or a manifest.json that is not a JSON object, fails.
    """
    raw = files.get(MANIFEST_JSON)
    if raw is None:
        return True
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict):
        return False
    want = data.get("sha256")
    if want is None:
        return True
    if not isinstance(want, str):
        return False
    h = hashlib.sha256()
    for rel in sorted(k for k in files if k != MANIFEST_JSON):
        h.update(rel.encode() + b"\0" + files[rel])
    return h.hexdigest() == want.strip().lower()


# ---------------------------------------------------------------- local://<name>


class LocalResolver:
    scheme = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def validate(self, spec: str) -> None:
        if "/" in spec or "\\" in spec or ".." in spec or not NAME_RE.match(spec):
            raise InvalidPluginName(spec)

    async def fetch(self, spec: str, dest: Path, max_bytes: int) -> str:
        self.validate(spec)
        try:
            await anyio.to_thread.run_sync(self._copy, spec, dest, max_bytes, abandon_on_cancel=True)
        except OSError as exc:
            raise FetchFailed(f"copying {spec}: {exc}") from exc
        return spec

    def _copy(self, spec: str, dest: Path, max_bytes: int) -> None:
        src = resolve_inside_root(self.root, spec)
        if src is None or not os.path.lexists(src):
            raise PluginNotFound(spec)
        if src.is_symlink() or not src.is_dir():
            raise FetchFailed(f"{spec} is not a directory")
        copy_regular_tree(src, dest, max_bytes)


# ---------------------------------------------------------------- github://<owner>/<repo>#<ref>


class GithubResolver:
    scheme = "github"

    def __init__(
        self, base_url: str, allow_unpinned: bool, git: str = "git", policy: EgressPolicy | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.allow_unpinned = allow_unpinned
        self.git = git
        self.policy = policy

    async def check_base_url(self) -> str:
        """The egress check before git dials (issue 11 §2): the base URL's form and every address its
        host resolves to now. git resolves again itself, so this narrows rather than closes a rebinding
        window; redirects are off and git may use only the base URL's protocol. `file://` (tests, local
        mirrors) dials nothing. Returns the protocol git may use."""
        scheme = self.base_url.split(":", 1)[0].lower()
        if scheme == "file":
            return scheme
        if scheme not in ("http", "https"):
            raise FetchFailed("PLUGIN_GITHUB_BASE_URL must be an http(s) or file URL")
        if self.policy is None:
            raise FetchFailed("no egress policy to check the plugin source host with")
        try:
            await self.policy.check_url(self.base_url + "/")
        except UnsafeURL as exc:
            raise FetchFailed(f"plugin source host refused by the egress policy: {exc}") from None
        return scheme

    def _parse(self, spec: str) -> tuple[str, str, str | None]:
        m = _GH_RE.match(spec)
        if m is None:
            raise InvalidSource(f"github spec {spec!r}")
        return m.group(1), m.group(2), m.group(3)

    def validate(self, spec: str) -> None:
        _owner, _repo, ref = self._parse(spec)
        if ref is None and not self.allow_unpinned:
            raise UnpinnedSource(spec)

    def clone_argv(self, owner: str, repo: str, ref: str | None, target: str) -> list[str]:
        branch = ["--branch", ref] if ref else []
        no_redirects = ["-c", "http.followRedirects=false"]
        url = f"{self.base_url}/{owner}/{repo}.git"
        return [self.git, *no_redirects, "clone", "--depth=1", *branch, "--", url, target]

    async def fetch(self, spec: str, dest: Path, max_bytes: int) -> str:
        self.validate(spec)
        owner, repo, ref = self._parse(spec)
        protocol = await self.check_base_url()
        tmp = Path(tempfile.mkdtemp(prefix="molecule-gh-clone-"))
        try:
            clone = tmp / "repo"
            await self._clone(self.clone_argv(owner, repo, ref, str(clone)), tmp, protocol)
            await anyio.to_thread.run_sync(
                copy_regular_tree, clone, dest, max_bytes, frozenset({".git"}), abandon_on_cancel=True
            )
        finally:
            await anyio.to_thread.run_sync(shutil.rmtree, tmp, True)
        return repo

    async def _clone(self, argv: list[str], home: Path, protocol: str = "https") -> None:
        env = passthrough_environ(_PASSTHROUGH_ENV)
        env.update(HOME=str(home), LANG="C", LC_ALL="C", GIT_TERMINAL_PROMPT="0")
        env["GIT_ALLOW_PROTOCOL"] = protocol  # no hop to ssh://, git://, ext:: or another scheme
        env.setdefault("PATH", os.defpath)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=str(home),
            )
        except OSError as exc:  # git is not installed (or not executable)
            raise FetchFailed(f"running git: {exc}") from exc
        try:
            out, _ = await proc.communicate()
        except BaseException:  # cancelled by the fetch timeout: leave no git behind
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise classify_clone_failure(out.decode("utf-8", "replace"))


def classify_clone_failure(output: str) -> SourceError:
    """Not-found markers in git's output → PluginNotFound; anything else (auth, network) → FetchFailed."""
    low = output.lower()
    if any(m in low for m in _NOT_FOUND_MARKERS) or ("remote branch" in low and "not found" in low):
        return PluginNotFound(output[-500:])
    return FetchFailed(output[-500:])
