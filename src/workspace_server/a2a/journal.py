"""The activity journal: where a proxied call's activity row is kept from the moment the call is answered
until the log writer has stored it, so that a crash of this server loses no row (issue 14 §4).

Each process appends its rows, one JSON line each (`encode_entry`: the row's columns, the caller to stamp
under OUTBOUND_KEY; the same bytes the Postgres batch is made of), to a segment file of its own under
`<DATA_DIR>/activity-journal/`, holding an exclusive `flock` on it while it lives. A flush takes the
current segment (`rotate`: new rows go to a fresh one) and removes it once its rows are committed
(`discard`). A write is one `os.write` to the page cache, no fsync: it survives the process being
killed, not the machine losing power (decisions.md). At start-up `recover` hands back the rows of
segments nobody holds any more (a process that died), which the writer inserts idempotently (each row's
id is fixed when it is journaled) and then removes; segments of live processes (other workers on the
same DATA_DIR) are left alone.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
RawColumns = Mapping[str, bytes]  # JSON column -> its value as JSON text (what the proxy has at hand)
OUTBOUND_KEY = "$outbound"  # in an entry: the caller whose last_outbound_at the row stamps (no column's name)
# what orjson refuses goes through this (json.dumps with options builds a new encoder per call)
_encode_line = json.JSONEncoder(default=str, separators=(",", ":")).encode


@dataclass
class Segment:
    path: Path
    fd: int
    rows: int = 0


@dataclass
class Entry:
    row: dict[str, Any]
    outbound: str | None


class ActivityJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._current: Segment | None = None

    @property
    def enabled(self) -> bool:
        return self._current is not None

    def open(self) -> bool:
        """Start the first segment; False (and one warning) when the folder is not writable."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._current = self._new_segment()
        except OSError as e:
            log.warning("activity journal disabled (%s): rows not yet stored are lost if the server dies", e)
            return False
        return True

    def _new_segment(self) -> Segment:
        path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        return Segment(path, fd)

    def append(self, line: bytes) -> None:
        """Append one entry (`encode_entry`, a single line without its newline)."""
        seg = self._current
        if seg is None:
            return
        try:
            os.write(seg.fd, line + b"\n")
        except OSError:
            log.exception("activity journal write failed; journal disabled")
            self.close()
            return
        seg.rows += 1

    def rotate(self) -> Segment | None:
        """The segment holding every row appended so far (None if none); later rows go to a new one."""
        seg = self._current
        if seg is None or seg.rows == 0:
            return None
        try:
            self._current = self._new_segment()
        except OSError:
            log.exception("activity journal rotation failed; journal disabled")
            self._current = None
        return seg

    def discard(self, seg: Segment) -> None:
        """Its rows are stored: remove the segment."""
        try:
            seg.path.unlink(missing_ok=True)
        finally:
            os.close(seg.fd)

    def close(self) -> None:
        """Stop journaling: the current segment stays on disk until it is stored (discard) or recovered."""
        seg, self._current = self._current, None
        if seg is not None:
            if seg.rows == 0:
                seg.path.unlink(missing_ok=True)
            os.close(seg.fd)

    def recover(self) -> list[tuple[Path, int, list[Entry]]]:
        """Segments left by processes that are gone: (path, locked fd, entries). The caller stores the rows,
        then `release`s each; a torn last line (the process died mid-write) is skipped."""
        found: list[tuple[Path, int, list[Entry]]] = []
        if not self.directory.is_dir():
            return found
        own = self._current.path if self._current else None
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path == own:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live process holds it
                os.close(fd)
                continue
            found.append((path, fd, _read(path)))
        return found

    @staticmethod
    def unlock(fd: int) -> None:
        """Let go of a segment whose rows could not be stored, leaving it for the next start."""
        os.close(fd)

    @staticmethod
    def release(path: Path, fd: int) -> None:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def encode_entry(row: dict[str, Any], outbound: str | None, raw: RawColumns | None = None) -> bytes:
    """A row as one line of JSON: the row's columns, with `raw` (columns given as JSON text: valid JSON, the
    compact encodings and agent replies as read) spliced in as their values unless the text has a newline
    (JSON allows one only as whitespace), and the caller to stamp under OUTBOUND_KEY.

    The same bytes are the journal's line and the row in the Postgres batch document (`logstore.py`:
    `jsonb_to_recordset` reads the columns by name and ignores OUTBOUND_KEY), so a row is encoded once.
    orjson, with the raw columns swapped in as fragments for the encoding (the row is left as it was); the
    stdlib for what orjson refuses (a lone surrogate, an integer past 64 bits)."""
    spliced = [(k, v) for k, v in raw.items() if b"\n" not in v and row.get(k) is not None] if raw else []
    values = [(k, row[k]) for k, _ in spliced]
    for k, v in spliced:
        row[k] = orjson.Fragment(v)
    if outbound:
        row[OUTBOUND_KEY] = outbound
    try:
        return orjson.dumps(row)
    except orjson.JSONEncodeError:
        return _encode_slowly(row, dict(spliced))
    finally:
        row.update(values)
        row.pop(OUTBOUND_KEY, None)


def _encode_slowly(row: dict[str, Any], spliced: dict[str, bytes]) -> bytes:
    """What orjson refuses, through the stdlib; the raw columns spliced in by hand."""
    entry = {k: v for k, v in row.items() if k not in spliced}
    line = _encode_line(entry).encode()
    if spliced:
        fields = b",".join(b'"%s":%s' % (k.encode(), v) for k, v in spliced.items())
        line = line[:-1] + (b"," if entry else b"") + fields + b"}"
    return line


def _read(path: Path) -> list[Entry]:
    entries: list[Entry] = []
    with path.open("rb") as f:
        for raw in f:
            try:
                entries.append(_entry(json.loads(raw)))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("activity journal %s: skipped an unreadable line", path.name)
    return entries


def _entry(item: dict[str, Any]) -> Entry:
    if "row" in item and OUTBOUND_KEY not in item and "id" not in item:
        # the first format (a journal left by an older version): {"row", "outbound", "raw"}
        return Entry(dict(item["row"]) | dict(item.get("raw") or {}), item.get("outbound"))
    outbound = item.pop(OUTBOUND_KEY, None)
    return Entry(item, outbound)
