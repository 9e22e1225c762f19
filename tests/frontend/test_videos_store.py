"""The video job store: records beside the Files API's, outputs on disk, expiry, recovery after a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from openai_frontend.files.store import LocalFileStore
from openai_frontend.videos.store import JobRecord, JobStore, new_job_id


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(status: str = "queued", **changes: object) -> JobRecord:
    values = {"id": new_job_id(), "status": status, "model": "tiny-wan", "prompt": "a fox", "size": "64x64",
              "seconds": "0.5625", "params": {"num_frames": 9, "fps": 16, "seed": 1}, "created_at": 1_800_000_000}
    return JobRecord(**{**values, **changes})  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> JobStore:
    return JobStore(tmp_path, clock=clock)


def test_jobs_live_in_the_files_database_when_both_stores_share_a_directory(tmp_path: Path) -> None:
    files = LocalFileStore(tmp_path, quota_bytes=1 << 20)
    jobs = JobStore(tmp_path)
    jobs.add(record())
    tables = {r[0] for r in sqlite3.connect(tmp_path / "files.sqlite3").execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"files", "video_jobs"} <= tables
    assert files.list()[0] == []  # a job is not a file
    assert (tmp_path / "videos").is_dir()


def test_complete_lands_the_output_and_the_record_reads_back(store: JobStore, clock: Clock) -> None:
    job = record()
    store.add(job)
    assert store.complete(job.id, b"mp4 bytes", {"inference_s": 1.5}, ttl_s=60)
    got = store.get(job.id)
    assert got is not None and (got.status, got.progress, got.bytes) == ("completed", 100, 9)
    assert (got.completed_at, got.expires_at) == (int(clock.now), int(clock.now) + 60)
    assert store.output_path(job.id).read_bytes() == b"mp4 bytes"
    assert got.openai()["inference_time_s"] == 1.5 and got.openai()["num_frames"] == 9


def test_complete_leaves_no_file_when_the_job_was_deleted_meanwhile(store: JobStore) -> None:
    job = record()
    store.add(job)
    assert store.delete(job.id)
    assert not store.complete(job.id, b"late", {})
    assert list(store.outputs.iterdir()) == []


def test_expired_jobs_404_at_once_and_the_sweep_removes_them(store: JobStore, clock: Clock) -> None:
    job, keep = record(), record()
    store.add(job)
    store.add(keep)
    store.complete(job.id, b"x", {}, ttl_s=60)
    store.complete(keep.id, b"y", {}, ttl_s=0)  # 0: kept forever
    clock.now += 61
    assert store.get(job.id) is None and store.get(keep.id) is not None
    assert [r.id for r in store.list()[0]] == [keep.id]
    assert store.sweep() == 1
    assert not store.output_path(job.id).exists() and store.output_path(keep.id).exists()


def test_failed_jobs_expire_like_completed_ones(store: JobStore, clock: Clock) -> None:
    job = record()
    store.add(job)
    store.mark(job.id, "failed", error={"code": "x", "message": "boom"}, ttl_s=10)
    got = store.get(job.id)
    assert got is not None and got.error == {"code": "x", "message": "boom"} and got.expires_at == clock.now + 10
    clock.now += 11
    assert store.get(job.id) is None


def test_recover_fails_jobs_a_previous_process_left_queued_or_running(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    queued, running, done = record("queued"), record("in_progress"), record()
    for r in (queued, running, done):
        store.add(r)
    store.complete(done.id, b"v", {})
    (store.outputs / ".video_x.1234.part").write_bytes(b"half")
    store.close()
    reopened = JobStore(tmp_path)
    assert reopened.recover() == 2
    for job, was in ((queued, "queued"), (running, "in_progress")):
        got = reopened.get(job.id)
        assert got is not None and got.status == "failed" and got.error is not None
        assert got.error["code"] == "server_restarted" and was in got.error["message"]
    assert reopened.get(done.id).status == "completed"  # type: ignore[union-attr]
    assert not (reopened.outputs / ".video_x.1234.part").exists()


def test_sweep_removes_outputs_no_job_owns(store: JobStore) -> None:
    stray = store.outputs / "video_0123.mp4"
    stray.write_bytes(b"orphan")
    store.sweep()
    assert not stray.exists()


def test_list_pages_by_cursor_in_either_order(store: JobStore) -> None:
    jobs = [record() for _ in range(5)]
    for j in jobs:
        store.add(j)
    page, more = store.list(limit=2)
    assert [r.id for r in page] == [jobs[4].id, jobs[3].id] and more
    page, more = store.list(limit=2, after=jobs[3].id)
    assert [r.id for r in page] == [jobs[2].id, jobs[1].id] and more
    page, more = store.list(limit=10, after=jobs[1].id, order="asc")
    assert [r.id for r in page] == [jobs[2].id, jobs[3].id, jobs[4].id] and not more
    with pytest.raises(KeyError):
        store.list(after="video_unknown")
