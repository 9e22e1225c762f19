"""Video jobs that outlive the shim: records in the Files API's SQLite database, outputs beside its blobs.

The table ``video_jobs`` lives in ``<VLT_FILES_DIR>/files.sqlite3`` (its own connection,
WAL mode, like :class:`~openai_frontend.files.store.LocalFileStore`); each finished mp4 is
``<VLT_FILES_DIR>/videos/<job id>.mp4``, landed by temp file + fsync + rename. After a
restart, completed jobs stay downloadable and jobs that were queued or running are marked
failed with the reason (:meth:`JobStore.recover`). Finished jobs expire ``ttl`` seconds
after they end: they 404 at once and the next sweep removes record and file.

One shim process owns a store directory. Every method blocks; callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

Status = Literal["queued", "in_progress", "completed", "failed"]
Order = Literal["asc", "desc"]

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
_COLUMNS = ("id", "scope", "status", "progress", "model", "prompt", "size", "seconds", "params", "created_at",
            "completed_at", "expires_at", "error", "bytes", "info")
_JSON = ("params", "error", "info")


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
        vLLM-Omni's extras: the frame count, fps and seed the video was made with."""
        p = self.params
        return {
            "id": self.id, "object": "video", "status": self.status,
            "progress": self.progress if progress is None else progress,
            "created_at": self.created_at, "completed_at": self.completed_at, "expires_at": self.expires_at,
            "model": self.model, "prompt": self.prompt, "size": self.size, "seconds": self.seconds,
            "error": self.error, "remixed_from_video_id": None,
            "num_frames": p.get("num_frames"), "fps": p.get("fps"), "seed": p.get("seed"),
            "inference_time_s": (self.info or {}).get("inference_s"),
        }


class JobStore:
    """Job records in SQLite and mp4 outputs on disk under one directory (the Files API's)."""

    def __init__(self, root: str | Path, *, clock: Any = time.time) -> None:
        self.root = Path(root)
        self.outputs = self.root / "videos"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / DB_FILE, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writes ----------------------------------------------------------------------------------

    def add(self, record: JobRecord) -> None:
        row = _row(record)
        with self._lock:
            self._db.execute(f"INSERT INTO video_jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(row))})",
                             row)

    def mark(self, job_id: str, status: Status, *, progress: int | None = None, error: dict[str, Any] | None = None,
             ttl_s: int = 0) -> None:
        """Move a job to ``status``; a failed one records ``error`` and starts its expiry clock."""
        now = int(self._clock())
        sets, args = ["status=?"], [status]
        if progress is not None:
            sets.append("progress=?")
            args.append(progress)
        if status == "failed":
            sets += ["error=?", "completed_at=?", "expires_at=?"]
            args += [json.dumps(error), now, now + ttl_s if ttl_s else None]
        with self._lock:
            self._db.execute(f"UPDATE video_jobs SET {', '.join(sets)} WHERE id=?", (*args, job_id))

    def complete(self, job_id: str, video: bytes, info: dict[str, Any], ttl_s: int = 0) -> bool:
        """Land the mp4 and mark the job completed; False (and no file left) when the job was deleted meanwhile."""
        path = self.output_path(job_id)
        tmp = self.outputs / f".{job_id}.{secrets.token_hex(4)}.part"
        with open(tmp, "xb") as f:
            f.write(video)
            f.flush()
            os.fsync(f.fileno())
        now = int(self._clock())
        with self._lock:
            os.replace(tmp, path)
            cur = self._db.execute(
                "UPDATE video_jobs SET status='completed', progress=100, completed_at=?, expires_at=?, bytes=?, "
                "info=? WHERE id=?", (now, now + ttl_s if ttl_s else None, len(video), json.dumps(info), job_id))
            if cur.rowcount == 0:
                path.unlink(missing_ok=True)
                return False
        return True

    def delete(self, job_id: str, scope: str = "") -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM video_jobs WHERE id=? AND scope=?", (job_id, scope))
            self.output_path(job_id).unlink(missing_ok=True)
        return cur.rowcount > 0

    def recover(self, ttl_s: int = 0) -> int:
        """At start: jobs a previous process left queued or running can no longer finish; fail them, saying so."""
        now = int(self._clock())
        with self._lock:
            rows = self._db.execute("SELECT id, status FROM video_jobs WHERE status IN ('queued', 'in_progress')")
            stale = rows.fetchall()
            for job_id, status in stale:
                error = {"code": "server_restarted",
                         "message": f"the server restarted while this job was {status}; create it again"}
                self._db.execute("UPDATE video_jobs SET status='failed', error=?, completed_at=?, expires_at=? "
                                 "WHERE id=?", (json.dumps(error), now, now + ttl_s if ttl_s else None, job_id))
            for part in self.outputs.glob(".*.part"):  # outputs cut short by a crash
                part.unlink(missing_ok=True)
        if stale:
            logger.info("videos: %d job(s) interrupted by a restart marked failed", len(stale))
        return len(stale)

    def sweep(self) -> int:
        """Remove expired jobs with their outputs, and outputs no job owns; returns how many jobs went."""
        now = int(self._clock())
        with self._lock:
            expired = [r[0] for r in self._db.execute(
                "SELECT id FROM video_jobs WHERE expires_at IS NOT NULL AND expires_at<=?", (now,))]
            for job_id in expired:
                self._db.execute("DELETE FROM video_jobs WHERE id=?", (job_id,))
                self.output_path(job_id).unlink(missing_ok=True)
            known = {r[0] for r in self._db.execute("SELECT id FROM video_jobs WHERE status='completed'")}
            for path in self.outputs.glob("video_*.mp4"):
                if path.stem not in known:
                    path.unlink(missing_ok=True)
        if expired:
            logger.info("videos: %d expired job(s) removed", len(expired))
        return len(expired)

    # --- reads -----------------------------------------------------------------------------------

    def get(self, job_id: str, scope: str = "") -> JobRecord | None:
        """The live record (None when unknown, expired or in another scope)."""
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM video_jobs WHERE id=? AND scope=?",
                                   (job_id, scope)).fetchone()
        record = None if row is None else _record(row)
        if record is not None and record.expires_at is not None and record.expires_at <= self._clock():
            return None
        return record

    def list(self, *, scope: str = "", after: str | None = None, limit: int = 20,
             order: Order = "desc") -> tuple[list[JobRecord], bool]:
        """One page of live records and whether more follow (cursor: the id of the last one seen)."""
        where, args = ["scope=?", "(expires_at IS NULL OR expires_at>?)"], [scope, int(self._clock())]
        with self._lock:
            if after is not None:
                seq = self._db.execute("SELECT seq FROM video_jobs WHERE id=? AND scope=?", (after, scope)).fetchone()
                if seq is None:
                    raise KeyError(after)
                where.append("seq<?" if order == "desc" else "seq>?")
                args.append(seq[0])
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM video_jobs WHERE {' AND '.join(where)} "
                f"ORDER BY seq {'DESC' if order == 'desc' else 'ASC'} LIMIT ?", (*args, limit + 1)).fetchall()
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    def output_path(self, job_id: str) -> Path:
        # Ids are ours ("video_" + hex), checked by the caller's lookup; never a client's path.
        return self.outputs / f"{job_id}.mp4"


def _row(record: JobRecord) -> tuple[Any, ...]:
    d = asdict(record)
    return tuple(json.dumps(d[c]) if c in _JSON and d[c] is not None else d[c] for c in _COLUMNS)


def _record(row: tuple[Any, ...]) -> JobRecord:
    d = dict(zip(_COLUMNS, row, strict=True))
    for key in _JSON:
        d[key] = json.loads(d[key]) if d[key] is not None else None
    return JobRecord(**d)
