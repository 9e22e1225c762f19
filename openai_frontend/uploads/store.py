"""Uploads and their parts: records in the file store's database, bytes in a :class:`PartStore`.

OpenAI's rules, kept here (https://platform.openai.com/docs/api-reference/uploads):

* an Upload declares its ``bytes`` up front and lives one hour (``expires_at``); a pending one past that
  is ``expired`` at once for clients and its parts go with the next :meth:`UploadStore.sweep`;
* parts are at most 64 MB each and together never more than the declared ``bytes``; any number of them,
  sent in any order, in parallel, to any replica;
* completing names the parts in order; they must add up to exactly ``bytes`` (parts left out are dropped).
  The bytes are concatenated into the file store's staging directory while hashed (sha256 for the blob's
  name, md5 for the client's check), probed as ``POST /v1/files`` probes uploads, and handed to the file
  store's normal :meth:`~openai_frontend.files.store.SqlFileStore.add`; the result is an ordinary file id;
* only a pending Upload takes parts, completes or cancels; anything else is a 400 naming its status.

State changes happen in short transactions under the Upload's lock (a PostgreSQL advisory lock across
replicas): a part's bytes are stored before its row is inserted and removed if the insert is refused (the
Upload was cancelled or filled meanwhile), and completion first moves the Upload to ``completing``, so no part
is added to, and no second completion or cancel runs on, an Upload whose bytes are being assembled. If the
assembly fails (bad md5, not media, a full disk) it goes back to ``pending`` with its parts kept.

Every method is blocking; the router calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.files.store import FileRecord, SqlFileStore, Staged, Stager
from openai_frontend.files.upload import check_content
from openai_frontend.storage.db import Database, StoreUnavailable, Tx
from openai_frontend.uploads.parts import LocalParts, PartStore, part_store_for

logger = logging.getLogger(__name__)

#: OpenAI's limits: an Upload is at most 8 GB, each part at most 64 MB, and it expires an hour after creation.
MAX_UPLOAD_BYTES = 8 * 1024**3
MAX_PART_BYTES = 64 * 1024**2
UPLOAD_TTL_S = 3600
#: Finished Uploads (completed, cancelled, expired) are remembered this long past their expiry, so a late
#: retry of complete or cancel gets a 400 naming the status rather than a 404.
KEEP_FINISHED_S = 24 * 3600
#: On a shared database, parts whose Upload is unknown are removed only once this old (a part being stored
#: by another replica has no row yet), and a ``completing`` Upload past its expiry by this much is taken
#: for one whose replica died mid-assembly.
STALE_S = 3600.0

PENDING, COMPLETING, COMPLETED, CANCELLED, EXPIRED = "pending", "completing", "completed", "cancelled", "expired"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    mime TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    file_ttl_s INTEGER,
    status TEXT NOT NULL,
    received INTEGER NOT NULL,
    file_id TEXT
);
CREATE INDEX IF NOT EXISTS uploads_expiry ON uploads (expires_at);
CREATE TABLE IF NOT EXISTS upload_parts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    upload_id TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS upload_parts_upload ON upload_parts (upload_id);
"""
_PG_SCHEMA = _SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY").replace("INTEGER", "BIGINT")
_COLUMNS = "id, scope, filename, purpose, mime, bytes, created_at, expires_at, file_ttl_s, status, received, file_id"


@dataclass(frozen=True)
class UploadRecord:
    """One Upload as stored; :meth:`openai` is OpenAI's Upload object."""

    id: str
    scope: str
    filename: str
    purpose: str
    mime: str
    bytes: int
    created_at: int
    expires_at: int
    file_ttl_s: int | None
    status: str
    received: int
    file_id: str | None

    def status_at(self, now: float) -> str:
        """What a client sees: a pending Upload past its expiry is expired (the sweep removes its parts later)."""
        if self.status in (PENDING, COMPLETING) and now >= self.expires_at:
            return EXPIRED
        return self.status

    def openai(self, now: float, file: FileRecord | None = None) -> dict[str, Any]:
        status = self.status_at(now)
        return {"id": self.id, "object": "upload", "bytes": self.bytes, "created_at": self.created_at,
                "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
                "status": PENDING if status == COMPLETING else status,
                "file": file.openai() if file is not None else None}


@dataclass(frozen=True)
class PartRecord:
    """One part; :meth:`openai` is OpenAI's UploadPart object."""

    id: str
    upload_id: str
    bytes: int
    created_at: int

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "object": "upload.part", "created_at": self.created_at, "upload_id": self.upload_id}


def new_upload_id() -> str:
    """``upload_`` and 128 random bits (as unguessable as a file id)."""
    return "upload_" + secrets.token_hex(16)


def new_part_id() -> str:
    return "part_" + secrets.token_hex(16)


def upload_not_found(upload_id: str) -> OpenAIError:
    return OpenAIError(404, f"upload_id: no such Upload: {upload_id[:80]!r}", param="upload_id", code="not_found")


def not_pending(record: UploadRecord, status: str, doing: str) -> OpenAIError:
    """A 400 for an Upload that is not pending: its status says why."""
    why = {COMPLETING: "it is being completed right now", COMPLETED: "it is completed already",
           CANCELLED: "it was cancelled", EXPIRED: f"it expired at {record.expires_at} (an hour after creation)"}
    return bad_request(f"upload_id: {record.id} cannot {doing}: {why.get(status, status)}; only a pending Upload "
                       "can", "upload_id", code=f"upload_{status}")


def over_declared(record: UploadRecord, received: int) -> OpenAIError:
    left = record.bytes - received
    return bad_request(f"data: the part is more than the {left} bytes left of the Upload's declared bytes "
                       f"({record.bytes}; {received} received in parts so far)", "data", code="upload_too_large")


class UploadStore:
    """The Uploads of one file store: see the module docstring."""

    def __init__(self, files: SqlFileStore, parts: PartStore | None = None, *, clock: Any = None) -> None:
        self.files = files
        self.db: Database = files.db
        self.parts = parts or part_store_for(files.blobs)
        self.clock = clock or getattr(files, "_clock", time.time)
        self._orphans_checked = 0.0
        self.db.script(_PG_SCHEMA if self.db.dialect == "postgresql" else _SCHEMA)  # type: ignore[attr-defined]
        if not self.db.shared:  # one process owns the database: what a crash left is known now
            self._recover()

    # --- the API's operations ----------------------------------------------------------------------

    def create(self, *, scope: str, filename: str, purpose: str, mime: str, size: int,
               file_ttl_s: int | None) -> UploadRecord:
        created = int(self.clock())
        record = UploadRecord(new_upload_id(), scope, filename, purpose, mime, size, created,
                              created + UPLOAD_TTL_S, file_ttl_s, PENDING, 0, None)
        with self.db.tx() as tx:
            tx.run(f"INSERT INTO uploads ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", _row(record))
        return record

    def get(self, upload_id: str, scope: str) -> UploadRecord | None:
        with self.db.tx() as tx:
            return _get(tx, upload_id, scope)

    def open_for_parts(self, upload_id: str, scope: str) -> UploadRecord:
        """The Upload a part is for, checked before its bytes are read: it exists here and is pending."""
        record = self.get(upload_id, scope)
        if record is None:
            raise upload_not_found(upload_id)
        self._check_pending(record, "take parts")
        if record.received >= record.bytes:
            raise bad_request(f"data: {record.id} has all of its declared bytes ({record.bytes}) in parts already; "
                              "complete it", "data", code="upload_too_large")
        return record

    def add_part(self, upload_id: str, scope: str, staged: Staged) -> PartRecord:
        """Keep a staged part (``staged.path`` is consumed), if the Upload is still pending and has room for it."""
        part = PartRecord(new_part_id(), upload_id, staged.bytes, int(self.clock()))
        self.parts.put(upload_id, part.id, staged.path)  # outside the lock: a 64 MB PUT to the bucket, maybe
        try:
            with self.db.tx(_lock(upload_id)) as tx:
                record = _get(tx, upload_id, scope)
                if record is None:
                    raise upload_not_found(upload_id)
                self._check_pending(record, "take parts")
                if record.received + part.bytes > record.bytes:
                    raise over_declared(record, record.received)
                tx.run("INSERT INTO upload_parts (id, upload_id, bytes, created_at) VALUES (?,?,?,?)",
                       (part.id, upload_id, part.bytes, part.created_at))
                tx.run("UPDATE uploads SET received=received+? WHERE id=?", (part.bytes, upload_id))
        except BaseException:
            self.parts.drop_part(upload_id, part.id)
            raise
        return part

    def complete(self, upload_id: str, scope: str, part_ids: Sequence[str],
                 md5: str | None) -> tuple[UploadRecord, FileRecord]:
        """Assemble the parts in the order given into a new file of the file store; see the module docstring."""
        seen: dict[str, int] = {}
        for i, part_id in enumerate(part_ids):
            if part_id in seen:
                raise bad_request(f"part_ids[{i}]: {part_id[:80]!r} is given twice (also part_ids[{seen[part_id]}])",
                                  "part_ids", code="duplicate_part")
            seen[part_id] = i
        with self.db.tx(_lock(upload_id)) as tx:
            record = _get(tx, upload_id, scope)
            if record is None:
                raise upload_not_found(upload_id)
            self._check_pending(record, "be completed")
            sizes = dict(tx.rows("SELECT id, bytes FROM upload_parts WHERE upload_id=?", (upload_id,)))
            for i, part_id in enumerate(part_ids):
                if part_id not in sizes:
                    raise bad_request(f"part_ids[{i}]: {part_id[:80]!r} is not a part of {upload_id}", "part_ids",
                                      code="invalid_part")
            total = sum(sizes[p] for p in part_ids)
            if total != record.bytes:
                raise bad_request(f"bytes: the parts given in part_ids add up to {total} bytes; the Upload was "
                                  f"created with bytes={record.bytes}", "bytes", code="upload_size_mismatch")
            tx.run("UPDATE uploads SET status=? WHERE id=?", (COMPLETING, upload_id))
        parts = [(p, int(sizes[p])) for p in part_ids]
        try:
            file = self._assemble(record, parts, md5)
        except BaseException:
            with self.db.tx(_lock(upload_id)) as tx:  # the client may fix what was wrong and complete again
                tx.run("UPDATE uploads SET status=? WHERE id=? AND status=?", (PENDING, upload_id, COMPLETING))
            raise
        with self.db.tx(_lock(upload_id)) as tx:
            tx.run("UPDATE uploads SET status=?, file_id=? WHERE id=?", (COMPLETED, file.id, upload_id))
            tx.run("DELETE FROM upload_parts WHERE upload_id=?", (upload_id,))
        self._drop_parts(upload_id)
        return replace(record, status=COMPLETED, file_id=file.id), file

    def cancel(self, upload_id: str, scope: str) -> UploadRecord:
        with self.db.tx(_lock(upload_id)) as tx:
            record = _get(tx, upload_id, scope)
            if record is None:
                raise upload_not_found(upload_id)
            self._check_pending(record, "be cancelled")
            tx.run("UPDATE uploads SET status=? WHERE id=?", (CANCELLED, upload_id))
            tx.run("DELETE FROM upload_parts WHERE upload_id=?", (upload_id,))
        self._drop_parts(upload_id)
        return replace(record, status=CANCELLED)

    # --- housekeeping --------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Expire pending Uploads past their hour (their parts go), forget long-finished ones, and remove parts
        no live Upload owns (hourly); returns how many Uploads expired."""
        now = self.clock()
        with self.db.tx() as tx:
            rows = tx.rows("SELECT id FROM uploads WHERE (status=? AND expires_at<=?) OR (status=? AND expires_at<=?)",
                           (PENDING, int(now), COMPLETING, int(now - STALE_S)))
        for (upload_id,) in rows:
            with self.db.tx(_lock(upload_id)) as tx:
                tx.run("UPDATE uploads SET status=? WHERE id=? AND status IN (?,?)",
                       (EXPIRED, upload_id, PENDING, COMPLETING))
                tx.run("DELETE FROM upload_parts WHERE upload_id=?", (upload_id,))
            self._drop_parts(upload_id)
        if rows:
            logger.info("uploads: %d expired upload(s) and their parts removed", len(rows))
        with self.db.tx() as tx:
            tx.run("DELETE FROM uploads WHERE status IN (?,?,?) AND expires_at<=?",
                   (COMPLETED, CANCELLED, EXPIRED, int(now - KEEP_FINISHED_S)))
        if now - self._orphans_checked >= STALE_S:  # a listing of every part: hourly is often enough
            self._orphans_checked = now
            self._drop_orphans(older_than=STALE_S)
        return len(rows)

    def _recover(self) -> None:
        """One process on its own database: an assembly a crash cut short is pending again (its parts are kept),
        and stray parts in its own directory go now (in a bucket, which others may share, once stale)."""
        with self.db.tx() as tx:
            tx.run("UPDATE uploads SET status=? WHERE status=?", (PENDING, COMPLETING))
        self._drop_orphans(older_than=None if isinstance(self.parts, LocalParts) else STALE_S)

    def _drop_orphans(self, older_than: float | None) -> None:
        cutoff = None if older_than is None else self.clock() - older_than
        with self.db.tx() as tx:
            live = {r[0] for r in tx.rows("SELECT id FROM uploads WHERE status IN (?,?)", (PENDING, COMPLETING))}
        for upload_id, modified in list(self.parts.listing()):
            if upload_id not in live and (cutoff is None or modified < cutoff):
                self._drop_parts(upload_id)

    # --- internals -----------------------------------------------------------------------------------

    def _check_pending(self, record: UploadRecord, doing: str) -> None:
        status = record.status_at(self.clock())
        if status != PENDING:
            raise not_pending(record, status, doing)

    def _assemble(self, record: UploadRecord, parts: list[tuple[str, int]], md5: str | None) -> FileRecord:
        """The parts, in order, into the staging directory (hashed), checked, then added to the file store."""
        stager = Stager(self.files.staging_dir(), record.bytes)
        digest = hashlib.md5(usedforsecurity=False)
        try:
            for i, (part_id, size) in enumerate(parts):
                got = self._copy_part(record.id, part_id, size, stager, digest)
                if got < 0:
                    raise bad_request(f"part_ids[{i}]: the bytes of {part_id} are gone from {self.parts.name}; "
                                      "cancel this Upload and upload the file again", "part_ids",
                                      code="part_missing")
                if got != size:
                    raise StoreUnavailable(self.parts.name, f"part {part_id} of {record.id} holds more or fewer "
                                           f"bytes than the {size} it was sent with")
            staged = stager.finish()
        except BaseException:
            stager.abort()
            raise
        try:
            if md5 is not None and md5.lower() != digest.hexdigest():
                raise bad_request(f"md5: the parts' bytes have md5 {digest.hexdigest()}, not {md5[:40]!r}", "md5",
                                  code="md5_mismatch")
            mime = check_content(staged, stager.head, record.mime)
            self.parts.compose(record.id, parts, staged.sha256)  # S3: the blob made in the bucket, when it can be
            return self.files.add(staged, filename=record.filename, purpose=record.purpose, mime=mime,
                                  ttl_s=record.file_ttl_s, scope=record.scope)
        finally:
            staged.path.unlink(missing_ok=True)  # a no-op once the store has taken it

    def _copy_part(self, upload_id: str, part_id: str, size: int, stager: Stager, digest: Any) -> int:
        """Append one part to ``stager`` (at most ``size`` bytes); the bytes it holds (-1: none, it is gone)."""
        try:
            chunks = self.parts.read(upload_id, part_id)
        except FileNotFoundError:
            return -1
        got = 0
        try:
            for chunk in chunks:
                got += len(chunk)
                if got > size:
                    break
                stager.write(chunk)
                digest.update(chunk)
        except FileNotFoundError:
            return -1
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return got

    def _drop_parts(self, upload_id: str) -> None:
        try:
            self.parts.drop(upload_id)
        except Exception:  # the row is gone already: the next orphan sweep takes what is left
            logger.warning("uploads: removing the parts of %s failed", upload_id, exc_info=True)


def open_uploads(files: Any) -> UploadStore | None:
    """The Uploads of ``files``, in its database beside its blobs; None for a store without one (a test's)."""
    if not isinstance(files, SqlFileStore):
        return None
    return UploadStore(files)


def _get(tx: Tx, upload_id: str, scope: str) -> UploadRecord | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM uploads WHERE id=? AND scope=?", (upload_id, scope))
    return UploadRecord(*row) if row is not None else None


def _row(r: UploadRecord) -> tuple[Any, ...]:
    return tuple(getattr(r, c.strip()) for c in _COLUMNS.split(","))


def _lock(upload_id: str) -> str:
    return "uploads:" + upload_id
