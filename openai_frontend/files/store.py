"""Where uploaded files live: the :class:`FileStore` protocol, and one store on two kinds of parts.

:class:`SqlFileStore` keeps records in a SQL database and bytes in :class:`Blobs`:

* the embedded default, :class:`LocalFileStore`, needs no server: SQLite (WAL mode) and blobs on
  local disk, content-addressed by sha256 (``<dir>/blobs/ab/cdef...``, so identical bytes are
  stored once however many ids point at them); a blob lands by temp file + fsync + rename, and a
  crash leaves at worst a stray temp file or an unreferenced blob, both removed when it opens;
* for several replicas, records go to PostgreSQL (``database_url``) and bytes to an S3-compatible
  bucket (``files_backend=s3``, :mod:`openai_frontend.storage.s3`), or either alone.

Every combination keeps the same rules: the user's filename is metadata only and never a path; a
blob goes when its last record goes, decided under the sha's lock (a PostgreSQL advisory lock
across replicas) so a concurrent upload of the same bytes never loses them; TTL is the
``expires_at`` column swept here, not bucket lifecycle rules, so ids expire exactly when the API
says they do.

Every method is blocking; the router calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from openai_frontend.storage.db import Database, SqliteDatabase, Tx, open_database

if TYPE_CHECKING:
    from openai_frontend.settings import Settings

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

    def add(self, staged: Staged, *, filename: str, purpose: str, mime: str, ttl_s: int | None,
            scope: str = "") -> FileRecord:
        """Turn a staged upload into a new file id (dedup by sha256), evicting LRU files past the quota; it
        expires ``ttl_s`` seconds after its ``created_at`` (never when None)."""

    def get(self, file_id: str, scope: str = "", *, touch: bool = False) -> FileRecord | None:
        """The live record of ``file_id`` in ``scope`` (None when unknown, expired or in another scope)."""

    def list(self, *, scope: str = "", purpose: str | None = None, after: str | None = None, limit: int = 10000,
             order: Order = "desc") -> tuple[list[FileRecord], bool]:
        """One page of live records and whether more follow."""

    def delete(self, file_id: str, scope: str = "") -> bool:
        """Forget ``file_id``; its blob goes when no other id uses it."""

    def blob_path(self, record: FileRecord) -> Path:
        """A readable local path of the record's bytes (S3: a local copy, downloaded on first use)."""

    def reader(self, record: FileRecord) -> BlobReader | None:
        """How ``GET /v1/files/{id}/content`` streams a remote blob by range; None: it sends :meth:`blob_path`."""

    def close(self) -> None:
        """Release the database and its connections."""

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
# PostgreSQL: the same table, its own types.
_PG_SCHEMA = (_SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
              .replace("INTEGER", "BIGINT").replace("REAL", "DOUBLE PRECISION"))
_COLUMNS = "id, sha256, bytes, filename, purpose, mime, created_at, expires_at, last_used_at, scope"
# On a shared database, staged uploads and unreferenced blobs are only removed once this old: younger ones
# may be another replica's upload in flight (staged, or landed a moment before its row is inserted).
STALE_S = 3600.0
_QUOTA_LOCK = "files:quota"


def new_file_id() -> str:
    """``file-`` and 128 random bits: unguessable, so an id is as good as a capability."""
    return "file-" + secrets.token_hex(16)


class BlobReader(Protocol):
    """A blob that is not a local file (S3): its size, and its bytes by range."""

    size: int

    def open(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` (inclusive), streamed; FileNotFoundError when the blob is gone."""


class Blobs(Protocol):
    """Where a :class:`SqlFileStore` keeps bytes: :class:`LocalBlobs` or :class:`~openai_frontend.storage.s3.S3Blobs`."""

    name: str

    def staging_dir(self) -> Path: ...

    def prepare(self, sha256: str, path: Path) -> None:
        """Before the metadata transaction: anything slow (an upload)."""

    def land(self, sha256: str, path: Path) -> None:
        """Inside the transaction holding the sha's lock: the blob exists afterwards; ``path`` is consumed."""

    def drop(self, sha256: str) -> None: ...

    def path(self, sha256: str) -> Path:
        """A readable local path (it may not exist when the blob is gone)."""

    def reader(self, sha256: str, size: int) -> BlobReader | None:
        """How ``GET .../content`` streams a remote blob; None: it sends :meth:`path`."""

    def listing(self) -> Iterator[tuple[str, float]]:
        """(sha256, last modified) of every stored blob."""


class LocalBlobs:
    """Blobs on local disk: ``<root>/blobs/ab/cdef...``, landed by rename from ``<root>/tmp``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.name = f"the file store directory {self.root}"
        self._blobs = self.root / "blobs"
        self._tmp = self.root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def staging_dir(self) -> Path:
        return self._tmp

    def prepare(self, sha256: str, path: Path) -> None:
        return None  # a rename: nothing slow to do outside the transaction

    def land(self, sha256: str, path: Path) -> None:
        blob = self.path(sha256)
        if blob.exists():
            path.unlink(missing_ok=True)  # identical bytes already stored: one copy
        else:
            blob.parent.mkdir(exist_ok=True)
            os.replace(path, blob)
            fsync_dir(blob.parent)

    def drop(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        return self._blobs / sha256[:2] / sha256[2:]

    def reader(self, sha256: str, size: int) -> None:
        return None

    def listing(self) -> Iterator[tuple[str, float]]:
        for sub in self._blobs.iterdir():
            for blob in sub.iterdir():
                try:
                    yield sub.name + blob.name, blob.stat().st_mtime
                except FileNotFoundError:
                    continue


class SqlFileStore:
    """Records in SQLite or PostgreSQL, bytes in :class:`Blobs`; see the module docstring.

    On a database of its own (SQLite) the store owns its directory and clears crash leftovers when it
    opens; on a shared one (PostgreSQL, several replicas) it only removes what is older than
    :data:`STALE_S`, so it never takes away another replica's upload in flight.
    """

    def __init__(self, db: Database, blobs: Blobs, *, quota_bytes: int, clock: Any = time.time) -> None:
        self.db = db
        self.blobs = blobs
        self.quota_bytes = quota_bytes
        self._clock = clock
        self._orphans_checked = 0.0
        db.script(_PG_SCHEMA if db.dialect == "postgresql" else _SCHEMA)
        self._clean_staging(older_than=STALE_S if db.shared else None)

    def close(self) -> None:
        self.db.close()

    def staging_dir(self) -> Path:
        return self.blobs.staging_dir()

    # --- writes ----------------------------------------------------------------------------------

    def add(self, staged: Staged, *, filename: str, purpose: str, mime: str, ttl_s: int | None,
            scope: str = "") -> FileRecord:
        if staged.bytes > self.quota_bytes:
            staged.path.unlink(missing_ok=True)
            raise QuotaExceeded(f"the file is {staged.bytes} bytes; the store's quota is {self.quota_bytes}")
        self.blobs.prepare(staged.sha256, staged.path)
        now = self._clock()
        created = int(now)
        record = FileRecord(new_file_id(), staged.sha256, staged.bytes, filename, purpose, mime, created,
                            None if ttl_s is None else created + ttl_s, now, scope)
        with self.db.tx(_blob_lock(staged.sha256)) as tx:
            self.blobs.land(staged.sha256, staged.path)
            tx.run(f"INSERT INTO files ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", _row(record))
        self._evict(keep=record.id)
        return record

    def delete(self, file_id: str, scope: str = "") -> bool:
        row = self._one("SELECT sha256 FROM files WHERE id=? AND scope=?", (file_id, scope))
        if row is None:
            return False
        with self.db.tx(_blob_lock(row[0])) as tx:
            gone = tx.run("DELETE FROM files WHERE id=? AND scope=?", (file_id, scope))
            self._drop_blob_if_unused(tx, row[0])
        return gone > 0

    def sweep(self) -> int:
        now = int(self._clock())
        with self.db.tx() as tx:
            rows = tx.rows("SELECT id, sha256 FROM files WHERE expires_at IS NOT NULL AND expires_at<=?", (now,))
        for file_id, sha in rows:
            with self.db.tx(_blob_lock(sha)) as tx:
                tx.run("DELETE FROM files WHERE id=?", (file_id,))
                self._drop_blob_if_unused(tx, sha)
        if rows:
            logger.info("files: %d expired file(s) removed", len(rows))
        if now - self._orphans_checked >= STALE_S:  # a listing of every blob: hourly is often enough
            self._orphans_checked = now
            self._drop_orphan_blobs(older_than=STALE_S)
        return len(rows)

    # --- reads -----------------------------------------------------------------------------------

    def get(self, file_id: str, scope: str = "", *, touch: bool = False) -> FileRecord | None:
        now = self._clock()
        with self.db.tx() as tx:
            row = tx.one(f"SELECT {_COLUMNS} FROM files WHERE id=? AND scope=?", (file_id, scope))
            if row is None:
                return None
            record = FileRecord(*row)
            if record.expires_at is not None and record.expires_at <= now:
                return None  # expired: gone for clients now, removed by the next sweep
            if touch:
                tx.run("UPDATE files SET last_used_at=? WHERE id=?", (now, file_id))
        return record

    def list(self, *, scope: str = "", purpose: str | None = None, after: str | None = None, limit: int = 10000,
             order: Order = "desc") -> tuple[list[FileRecord], bool]:
        now = int(self._clock())
        where, args = (["purpose=?"], [purpose]) if purpose is not None else ([], [])
        with self.db.tx() as tx:
            rows, more = live_page(tx, "files", _COLUMNS, scope=scope, now=now, after=after, limit=limit, order=order,
                                   where=where, args=args)
        return [FileRecord(*r) for r in rows], more

    def blob_path(self, record: FileRecord) -> Path:
        return self.blobs.path(record.sha256)

    def reader(self, record: FileRecord) -> BlobReader | None:
        return self.blobs.reader(record.sha256, record.bytes)

    def stored_bytes(self) -> int:
        """Bytes stored: each distinct blob once."""
        with self.db.tx() as tx:
            return _stored(tx)

    # --- internals -------------------------------------------------------------------------------

    def _one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self.db.tx() as tx:
            return tx.one(sql, args)

    def _evict(self, keep: str) -> None:
        """Least recently used files go until the distinct blobs fit the quota (never ``keep``). One replica
        evicts at a time (the quota lock), each file with its blob's lock, in that order everywhere."""
        while True:
            with self.db.tx(_QUOTA_LOCK) as tx:
                if _stored(tx) <= self.quota_bytes:
                    return
                row = tx.one("SELECT id, sha256 FROM files WHERE id<>? ORDER BY last_used_at LIMIT 1", (keep,))
            if row is None:
                return
            logger.info("files: quota of %d bytes reached; evicting %s", self.quota_bytes, row[0])
            with self.db.tx(_QUOTA_LOCK, _blob_lock(row[1])) as tx:
                tx.run("DELETE FROM files WHERE id=?", (row[0],))
                self._drop_blob_if_unused(tx, row[1])

    def _drop_blob_if_unused(self, tx: Tx, sha256: str) -> None:
        """Called holding the sha's lock, so no replica is adding a record of it meanwhile."""
        if tx.one("SELECT 1 FROM files WHERE sha256=? LIMIT 1", (sha256,)) is None:
            self.blobs.drop(sha256)

    def _drop_orphan_blobs(self, older_than: float | None) -> None:
        """Blobs no record names (a crash between landing and inserting); young ones may be in flight."""
        cutoff = None if older_than is None else self._clock() - older_than
        for sha, mtime in list(self.blobs.listing()):
            if cutoff is not None and mtime > cutoff:
                continue
            with self.db.tx(_blob_lock(sha)) as tx:
                self._drop_blob_if_unused(tx, sha)

    def _clean_staging(self, older_than: float | None) -> None:
        cutoff = None if older_than is None else self._clock() - older_than
        for stale in self.staging_dir().iterdir():  # uploads cut short by a crash or restart
            try:
                if cutoff is None or stale.stat().st_mtime < cutoff:
                    stale.unlink(missing_ok=True)
            except FileNotFoundError:
                continue


class LocalFileStore(SqlFileStore):
    """The embedded default: SQLite (``<root>/files.sqlite3``) and blobs under one directory, one process."""

    def __init__(self, root: str | Path, *, quota_bytes: int, clock: Any = time.time) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        super().__init__(SqliteDatabase(self.root / "files.sqlite3", timeout_s=5.0), LocalBlobs(self.root),
                         quota_bytes=quota_bytes, clock=clock)
        self._drop_orphan_blobs(older_than=None)  # this process owns the directory: leftovers go now


def _stored(tx: Tx) -> int:
    row = tx.one("SELECT COALESCE(SUM(b), 0) FROM (SELECT MAX(bytes) b FROM files GROUP BY sha256) AS per_blob")
    return int(row[0]) if row else 0


def _blob_lock(sha256: str) -> str:
    return "files:blob:" + sha256


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


def live_page(tx: Tx, table: str, columns: str, *, scope: str, now: int, after: str | None, limit: int,
              order: Order, where: Sequence[str] = (), args: Sequence[Any] = ()) -> tuple[list[tuple[Any, ...]], bool]:
    """One page of ``table``'s rows (``columns``) of ``scope`` that have not expired by ``now`` and meet ``where``
    (its ``?`` filled from ``args``), in ``seq`` order ("desc": newest first), from after the row whose id is
    ``after`` (a cursor; KeyError when there is no such row), and whether more rows follow."""
    conditions = ["scope=?", "(expires_at IS NULL OR expires_at>?)", *where]
    values: list[Any] = [scope, now, *args]
    if after is not None:
        seq = tx.one(f"SELECT seq FROM {table} WHERE id=? AND scope=?", (after, scope))
        if seq is None:
            raise KeyError(after)
        conditions.append("seq<?" if order == "desc" else "seq>?")
        values.append(seq[0])
    rows = tx.rows(f"SELECT {columns} FROM {table} WHERE {' AND '.join(conditions)} "
                   f"ORDER BY seq {'DESC' if order == 'desc' else 'ASC'} LIMIT ?", (*values, limit + 1))
    return rows[:limit], len(rows) > limit


def _row(r: FileRecord) -> tuple[Any, ...]:
    d = asdict(r)
    return tuple(d[c.strip()] for c in _COLUMNS.split(","))


def fsync_dir(path: Path) -> None:
    """Makes a rename or unlink in the directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_file_store(settings: Settings, *, clock: Any = time.time) -> SqlFileStore:
    """The store the settings name: SQLite or PostgreSQL records, blobs in ``files_dir`` or S3."""
    root = Path(settings.files_dir)
    if not settings.database_url and settings.files_backend == "local":
        return LocalFileStore(root, quota_bytes=settings.files_quota_bytes, clock=clock)
    root.mkdir(parents=True, exist_ok=True)
    blobs: Blobs
    if settings.files_backend == "s3":
        from openai_frontend.storage.s3 import S3Blobs

        blobs = S3Blobs(s3_objects(settings), root, cache_bytes=settings.s3_cache_bytes, clock=clock)
    else:
        blobs = LocalBlobs(root)
    return SqlFileStore(open_database(settings.database_url, root / "files.sqlite3"), blobs,
                        quota_bytes=settings.files_quota_bytes, clock=clock)


def s3_objects(settings: Settings) -> Any:
    """The bucket of ``files_backend=s3``, checked once (a missing bucket stops the start, naming s3_bucket)."""
    from openai_frontend.storage.s3 import S3Config, S3Objects

    objects = S3Objects(S3Config(bucket=settings.s3_bucket, prefix=settings.s3_prefix,
                                 endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                                 part_bytes=settings.s3_part_bytes))
    objects.check_bucket()
    return objects
