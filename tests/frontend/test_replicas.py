"""Two shim replicas in one process on one PostgreSQL database and one S3 bucket: shared files, shared jobs,
leases, takeover, and the stores being unreachable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.settings import Settings
from openai_frontend.videos.jobs import MAX_ATTEMPTS, SharedJobManager
from openai_frontend.videos.store import JobRecord, SharedJobStore, new_job_id
from tests.fakes import FakeBackend, FakeVideoBackend
from tests.stores import store_settings
from tests.videos import ClipSpec, make_video


@pytest.fixture
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return store_settings("postgres+s3", settings, request).with_(videos_lease_s=1.0)


@contextmanager
def replica(settings: Settings, videos: FakeVideoBackend | None = None) -> Iterator[TestClient]:
    app = create_app(settings, FakeBackend(), video_backend=videos or FakeVideoBackend())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def jobs_of(client: TestClient) -> SharedJobManager:
    return client.app.state.videos  # type: ignore[attr-defined]


def until(check, timeout_s: float = 20.0, what: str = ""):  # noqa: ANN001, ANN201 - a test helper
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def job(client: TestClient, video_id: str) -> dict:
    return client.get(f"/v1/videos/{video_id}").json()


def test_a_file_uploaded_on_one_replica_is_listed_read_and_deleted_on_another(settings) -> None:
    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
    b_dir = settings.with_(files_dir=settings.files_dir + "-b")  # nothing shared on disk: only the stores
    with replica(settings) as a, replica(b_dir) as b:
        file_id = a.post("/v1/files", files={"file": ("c.mp4", clip, "video/mp4")}, data={"purpose": "vision"}).json()["id"]
        assert [f["id"] for f in b.get("/v1/files").json()["data"]] == [file_id]
        assert b.get(f"/v1/files/{file_id}/content", headers={"Range": "bytes=4-11"}).content == clip[4:12]
        assert b.post("/v1/chat/completions", json={"model": "tiny-test", "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": file_id}}]}]}).status_code == 200
        assert b.delete(f"/v1/files/{file_id}").status_code == 200
        assert a.get(f"/v1/files/{file_id}").status_code == 404


def test_a_job_created_on_one_replica_is_polled_and_cancelled_on_another(settings) -> None:
    videos_a = FakeVideoBackend(hold_at=2)
    with replica(settings, videos_a) as a:
        created = a.post("/v1/videos", json={"prompt": "a fox", "num_inference_steps": 4}).json()
        until(lambda: job(a, created["id"])["progress"] == 45, what="A's progress")
        with replica(settings.with_(files_dir=settings.files_dir + "-b")) as b:  # B starts while A's job runs
            seen = job(b, created["id"])
            assert seen["status"] == "in_progress" and seen["progress"] == 45  # from the row A writes
            assert b.get("/v1/videos").json()["data"][0]["id"] == created["id"]
            assert b.delete(f"/v1/videos/{created['id']}").json()["deleted"] is True
            until(lambda: videos_a.closed_early == 1, what="A to stop the generation")  # NOTIFY reached A
            assert videos_a.finished == 0
            assert a.get(f"/v1/videos/{created['id']}").status_code == 404


def test_a_starting_replica_leaves_another_replicas_live_job_running(settings) -> None:
    videos_a = FakeVideoBackend(hold_at=1)
    with replica(settings, videos_a) as a:
        created = a.post("/v1/videos", json={"prompt": "a fox"}).json()
        until(lambda: job(a, created["id"])["status"] == "in_progress", what="A to run the job")
        with replica(settings.with_(files_dir=settings.files_dir + "-b")) as b:
            time.sleep(2.5)  # more than two leases: A's heartbeats keep its job
            assert job(b, created["id"])["status"] == "in_progress"
            videos_a.release()
            done = until(lambda: (j := job(b, created["id"]))["status"] == "completed" and j, what="completion")
            assert done["progress"] == 100
            assert b.get(f"/v1/videos/{created['id']}/content").content[4:8] == b"ftyp"


def test_a_dead_replicas_job_is_taken_over_when_its_lease_expires(settings) -> None:
    videos_a, videos_b = FakeVideoBackend(hold_at=1), FakeVideoBackend()
    with replica(settings, videos_a) as a:
        created = a.post("/v1/videos", json={"prompt": "a fox", "num_frames": 5}).json()
        until(lambda: job(a, created["id"])["status"] == "in_progress", what="A to run the job")
        with replica(settings.with_(files_dir=settings.files_dir + "-b"), videos_b) as b:
            take_over(a, b, created, videos_a, videos_b)


def take_over(a: TestClient, b: TestClient, created: dict, videos_a: FakeVideoBackend,
              videos_b: FakeVideoBackend) -> None:
    owner = jobs_of(a).replica
    assert jobs_of(b).store.owner_of(created["id"]) == owner

    async def die() -> None:  # no more heartbeats or notifications: what kill -9 leaves behind
        jobs = jobs_of(a)
        jobs._stop.set()
        if jobs._leases is not None:
            jobs._leases.cancel()

    a.portal.call(die)  # type: ignore[union-attr]
    done = until(lambda: (j := job(b, created["id"]))["status"] == "completed" and j, what="B's takeover")
    assert len(videos_b.requests) == 1 and videos_b.requests[0].params.prompt == "a fox"
    assert jobs_of(b).store.owner_of(created["id"]) is None and done["progress"] == 100
    videos_a.release()  # A wakes up late: its result is refused (the job is no longer A's)
    time.sleep(0.3)
    assert job(b, created["id"])["status"] == "completed"


def record() -> JobRecord:
    return JobRecord(id=new_job_id(), status="queued", model="tiny-wan", prompt="a fox", size="64x64",
                     seconds="0.5", params={"num_frames": 9, "fps": 16, "seed": 1}, created_at=1_800_000_000)


def test_expired_leases_requeue_a_job_then_fail_it_after_the_last_attempt(settings) -> None:
    from openai_frontend.storage.db import PostgresDatabase

    now = [1_800_000_000.0]
    store = SharedJobStore(settings.files_dir, db=PostgresDatabase(settings.database_url), clock=lambda: now[0])
    try:
        job_ = record()
        assert store.enqueue(job_, None, max_queued=10)
        assert store.claim("a", lease_s=10, cap=1) is not None
        assert store.claim("b", lease_s=10, cap=1) is None  # the cap: one generation in all
        now[0] += 5
        assert store.reap(0, MAX_ATTEMPTS) == ([], [])  # a live lease is never touched
        assert store.renew("a", [job_.id], lease_s=10) == {job_.id}
        now[0] += 11
        assert store.reap(0, MAX_ATTEMPTS) == ([job_.id], [])  # A is gone: queued again
        claimed = store.claim("b", lease_s=10, cap=1)
        assert claimed is not None and claimed[0].id == job_.id
        assert store.renew("a", [job_.id], lease_s=10) == set()  # A, back, learns it lost the job
        assert not store.complete(job_.id, b"late", {}, owner="a")
        now[0] += 11
        assert store.reap(0, MAX_ATTEMPTS) == ([], [job_.id])  # lost twice: failed, saying why
        failed = store.get(job_.id)
        assert failed is not None and failed.status == "failed" and failed.error["code"] == "replica_lost"
        assert not store.enqueue(record(), None, max_queued=0)  # the queue cap, shared
    finally:
        store.close()


def test_the_queue_cap_counts_every_replicas_jobs(settings) -> None:
    capped = settings.with_(videos_max_queued=1)
    videos_a = FakeVideoBackend(hold_at=0)
    with replica(capped, videos_a) as a, replica(capped.with_(files_dir=settings.files_dir + "-b"),
                                                 FakeVideoBackend(hold_at=0)) as b:
        running = a.post("/v1/videos", json={"prompt": "one"}).json()
        until(lambda: job(a, running["id"])["status"] == "in_progress", what="the first job to run")
        assert b.post("/v1/videos", json={"prompt": "two"}).status_code == 200  # queued: the cap is one running
        r = a.post("/v1/videos", json={"prompt": "three"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_requests"
        videos_a.release()


def test_files_answer_503_naming_s3_while_it_is_unreachable_and_recover_without_restart(settings) -> None:
    from moto.server import ThreadedMotoServer

    from video_pipeline.launch import free_port

    port = free_port()
    down = settings.with_(s3_endpoint_url=f"http://127.0.0.1:{port}")
    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
    with replica(down) as client:
        r = client.post("/v1/files", files={"file": ("c.mp4", clip, "video/mp4")}, data={"purpose": "vision"})
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "store_unavailable" and "S3 file store" in err["message"]
        assert not any((Path(down.files_dir) / "tmp").iterdir())
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)  # the same moto backend
        server.start()
        try:
            r = client.post("/v1/files", files={"file": ("c.mp4", clip, "video/mp4")}, data={"purpose": "vision"})
            assert r.status_code == 200, r.text
            assert client.get(f"/v1/files/{r.json()['id']}/content").content == clip
        finally:
            server.stop()


def test_requests_answer_503_naming_postgresql_while_it_is_down_and_recover_without_restart(tmp_path) -> None:
    from tests.stores import PostgresCluster

    cluster = PostgresCluster()
    cluster.start()
    try:
        settings = Settings(files_dir=str(tmp_path / "f"), database_url=cluster.new_database(), served_model_name="m")
        with replica(settings) as client:
            assert client.get("/v1/files").status_code == 200
            cluster.pause()
            r = client.get("/v1/files")
            assert r.status_code == 503 and "PostgreSQL database" in r.json()["error"]["message"], r.text
            assert client.get("/v1/videos").status_code == 503
            cluster.resume()
            until(lambda: client.get("/v1/files").status_code == 200, timeout_s=30, what="PostgreSQL again")
            assert client.get("/v1/videos").status_code == 200
    finally:
        cluster.stop()


@pytest.mark.parametrize(("changes", "needle"), [
    ({"files_backend": "s4"}, "files_backend"),
    ({"files_backend": "s3"}, "s3_bucket"),
    ({"s3_bucket": "b"}, "s3_bucket"),
    ({"files_backend": "s3", "s3_bucket": "b", "s3_endpoint_url": "ftp://x"}, "s3_endpoint_url"),
    ({"files_backend": "s3", "s3_bucket": "b", "s3_prefix": "x"}, "s3_prefix"),
    ({"files_backend": "s3", "s3_bucket": "b", "s3_part_bytes": 1024}, "s3_part_bytes"),
    ({"database_url": "mysql://x"}, "database_url"),
])
def test_settings_refuse_a_store_misconfiguration_naming_the_setting(changes, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        Settings(**changes)


def test_start_is_refused_naming_the_setting_when_the_bucket_does_not_exist(settings) -> None:
    with pytest.raises(ValueError, match="s3_bucket"):
        create_app(settings.with_(s3_bucket="no-such-bucket"), FakeBackend())
