"""Chat attachments in a Docker workspace (`WorkspaceFS` of chatfiles/fs.py): its running container,
via the engine's archive API (the reference's CopyToContainer/CopyFromContainer) plus `mkdir`/`rm` run
with argv, never a shell string."""

from __future__ import annotations

import contextlib
import io
import tarfile
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Protocol

import anyio.to_thread

from workspace_server.chatfiles.fs import (
    CHUNK,
    SPOOL_IN_MEMORY,
    FileNotFound,
    FileStream,
    NotRegularFile,
    StageFailed,
)


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class Execer(Protocol):
    async def exec(self, ws_id: str, argv: list[str], tty: bool = False) -> Any: ...


@dataclass
class DockerFS:
    backend: Execer
    container: Any  # docker SDK Container of the running workspace
    ws_id: str

    async def write_flat(self, directory: str, files: Mapping[str, bytes]) -> None:
        try:
            await self.backend.exec(self.ws_id, ["mkdir", "-p", "--", directory])
            # A planted symlink at a target name could redirect the extraction: remove exact names first.
            await self.backend.exec(self.ws_id, ["rm", "-f", "--", *(f"{directory}/{n}" for n in files)])
            archive = flat_tar(files)
            ok = await anyio.to_thread.run_sync(self.container.put_archive, directory, archive)
        except Exception as exc:  # engine and backend errors alike: the caller answers one message
            raise StageFailed(str(exc)) from exc
        if not ok:
            raise StageFailed("put_archive refused")

    async def open_file(self, path: str) -> FileStream:
        size, fileobj = await anyio.to_thread.run_sync(self._fetch, path)
        return FileStream(size, _file_chunks(fileobj, size))

    def _fetch(self, path: str) -> tuple[int, _Reader]:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        try:
            try:
                stream, _stat = self.container.get_archive(path)
                for chunk in stream:
                    spool.write(chunk)
            except Exception as exc:  # NotFound, or any engine error: the reference answers 404
                raise FileNotFound(path) from exc
            spool.seek(0)
            tar = tarfile.open(fileobj=spool, mode="r:")
            member = tar.next()
            if member is None or not member.isreg():
                raise NotRegularFile(path)
            data = tar.extractfile(member)
            if data is None:
                raise NotRegularFile(path)
            return member.size, _Closing(data, spool)
        except BaseException:
            spool.close()
            raise


class _Closing(io.RawIOBase):
    """A member's reader that also closes the spooled archive behind it."""

    def __init__(self, inner: IO[bytes], owner: IO[bytes]) -> None:
        self.inner, self.owner = inner, owner

    def read(self, n: int = -1) -> bytes:
        return self.inner.read(n)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.inner.close()
        self.owner.close()
        super().close()


async def _file_chunks(fileobj: _Reader, size: int) -> AsyncIterator[bytes]:
    try:
        left = size
        while left > 0:
            chunk = await anyio.to_thread.run_sync(fileobj.read, min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        fileobj.close()


def flat_tar(files: Mapping[str, bytes]) -> bytes:
    """A tar of plain files (mode 0644) whose entries are bare names, extracted at the target directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            if not name or name in (".", "..") or "/" in name or "\\" in name:
                raise StageFailed(f"unsafe flat file name {name!r}")
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
