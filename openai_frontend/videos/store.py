"""Video jobs that outlive the shim: records in the Files API's database, outputs beside its blobs.

Embedded (the default): the table ``video_jobs`` lives in ``<VLT_FILES_DIR>/files.sqlite3``
(its own connection, WAL mode, like :class:`~openai_frontend.files.store.LocalFileStore`); each
finished mp4 is ``<VLT_FILES_DIR>/videos/<job id>.mp4``, landed by temp file + fsync + rename, and its
stills (``<job id>.thumbnail.webp``, ``<job id>.spritesheet.jpg``) go beside it once asked for. One
shim process owns the directory: after a restart, completed jobs stay downloadable and jobs that
were queued or running are marked failed with the reason (:meth:`JobStore.recover`).

Shared (``database_url``): the same table in PostgreSQL, plus what replicas need to share it
(:class:`SharedJobStore`): the replica running a job (``owner``) and until when its claim holds
(``lease_until``), renewed by heartbeats; a starting replica touches only expired leases. With
``files_backend=s3`` the mp4s (and stills) are objects ``<prefix>videos/<job id>.mp4``, readable from any
replica.

Finished jobs expire ``ttl`` seconds after they end: they 404 at once and the next sweep removes
record and output. Every method blocks; callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from openai_frontend.files.store import Order, live_page
from openai_frontend.storage.db import Database, PostgresDatabase, SqliteDatabase, Tx
from openai_frontend.videos.stills import STILLS, Variant

logger = logging.getLogger(__name__)

Status = Literal["queued", "in_progress", "completed", "failed"]

DB_FILE = "files.sqlite3"  # the Files API's database: one store, one file
_SCHEMA = """
CREATE TABLE IF NOT EXISTS video_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    size TEXT NOT NULL,
    seconds TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    expires_at INTEGER,
    error TEXT,
    bytes INTEGER,
    info TEXT
);
CREATE INDEX IF NOT EXISTS video_jobs_status ON video_jobs (status);
CREATE INDEX IF NOT EXISTS video_jobs_expiry ON video_jobs (expires_at);
"""
# PostgreSQL: the same table with its own types, the lease columns, and the sync requests' slots
# (POST /v1/videos/sync has no job, but takes a place in the global queue and concurrency like one).
_PG_SCHEMA = (_SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
              .replace("INTEGER", "BIGINT") + """
ALTER TABLE video_jobs ADD COLUMN IF NOT EXISTS owner TEXT;
ALTER TABLE video_jobs ADD COLUMN IF NOT EXISTS lease_until DOUBLE PRECISION;
ALTER TABLE video_jobs ADD COLUMN IF NOT EXISTS attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE video_jobs ADD COLUMN IF NOT EXISTS reference BYTEA;
CREATE TABLE IF NOT EXISTS video_sync (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    owner TEXT NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL
);
""")
_COLUMNS = ("id", "scope", "status", "progress", "model", "prompt", "size", "seconds", "params", "created_at",
            "completed_at", "expires_at", "error", "bytes", "info")
_JSON = ("params", "error", "info")


#: The key of ``params`` naming the video a remix was made from.
REMIXED_FROM = "remixed_from_video_id"


def new_job_id() -> str:
    """``video_`` and 128 random bits (OpenAI's ids look like ``video_68d7...``)."""
    return "video_" + secrets.token_hex(16)


@dataclass(frozen=True)
class JobRecord:
    """One video job: OpenAI's video object plus what the server keeps (parameters, scope, facts)."""

    id: str
    status: Status
    model: str
    prompt: str
    size: str
    seconds: str
    params: dict[str, Any]
    created_at: int
    scope: str = ""
    progress: int = 0
    completed_at: int | None = None
    expires_at: int | None = None
    error: dict[str, Any] | None = None
    bytes: int | None = None
    info: dict[str, Any] | None = None

    def openai(self, progress: int | None = None) -> dict[str, Any]:
        """OpenAI's video object (``progress`` overrides the stored value for a running job), with
        vLLM-Omni's extras: the frame count, fps and seed the video was made with; and ours: ``duration_s``,
        the clip's length (``num_frames / fps``; ``seconds`` is what was asked)."""
        p = self.params
        frames, fps = p.get("num_frames"), p.get("fps")
        return {
            "id": self.id, "object": "video", "status": self.status,
            "progress": self.progress if progress is None else progress,
            "created_at": self.created_at, "completed_at": self.completed_at, "expires_at": self.expires_at,
            "model": self.model, "prompt": self.prompt, "size": self.size, "seconds": self.seconds,
            "error": self.error, "remixed_from_video_id": p.get(REMIXED_FROM),
            "num_frames": frames, "fps": fps, "seed": p.get("seed"),
            "duration_s": round(frames / fps, 4) if frames and fps else None,
            "inference_time_s": (self.info or {}).get("inference_s"),
        }


class JobStore:
    """Job records in SQLite (or any :class:`Database`) and mp4 outputs on disk under one directory (the Files
    API's), or in S3 when ``objects`` is given."""

    def __init__(self, root: str | Path, *, clock: Any = time.time, db: Database | None = None,
                 objects: Any = None) -> None:
        self.root = Path(root)
        self.outputs = self.root / "videos"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self.db = db or SqliteDatabase(self.root / DB_FILE)
        self.objects = objects  # S3Objects of files_backend=s3, else None (outputs on local disk)
        self.db.script(_PG_SCHEMA if self.db.dialect == "postgresql" else _SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- writes ----------------------------------------------------------------------------------

    def add(self, record: JobRecord) -> None:
        row = _row(record)
        with self.db.tx() as tx:
            tx.run(f"INSERT INTO video_jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(row))})", row)

    def mark(self, job_id: str, status: Status, *, progress: int | None = None, error: dict[str, Any] | None = None,
             ttl_s: int = 0, owner: str | None = None) -> bool:
        """Move a job to ``status``; a failed one records ``error`` and starts its expiry clock. With ``owner``:
        only while that replica still holds the job. Whether the job was there to move."""
        now = int(self._clock())
        sets, args = ["status=?"], [status]
        if progress is not None:
            sets.append("progress=?")
            args.append(progress)
        if status == "failed":
            sets += ["error=?", "completed_at=?", "expires_at=?"]
            args += [json.dumps(error), now, now + ttl_s if ttl_s else None]
        where, wargs = _owned(job_id, owner)
        with self.db.tx() as tx:
            return tx.run(f"UPDATE video_jobs SET {', '.join(sets)} WHERE {where}", (*args, *wargs)) > 0

    def complete(self, job_id: str, video: bytes, info: dict[str, Any], ttl_s: int = 0,
                 owner: str | None = None) -> bool:
        """Land the mp4 and mark the job completed; False (and no output left) when the job was deleted meanwhile
        (or, with ``owner``, taken over by another replica)."""
        now = int(self._clock())
        where, wargs = _owned(job_id, owner)
        update = ("UPDATE video_jobs SET status='completed', progress=100, completed_at=?, expires_at=?, bytes=?, "
                  f"info=? WHERE {where}")
        args = (now, now + ttl_s if ttl_s else None, len(video), json.dumps(info), *wargs)
        if self.objects is not None:
            with self.db.tx() as tx:
                if tx.one(f"SELECT 1 FROM video_jobs WHERE {where}", wargs) is None:
                    return False  # deleted, or taken over: the object (if any) is another replica's
            self.objects.put(video, _output_name(job_id))
            with self.db.tx() as tx:
                saved = tx.run(update, args) > 0
                row = None if saved else tx.one("SELECT status FROM video_jobs WHERE id=?", (job_id,))
            if not saved and (row is None or row[0] != "completed"):
                self.objects.delete(_output_name(job_id))
            return saved
        path = self.output_path(job_id)
        tmp = self.outputs / f".{job_id}.{secrets.token_hex(4)}.part"
        with open(tmp, "xb") as f:
            f.write(video)
            f.flush()
            os.fsync(f.fileno())
        with self.db.tx() as tx:
            os.replace(tmp, path)
            if tx.run(update, args) == 0:
                path.unlink(missing_ok=True)
                return False
        return True

    def delete(self, job_id: str, scope: str = "") -> bool:
        with self.db.tx() as tx:
            gone = tx.run("DELETE FROM video_jobs WHERE id=? AND scope=?", (job_id, scope))
            if gone:
                self._drop_output(job_id)
        return gone > 0

    def recover(self, ttl_s: int = 0) -> int:
        """At start, embedded store only: jobs a previous process left queued or running can no longer finish;
        fail them, saying so. (A shared store never does this: see :meth:`SharedJobStore.reap`.)"""
        now = int(self._clock())
        with self.db.tx() as tx:
            stale = tx.rows("SELECT id, status FROM video_jobs WHERE status IN ('queued', 'in_progress')")
            for job_id, status in stale:
                error = {"code": "server_restarted",
                         "message": f"the server restarted while this job was {status}; create it again"}
                tx.run("UPDATE video_jobs SET status='failed', error=?, completed_at=?, expires_at=? WHERE id=?",
                       (json.dumps(error), now, now + ttl_s if ttl_s else None, job_id))
            for part in self.outputs.glob(".*.part"):  # outputs cut short by a crash
                part.unlink(missing_ok=True)
        if stale:
            logger.info("videos: %d job(s) interrupted by a restart marked failed", len(stale))
        return len(stale)

    def sweep(self) -> int:
        """Remove expired jobs with their outputs, and outputs no job owns; returns how many jobs went."""
        now = int(self._clock())
        with self.db.tx() as tx:
            expired = [r[0] for r in tx.rows(
                "SELECT id FROM video_jobs WHERE expires_at IS NOT NULL AND expires_at<=?", (now,))]
            for job_id in expired:
                tx.run("DELETE FROM video_jobs WHERE id=?", (job_id,))
                self._drop_output(job_id)
            known = {r[0] for r in tx.rows("SELECT id FROM video_jobs WHERE status='completed'")}
        if self.objects is not None:
            # An object is put before its row says completed: only old ones can be orphans.
            for name, mtime in list(self.objects.listing("videos/")):
                if _job_of(name) not in known and mtime < now - _ORPHAN_S:
                    self.objects.delete("videos/" + name)
        else:
            for path in self.outputs.glob("video_*"):  # mp4s and their stills
                if _job_of(path.name) not in known:
                    path.unlink(missing_ok=True)
        if expired:
            logger.info("videos: %d expired job(s) removed", len(expired))
        return len(expired)

    # --- reads -----------------------------------------------------------------------------------

    def get(self, job_id: str, scope: str = "") -> JobRecord | None:
        """The live record (None when unknown, expired or in another scope)."""
        with self.db.tx() as tx:
            row = tx.one(f"SELECT {', '.join(_COLUMNS)} FROM video_jobs WHERE id=? AND scope=?", (job_id, scope))
        record = None if row is None else _record(row)
        if record is not None and record.expires_at is not None and record.expires_at <= self._clock():
            return None
        return record

    def list(self, *, scope: str = "", after: str | None = None, limit: int = 20,
             order: Order = "desc") -> tuple[list[JobRecord], bool]:
        """One page of live records and whether more follow (cursor: the id of the last one seen)."""
        now = int(self._clock())
        with self.db.tx() as tx:
            rows, more = live_page(tx, "video_jobs", ", ".join(_COLUMNS), scope=scope, now=now, after=after,
                                   limit=limit, order=order)
        return [_record(r) for r in rows], more

    def output_path(self, job_id: str) -> Path:
        # Ids are ours ("video_" + hex), checked by the caller's lookup; never a client's path.
        return self.outputs / f"{job_id}.mp4"

    def output_reader(self, record: JobRecord) -> Any:
        """How GET .../content streams a remote output (an S3Reader); None: it sends :meth:`output_path`."""
        if self.objects is None:
            return None
        from openai_frontend.storage.s3 import S3Reader

        return S3Reader(self.objects, _output_name(record.id), int(record.bytes or 0))

    def read_output(self, record: JobRecord) -> bytes:
        """The whole mp4 of a completed job; FileNotFoundError when it is gone."""
        if self.objects is not None:
            return b"".join(self.objects.read(_output_name(record.id)))
        return self.output_path(record.id).read_bytes()

    # --- stills (thumbnail, spritesheet): made from the mp4 when first asked for, kept beside it ------

    def still_path(self, job_id: str, variant: Variant) -> Path:
        return self.outputs / _still_name(job_id, variant)

    def read_still(self, job_id: str, variant: Variant) -> bytes | None:
        """A stored still from the bucket (None: not made yet); local ones are sent from :meth:`still_path`."""
        if self.objects is None:
            return None
        try:
            return b"".join(self.objects.read("videos/" + _still_name(job_id, variant)))
        except FileNotFoundError:
            return None

    def save_still(self, job_id: str, variant: Variant, data: bytes) -> bool:
        """Keep a still beside its mp4 (temp file + rename, or one PUT); False (and nothing kept) when the job was
        deleted meanwhile."""
        name = _still_name(job_id, variant)
        if self.objects is not None:
            self.objects.put(data, "videos/" + name)
        else:
            tmp = self.outputs / f".{name}.{secrets.token_hex(4)}.part"
            with open(tmp, "xb") as f:
                f.write(data)
            os.replace(tmp, self.outputs / name)
        with self.db.tx() as tx:
            alive = tx.one("SELECT 1 FROM video_jobs WHERE id=? AND status='completed'", (job_id,)) is not None
        if not alive:  # deleted between the caller's lookup and now: the sweep would find it, but why wait
            self._drop_output(job_id)
        return alive

    def _drop_output(self, job_id: str) -> None:
        if self.objects is not None:
            self.objects.delete(_output_name(job_id))
            for variant in STILLS:
                self.objects.delete("videos/" + _still_name(job_id, variant))
        else:
            self.output_path(job_id).unlink(missing_ok=True)
            for variant in STILLS:
                self.still_path(job_id, variant).unlink(missing_ok=True)


class SharedJobStore(JobStore):
    """The job table in PostgreSQL, shared by replicas: claims by lease, heartbeats, takeover, global caps."""

    db: PostgresDatabase

    def claim(self, owner: str, lease_s: float, cap: int) -> tuple[JobRecord, bytes | None] | None:
        """The oldest queued job (and its input image), now ``in_progress`` on ``owner`` until ``lease_s`` from now;
        None when nothing is queued or ``cap`` generations (jobs and sync requests, all replicas) hold a live lease."""
        now = self._clock()
        with self.db.tx(_CLAIM_LOCK) as tx:  # the count and the claim, one replica at a time
            if _running(tx, now) >= cap:
                return None
            row = tx.one("SELECT id FROM video_jobs WHERE status='queued' ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED")
            if row is None:
                return None
            tx.run("UPDATE video_jobs SET status='in_progress', progress=0, owner=?, lease_until=?, "
                   "attempts=attempts+1 WHERE id=?", (owner, now + lease_s, row[0]))
            claimed = tx.one(f"SELECT {', '.join(_COLUMNS)}, reference FROM video_jobs WHERE id=?", (row[0],))
        if claimed is None:
            return None
        return _record(claimed[:-1]), None if claimed[-1] is None else bytes(claimed[-1])

    def renew(self, owner: str, job_ids: list[str], lease_s: float) -> set[str]:
        """The heartbeat: extend ``owner``'s leases of ``job_ids`` (jobs and sync slots); those it still holds."""
        if not job_ids:
            return set()
        until = self._clock() + lease_s
        with self.db.tx() as tx:
            held = {r[0] for r in tx.rows(
                "UPDATE video_jobs SET lease_until=? WHERE owner=? AND status='in_progress' AND id = ANY(?) "
                "RETURNING id", (until, owner, job_ids))}
            held |= {r[0] for r in tx.rows("UPDATE video_sync SET lease_until=? WHERE owner=? AND id = ANY(?) "
                                           "RETURNING id", (until, owner, job_ids))}
        return held

    def reap(self, ttl_s: int, max_attempts: int) -> tuple[list[str], list[str]]:
        """Jobs whose replica stopped renewing (an expired lease): queued again for another replica, or failed once
        tried ``max_attempts`` times; sync slots of such replicas go. Live leases are never touched."""
        now = self._clock()
        error = json.dumps({"code": "replica_lost", "message": "the server replica running this job stopped "
                            "renewing its lease, too many times; create it again"})
        with self.db.tx(_CLAIM_LOCK) as tx:
            requeued = [r[0] for r in tx.rows(
                "UPDATE video_jobs SET status='queued', owner=NULL, lease_until=NULL, progress=0 "
                "WHERE status='in_progress' AND lease_until<? AND attempts<? RETURNING id", (now, max_attempts))]
            failed = [r[0] for r in tx.rows(
                "UPDATE video_jobs SET status='failed', owner=NULL, lease_until=NULL, error=?, completed_at=?, "
                "expires_at=? WHERE status='in_progress' AND lease_until<? RETURNING id",
                (error, int(now), int(now) + ttl_s if ttl_s else None, now))]
            tx.run("DELETE FROM video_sync WHERE lease_until<?", (now,))
        if requeued or failed:
            logger.info("videos: expired leases: %d job(s) queued again, %d failed", len(requeued), len(failed))
        return requeued, failed

    def progress(self, job_id: str, owner: str, progress: int) -> None:
        """Written to the row, so every replica's GET shows it."""
        with self.db.tx() as tx:
            tx.run("UPDATE video_jobs SET progress=? WHERE id=? AND owner=? AND status='in_progress'",
                   (progress, job_id, owner))

    def release(self, owner: str) -> list[str]:
        """At a graceful shutdown: ``owner``'s running jobs go back to the queue for another replica at once."""
        with self.db.tx(_CLAIM_LOCK) as tx:
            released = [r[0] for r in tx.rows(
                "UPDATE video_jobs SET status='queued', owner=NULL, lease_until=NULL, progress=0, "
                "attempts=GREATEST(attempts-1, 0) WHERE owner=? AND status='in_progress' RETURNING id", (owner,))]
            tx.run("DELETE FROM video_sync WHERE owner=?", (owner,))
        return released

    def owner_of(self, job_id: str) -> str | None:
        with self.db.tx() as tx:
            row = tx.one("SELECT owner FROM video_jobs WHERE id=? AND status='in_progress'", (job_id,))
        return None if row is None else row[0]

    def counts(self) -> tuple[int, int]:
        """(waiting, running) generations of every replica: queued jobs and sync requests, live leases."""
        now = self._clock()
        with self.db.tx() as tx:
            return _queued(tx), _running(tx, now)

    def enqueue(self, record: JobRecord, image: bytes | None, max_queued: int) -> bool:
        """Add a queued job (with its input image, for whichever replica runs it) unless ``max_queued`` generations
        are waiting already (every replica's)."""
        row = (*_row(record), image)
        with self.db.tx(_QUEUE_LOCK) as tx:
            if _queued(tx) >= max_queued:
                return False
            tx.run(f"INSERT INTO video_jobs ({', '.join(_COLUMNS)}, reference) VALUES ({', '.join('?' * len(row))})",
                   row)
        return True

    def sync_enqueue(self, slot_id: str, owner: str, lease_s: float, max_queued: int) -> bool:
        with self.db.tx(_QUEUE_LOCK) as tx:
            if _queued(tx) >= max_queued:
                return False
            tx.run("INSERT INTO video_sync (id, status, owner, lease_until) VALUES (?, 'queued', ?, ?)",
                   (slot_id, owner, self._clock() + lease_s))
        return True

    def sync_claim(self, slot_id: str, cap: int) -> bool:
        """Whether the sync request ``slot_id`` may run now (it then counts as running)."""
        now = self._clock()
        with self.db.tx(_CLAIM_LOCK) as tx:
            if _running(tx, now) >= cap:
                return False
            return tx.run("UPDATE video_sync SET status='in_progress' WHERE id=?", (slot_id,)) > 0

    def sync_done(self, slot_id: str) -> None:
        with self.db.tx() as tx:
            tx.run("DELETE FROM video_sync WHERE id=?", (slot_id,))

    def notify(self, channel: str, payload: str) -> None:
        with self.db.tx() as tx:
            tx.run("SELECT pg_notify(?, ?)", (channel, payload))


_CLAIM_LOCK = "videos:claim"
_QUEUE_LOCK = "videos:queue"
_ORPHAN_S = 3600  # an S3 output older than this without a completed row is an orphan


def _running(tx: Tx, now: float) -> int:
    row = tx.one("SELECT (SELECT count(*) FROM video_jobs WHERE status='in_progress' AND lease_until>=?) + "
                 "(SELECT count(*) FROM video_sync WHERE status='in_progress' AND lease_until>=?)", (now, now))
    return int(row[0]) if row else 0


def _queued(tx: Tx) -> int:
    row = tx.one("SELECT (SELECT count(*) FROM video_jobs WHERE status='queued') + "
                 "(SELECT count(*) FROM video_sync WHERE status='queued')")
    return int(row[0]) if row else 0


def _owned(job_id: str, owner: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("id=?", (job_id,)) if owner is None else ("id=? AND owner=?", (job_id, owner))


def _output_name(job_id: str) -> str:
    return f"videos/{job_id}.mp4"


def _still_name(job_id: str, variant: Variant) -> str:
    return f"{job_id}.{variant.name}.{variant.suffix}"


def _job_of(name: str) -> str:
    """The job an output's file name belongs to: ``video_<hex>.mp4``, ``video_<hex>.thumbnail.webp`` ..."""
    return name.split(".", 1)[0]


def _row(record: JobRecord) -> tuple[Any, ...]:
    d = asdict(record)
    return tuple(json.dumps(d[c]) if c in _JSON and d[c] is not None else d[c] for c in _COLUMNS)


def _record(row: tuple[Any, ...]) -> JobRecord:
    d = dict(zip(_COLUMNS, row, strict=True))
    for key in _JSON:
        d[key] = json.loads(d[key]) if d[key] is not None else None
    return JobRecord(**d)
