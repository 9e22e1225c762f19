"""Where uploaded files live: the :class:`FileStore` protocol and its embedded default.

:class:`LocalFileStore` needs no server: blobs on local disk, content-addressed by
sha256 (``<dir>/blobs/ab/cdef...``, so identical bytes are stored once however
many ids point at them) and metadata in SQLite (WAL mode) beside them, so files
survive restarts. A blob lands by temp file + fsync + rename; a crash leaves at
worst a stray temp file or an unreferenced blob, and both are removed when the
store opens. The user's filename is metadata only and is never used as a path.

An S3-compatible store implements the same protocol: ``put_blob`` becomes a
multipart upload keyed by sha256 (``HeadObject`` first to skip duplicates),
``blob_path`` gives way to ``open_blob`` streaming a ``GetObject`` (with Range),
and the metadata table moves to any SQL database (or stays in SQLite on one
node). TTL maps to the same ``expires_at`` column swept here, not to bucket
lifecycle rules, so ids expire exactly when the API says they do.

Every method is blocking; the router calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

logger = logging.getLogger(__name__)

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class FileRecord:
    """One uploaded file: OpenAI's file object plus what the store needs (sha256, mime, scope)."""

    id: str
    sha256: str
    bytes: int
    filename: str
    purpose: str
    mime: str
    created_at: int
    expires_at: int | None
    last_used_at: float
    scope: str = ""

    def openai(self) -> dict[str, Any]:
        """OpenAI's file object."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}


@dataclass(frozen=True)
class Staged:
    """Bytes written to the store's temp area, hashed while written, not yet a blob."""

    path: Path
    sha256: str
    bytes: int


class QuotaExceeded(Exception):
    """One file is larger than the whole quota."""


class FileStore(Protocol):
    """What the Files API and media resolution need from storage."""

    def staging_dir(self) -> Path:
        """Where uploads are streamed before :meth:`add` (same filesystem as the blobs)."""

    def add(self, staged: Staged, *, filename: str, purpose: str, mime: str, expires_at: int | None,
            scope: str = "") -> FileRecord:
        """Turn a staged upload into a new file id (dedup by sha256), evicting LRU files past the quota."""

    def get(self, file_id: str, scope: str = "", *, touch: bool = False) -> FileRecord | None:
        """The live record of ``file_id`` in ``scope`` (None when unknown, expired or in another scope)."""

    def list(self, *, scope: str = "", purpose: str | None = None, after: str | None = None, limit: int = 10000,
             order: Order = "desc") -> tuple[list[FileRecord], bool]:
        """One page of live records and whether more follow."""

    def delete(self, file_id: str, scope: str = "") -> bool:
        """Forget ``file_id``; its blob goes when no other id uses it."""

    def blob_path(self, record: FileRecord) -> Path:
        """A readable local path of the record's bytes."""

    def sweep(self) -> int:
        """Remove expired files and unreferenced blobs; returns how many files went."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    mime TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at REAL NOT NULL,
    scope TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS files_sha ON files (sha256);
CREATE INDEX IF NOT EXISTS files_used ON files (last_used_at);
CREATE INDEX IF NOT EXISTS files_expiry ON files (expires_at);
"""
_COLUMNS = "id, sha256, bytes, filename, purpose, mime, created_at, expires_at, last_used_at, scope"


def new_file_id() -> str:
    """``file-`` and 128 random bits: unguessable, so an id is as good as a capability."""
    return "file-" + secrets.token_hex(16)


class LocalFileStore:
    """Blobs on disk + metadata in SQLite under one directory; see the module docstring."""

    def __init__(self, root: str | Path, *, quota_bytes: int, clock: Any = time.time) -> None:
        self.root = Path(root)
        self.quota_bytes = quota_bytes
        self._clock = clock
        self._blobs = self.root / "blobs"
        self._tmp = self.root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "files.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for stale in self._tmp.iterdir():  # uploads cut short by a crash or restart
            stale.unlink(missing_ok=True)
        self._drop_orphan_blobs()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def staging_dir(self) -> Path:
        return self._tmp

    # --- writes ----------------------------------------------------------------------------------

    def add(self, staged: Staged, *, filename: str, purpose: str, mime: str, expires_at: int | None,
            scope: str = "") -> FileRecord:
        if staged.bytes > self.quota_bytes:
            staged.path.unlink(missing_ok=True)
            raise QuotaExceeded(f"the file is {staged.bytes} bytes; the store's quota is {self.quota_bytes}")
        now = self._clock()
        record = FileRecord(new_file_id(), staged.sha256, staged.bytes, filename, purpose, mime, int(now),
                            expires_at, now, scope)
        with self._lock:
            blob = self._blob(staged.sha256)
            if blob.exists():
                staged.path.unlink(missing_ok=True)  # identical bytes already stored: one copy
            else:
                blob.parent.mkdir(exist_ok=True)
                os.replace(staged.path, blob)
                _fsync_dir(blob.parent)
            self._db.execute(f"INSERT INTO files ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", _row(record))
            self._evict_locked(keep=record.id)
        return record

    def delete(self, file_id: str, scope: str = "") -> bool:
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM files WHERE id=? AND scope=?", (file_id, scope)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM files WHERE id=?", (file_id,))
            self._drop_blob_if_unused(row[0])
        return True

    def sweep(self) -> int:
        now = int(self._clock())
        with self._lock:
            rows = self._db.execute("SELECT id, sha256 FROM files WHERE expires_at IS NOT NULL AND expires_at<=?",
                                    (now,)).fetchall()
            for file_id, sha in rows:
                self._db.execute("DELETE FROM files WHERE id=?", (file_id,))
                self._drop_blob_if_unused(sha)
        if rows:
            logger.info("files: %d expired file(s) removed", len(rows))
        return len(rows)

    # --- reads -----------------------------------------------------------------------------------

    def get(self, file_id: str, scope: str = "", *, touch: bool = False) -> FileRecord | None:
        now = self._clock()
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM files WHERE id=? AND scope=?", (file_id, scope)).fetchone()
            if row is None:
                return None
            record = FileRecord(*row)
            if record.expires_at is not None and record.expires_at <= now:
                return None  # expired: gone for clients now, removed by the next sweep
            if touch:
                self._db.execute("UPDATE files SET last_used_at=? WHERE id=?", (now, file_id))
        return record

    def list(self, *, scope: str = "", purpose: str | None = None, after: str | None = None, limit: int = 10000,
             order: Order = "desc") -> tuple[list[FileRecord], bool]:
        now = int(self._clock())
        where = ["scope=?", "(expires_at IS NULL OR expires_at>?)"]
        args: list[Any] = [scope, now]
        if purpose is not None:
            where.append("purpose=?")
            args.append(purpose)
        with self._lock:
            if after is not None:
                seq = self._db.execute("SELECT seq FROM files WHERE id=? AND scope=?", (after, scope)).fetchone()
                if seq is None:
                    raise KeyError(after)
                where.append("seq<?" if order == "desc" else "seq>?")
                args.append(seq[0])
            sql = (f"SELECT {_COLUMNS} FROM files WHERE {' AND '.join(where)} "
                   f"ORDER BY seq {'DESC' if order == 'desc' else 'ASC'} LIMIT ?")
            rows = self._db.execute(sql, (*args, limit + 1)).fetchall()
        return [FileRecord(*r) for r in rows[:limit]], len(rows) > limit

    def blob_path(self, record: FileRecord) -> Path:
        return self._blob(record.sha256)

    def stored_bytes(self) -> int:
        """Bytes on disk: each distinct blob once."""
        with self._lock:
            return self._stored_locked()

    # --- internals -------------------------------------------------------------------------------

    def _blob(self, sha256: str) -> Path:
        return self._blobs / sha256[:2] / sha256[2:]

    def _stored_locked(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(b), 0) FROM (SELECT MAX(bytes) b FROM files GROUP BY sha256)")
        return int(row.fetchone()[0])

    def _evict_locked(self, keep: str) -> None:
        """Least recently used files go until the distinct blobs fit the quota (never ``keep``)."""
        while self._stored_locked() > self.quota_bytes:
            row = self._db.execute("SELECT id, sha256 FROM files WHERE id<>? ORDER BY last_used_at LIMIT 1",
                                   (keep,)).fetchone()
            if row is None:
                return
            logger.info("files: quota of %d bytes reached; evicting %s", self.quota_bytes, row[0])
            self._db.execute("DELETE FROM files WHERE id=?", (row[0],))
            self._drop_blob_if_unused(row[1])

    def _drop_blob_if_unused(self, sha256: str) -> None:
        if self._db.execute("SELECT 1 FROM files WHERE sha256=? LIMIT 1", (sha256,)).fetchone() is None:
            self._blob(sha256).unlink(missing_ok=True)

    def _drop_orphan_blobs(self) -> None:
        known = {r[0] for r in self._db.execute("SELECT DISTINCT sha256 FROM files")}
        for sub in self._blobs.iterdir():
            for blob in sub.iterdir():
                if sub.name + blob.name not in known:
                    blob.unlink(missing_ok=True)


def _start_writeback() -> Any:
    """Linux's ``sync_file_range(fd, off, n, SYNC_FILE_RANGE_WRITE)``: start writing a range to disk without
    waiting, so the final fsync of a large upload has little left to do. None where libc lacks it."""
    import ctypes
    import ctypes.util

    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return lambda fd, offset, size: fn(fd, offset, size, 2)


_WRITEBACK = _start_writeback()
_WRITEBACK_EVERY = 32 * 1024 * 1024


class Stager:
    """Streams one upload into the store's temp area: hashed and size-capped as it goes, fsynced at the end
    (with writeback started every 32 MiB along the way, so that fsync is short)."""

    def __init__(self, directory: Path, cap: int) -> None:
        self.cap = cap
        self.path = directory / f"upload-{secrets.token_hex(8)}.part"
        self._file = open(self.path, "xb")  # noqa: SIM115 - closed in finish/abort
        self._hash = hashlib.sha256()
        self.bytes = 0
        self._written_back = 0
        self.head = b""  # the first bytes, for the magic-number check

    def write(self, data: bytes | bytearray) -> bool:
        """Append ``data``; False (and nothing written) once the cap would be passed."""
        if self.bytes + len(data) > self.cap:
            return False
        if len(self.head) < 64:
            self.head += data[: 64 - len(self.head)]
        self._file.write(data)
        self._hash.update(data)
        self.bytes += len(data)
        if _WRITEBACK is not None and self.bytes - self._written_back >= _WRITEBACK_EVERY:
            self._file.flush()
            _WRITEBACK(self._file.fileno(), self._written_back, self.bytes - self._written_back)
            self._written_back = self.bytes
        return True

    def finish(self) -> Staged:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return Staged(self.path, self._hash.hexdigest(), self.bytes)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


def _row(r: FileRecord) -> tuple[Any, ...]:
    d = asdict(r)
    return tuple(d[c.strip()] for c in _COLUMNS.split(","))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
