"""Two shim replicas, each a separate process on its own tritonserver, sharing one PostgreSQL and one S3 (moto).

Replica A is the shim on the session's tritonserver; replica B runs on a second tritonserver that loads only
what B needs (the llm and media models to answer about files, video_generator to take over jobs). The two
replicas share nothing on disk: each has its own files_dir (its decoder's media_root), so whatever B serves
of A's work came through the database and the bucket. A is killed with SIGKILL mid-job and mid-upload and
started again; the real OpenAI SDK is the client throughout.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import MODEL_REPOSITORY
from tests.servers import ShimProcess
from tests.stores import BUCKET
from tests.videos import ClipSpec, make_video
from video_pipeline.generation.encode import probe_mp4

pytestmark = pytest.mark.e2e

LEASE_S = 3.0  # a dead replica's job is taken over within about this long
PART = 5 * 1024 * 1024  # S3's smallest part: a modest upload is already a multipart upload
# Long enough to watch, cancel and kill mid-way (tiny Wan: ~20-40 ms a step at 512x256x17), short to rerun.
SLOW = {"num_frames": 17, "num_inference_steps": 100, "seed": 7}
# 8 frames under a 112*112 pixel budget: a few dozen video tokens.
SMALL = {"media_io_kwargs": {"video": {"num_frames": 8}}, "mm_processor_kwargs": {"max_pixels": 112 * 112},
         "temperature": 0, "max_tokens": 8}
B_MODELS = ["video_decoder", "video_preprocessor", "video_media", "llm", "video_generator"]
# B's engine in the llm stub's own process (VLLM_CPU.md: verified inside Triton): measured on these machines,
# ready in 12 s instead of 18 s and ~0.6 GB less than the EngineCore + Worker processes of the session's engine.
LIGHT_ENGINE = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def until(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    """``check()``'s first truthy value, polled until ``timeout_s``; fails naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(every_s)
    return value


def padded(clip: bytes, size: int) -> bytes:
    """A valid mp4 of about ``size`` bytes: ``clip`` then a ``free`` box of random bytes (skipped by demuxers),
    so each call is new content (a new sha256) that passes the upload's media probe."""
    pad = max(0, size - len(clip) - 8)
    return clip + struct.pack(">I4s", pad + 8, b"free") + os.urandom(pad)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Replicas:
    """A and B, the stores they share, and B's tritonserver."""

    def __init__(self, a: ShimProcess, b: ShimProcess, triton_a: Any, triton_b: Any, database_url: str,
                 s3: Any, prefix: str) -> None:
        self.a, self.b = a, b
        self.triton_a, self.triton_b = triton_a, triton_b
        self.database_url = database_url
        self.s3, self.prefix = s3, prefix

    def a_client(self) -> openai.OpenAI:
        if not self.a.alive():  # killed by an earlier test: a crashed replica comes back on the same stores
            self.a.start()
        return self.a.client()

    def job_row(self, video_id: str) -> tuple[str | None, str] | None:
        """(owner, status) of a job's row: which replica runs it (owner is ``host:pid:token``)."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute("SELECT owner, status FROM video_jobs WHERE id=%s", (video_id,)).fetchone()

    def runs_on(self, video_id: str, shim: ShimProcess) -> bool:
        row = self.job_row(video_id)
        return row is not None and row[1] == "in_progress" and f":{shim.pid}:" in (row[0] or "")

    def quiet(self) -> bool:
        """No transaction open in the database (B paused inside one would hold the claim lock)."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname=current_database() "
                               "AND state LIKE 'idle in transaction%%'").fetchone()
        return row is not None and row[0] == 0

    def created_on_a_running_on_a(self, client_a: openai.OpenAI, **fields: Any) -> Any:
        """A job created on A that A claims: B is paused (SIGSTOP) from the create until A's claim, else whichever
        replica heartbeats first would take it."""
        for _ in range(50):
            with self.b.paused():
                if self.quiet():  # else B (or A) was stopped mid-transaction: resume, try again
                    video = client_a.videos.create(prompt="a fox in the snow", size="512x256",
                                                   extra_body={**SLOW, **fields})
                    until(lambda v=video: self.runs_on(v.id, self.a), 30, "A to claim the job")
                    return video
            time.sleep(0.05)
        pytest.fail("the database never went quiet to pause B")

    def blob_exists(self, digest: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.client().head_object(Bucket=BUCKET, Key=f"{self.prefix}blobs/{digest}")
        except ClientError:
            return False
        return True

    def multipart_in_flight(self) -> bool:
        listed = self.s3.client().list_multipart_uploads(Bucket=BUCKET, Prefix=f"{self.prefix}blobs/")
        return bool(listed.get("Uploads"))


def engine_core() -> str:
    """The core B's vLLM worker binds: the last usable one, as the session's engine binds core 0 (vLLM's
    default), so the two engines do not share a core where there are two."""
    return str(max(os.sched_getaffinity(0)))


@pytest.fixture(scope="module")
def replicas(request: pytest.FixtureRequest, triton, postgres, s3_server, tiny_model: Path, tiny_wan: Path,
             shared_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    from video_pipeline.launch import TritonServer
    from video_pipeline.steps import MEDIA_ROOT_ENV

    started = time.monotonic()
    logs = tmp_path_factory.mktemp("replicas")
    # A's files_dir lies under the session tritonserver's media_root, B's is its own server's: each decoder
    # reads its replica's local copies by path; nothing else is shared on disk.
    a_dir, b_dir = shared_files / f"replica-a-{secrets.token_hex(4)}", logs / "replica-b-files"
    b_dir.mkdir()
    triton_b = TritonServer(MODEL_REPOSITORY, B_MODELS, log_path=logs / "tritonserver-b.log", ready_timeout_s=600,
                            env={MEDIA_ROOT_ENV: str(b_dir.resolve()), **LIGHT_ENGINE,
                                 "VLLM_CPU_OMP_THREADS_BIND": engine_core()})
    prefix = f"t{secrets.token_hex(6)}/"
    stores = {"VLT_DATABASE_URL": postgres.new_database(), "VLT_FILES_BACKEND": "s3", "VLT_S3_BUCKET": BUCKET,
              "VLT_S3_ENDPOINT_URL": s3_server.url, "VLT_S3_PREFIX": prefix, "VLT_S3_PART_BYTES": str(PART),
              "VLT_VIDEOS_LEASE_S": str(LEASE_S), "VLT_MODEL_REPOSITORY": str(MODEL_REPOSITORY),
              "VLT_LOG_LEVEL": "info"}
    a = ShimProcess("replica A", triton.grpc_url, {**stores, "VLT_FILES_DIR": str(a_dir),
                                                   "VLT_TRITON_FILES_DIR": str(a_dir.resolve())}, logs / "shim-a.log")
    b = ShimProcess("replica B", triton_b.grpc_url, {**stores, "VLT_FILES_DIR": str(b_dir),
                                                     "VLT_TRITON_FILES_DIR": str(b_dir.resolve())}, logs / "shim-b.log")
    failed_before, up = request.session.testsfailed, False
    try:
        triton_b.start()
        print(f"\nmulti-replica: tritonserver B ready in {time.monotonic() - started:.1f} s")
        a.start()
        b.start()
        up = True
        print(f"multi-replica: both replicas ready after {time.monotonic() - started:.1f} s")
        yield Replicas(a, b, triton, triton_b, stores["VLT_DATABASE_URL"], s3_server, prefix)
    finally:
        stopping = time.monotonic()
        a.stop()
        b.stop()
        print(f"multi-replica: replicas stopped in {time.monotonic() - stopping:.1f} s")
        triton_b.stop()
        if not up or request.session.testsfailed > failed_before:
            for name, text in (("replica A", a.log_tail()), ("replica B", b.log_tail()),
                               ("tritonserver B", triton_b.log_tail(200))):
                print(f"\n--- {name} log ---\n{text}")
        print(f"multi-replica: {time.monotonic() - started:.1f} s in all")


def test_a_file_uploaded_on_a_is_answered_about_on_b(replicas: Replicas) -> None:
    clip = make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10))
    client_a, client_b = replicas.a_client(), replicas.b.client()
    uploaded = client_a.files.create(file=("clip.mp4", clip, "video/mp4"), purpose="vision")
    assert uploaded.bytes == len(clip)
    assert uploaded.id in [f.id for f in client_b.files.list()]
    assert sha(client_b.files.content(uploaded.id).content) == sha(clip)
    model = client_b.models.list().data[0].id
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": uploaded.id}},
                                             {"type": "text", "text": "What happens in the video?"}]}]
    on_b = client_b.chat.completions.create(model=model, messages=messages, extra_body=SMALL)
    assert on_b.choices[0].message.content and on_b.usage.prompt_tokens > 20, on_b  # the video's tokens
    # B read the bytes from the bucket into its own cache (A's files_dir is not B's), and its own engine
    # answered exactly what A's does for the same file: the same video reached the logits.
    assert (Path(replicas.b.env["VLT_FILES_DIR"]) / "s3-cache" / sha(clip)[:2] / sha(clip)[2:]).is_file()
    on_a = client_a.chat.completions.create(model=model, messages=messages, extra_body=SMALL)
    assert on_a.choices[0].message.content == on_b.choices[0].message.content
    assert on_a.usage.prompt_tokens == on_b.usage.prompt_tokens


def test_a_job_created_on_a_is_polled_and_cancelled_on_b(replicas: Replicas) -> None:
    client_a, client_b = replicas.a_client(), replicas.b.client()
    video = replicas.created_on_a_running_on_a(client_a)
    seen = until(lambda: (v := client_b.videos.retrieve(video.id)).progress >= 5 and v, 60,
                 "B to see A's progress")
    assert seen.status == "in_progress" and video.id in [v.id for v in client_b.videos.list()]
    deleted = client_b.videos.delete(video.id)
    assert deleted.deleted and deleted.id == video.id
    with pytest.raises(openai.NotFoundError):
        client_a.videos.retrieve(video.id)
    # The NOTIFY reached A, which stopped the generation in its tritonserver long before the last step.
    until(lambda: f"video request {video.id} cancelled at step" in replicas.triton_a.log_tail(400), 30,
          "A's tritonserver to stop the generation", every_s=0.1)
    log_a = replicas.a.log_tail()  # by the NOTIFY, or (a missed one) by A's next heartbeat
    assert (f"video job {video.id} deleted on another replica" in log_a
            or f"video job {video.id}: no longer held here" in log_a), log_a[-3000:]


def test_a_job_of_a_killed_replica_is_taken_over_by_b_when_its_lease_expires(replicas: Replicas) -> None:
    client_a, client_b = replicas.a_client(), replicas.b.client()
    video = replicas.created_on_a_running_on_a(client_a)
    until(lambda: client_b.videos.retrieve(video.id).progress >= 5, 60, "A's generation to get going")
    killed = time.monotonic()
    replicas.a.kill()  # mid-job: no heartbeat, no hand-back, only the lease left to expire
    until(lambda: replicas.runs_on(video.id, replicas.b), LEASE_S + 10, "B to take the job over")
    took_over = time.monotonic() - killed
    done = until(lambda: (v := client_b.videos.retrieve(video.id)).status in ("completed", "failed") and v, 120,
                 "the job to end")
    assert done.status == "completed", done.error  # its first loss: run again from the start, not failed
    probe = probe_mp4(client_b.videos.download_content(video.id).content)
    assert (probe["width"], probe["height"], probe["frames"]) == (512, 256, 17)
    assert LEASE_S * 0.5 < took_over < LEASE_S + 10, took_over  # not before the lease could expire


class _CutOff(io.BytesIO):
    """An upload body that runs ``at_half()`` once half of it has been read by the client (mid-stream)."""

    def __init__(self, data: bytes, at_half: Callable[[], None]) -> None:
        super().__init__(data)
        self._half, self._at_half = len(data) // 2, at_half

    def read(self, size: int | None = -1) -> bytes:
        if self._at_half is not None and self.tell() >= self._half:
            self._at_half, at_half = None, self._at_half
            at_half()
        return super().read(size)


def test_a_replica_killed_mid_upload_never_lists_a_partial_file_and_every_finished_one_is_intact(
        replicas: Replicas) -> None:
    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
    client_b = replicas.b.client()
    sent: dict[str, bytes] = {}  # sha256 -> body, of every upload attempted
    finished: dict[str, str] = {}  # file id -> sha256, of every upload that answered 200
    listed: dict[str, int] = {}  # file id -> bytes, of everything B ever listed
    problems: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # B's listing all along: a partial file must never show, not even for a moment
        while not stop.is_set():
            try:
                for f in client_b.files.list():
                    listed.setdefault(f.id, f.bytes)
            except openai.APIError as exc:
                problems.append(f"files.list on B: {exc}")
            stop.wait(0.02)

    def upload(body: bytes, cut: Callable[[], None] | None = None) -> str | None:
        """Uploads ``body`` on A: its file id, or None when A was killed before it answered."""
        sent[sha(body)] = body
        file: Any = body if cut is None else _CutOff(body, cut)
        client_a = replicas.a_client()
        try:
            created = client_a.files.create(file=("big.mp4", file, "video/mp4"), purpose="vision")
        except openai.APIConnectionError:  # A died mid-request (the killer may still be reaping it)
            until(lambda: not replicas.a.alive(), 30, "A to be dead")
            return None
        finished[created.id] = sha(body)
        return created.id

    before = {f.id for f in client_b.files.list()}  # the earlier tests' files
    watcher = threading.Thread(target=watch, name="watch-b", daemon=True)
    watcher.start()
    try:
        small, multipart = upload(padded(clip, 64 * 1024)), upload(padded(clip, 3 * PART))
        assert small and multipart
        # 1. Killed while the body streams in: A only ever staged part of it.
        assert upload(padded(clip, 8 * PART), cut=replicas.a.kill) is None
        # 2. Killed while the staged file goes up to the bucket: a multipart upload in flight, never completed.
        body, answered = padded(clip, 8 * PART), threading.Event()
        replicas.a_client()  # started again after the first kill, before the watch for its multipart upload

        def kill_mid_multipart() -> None:
            while replicas.a.alive() and not answered.is_set():
                if replicas.multipart_in_flight():
                    replicas.a.kill()
                    return
                time.sleep(0.005)

        killer = threading.Thread(target=kill_mid_multipart, name="kill-a", daemon=True)
        killer.start()
        try:
            assert upload(body) is None, "A answered before its multipart upload could be cut"
        finally:
            answered.set()
            killer.join(30)
        assert replicas.multipart_in_flight()  # cut short: the parts sit there, never an object
        assert not replicas.blob_exists(sha(body))
        # The same bytes through B afterwards: one whole object, intact.
        again = client_b.files.create(file=("big.mp4", body, "video/mp4"), purpose="vision")
        finished[again.id] = sha(body)
        time.sleep(0.1)  # one more round of B's listing
    finally:
        stop.set()
        watcher.join(10)
    assert not problems, problems
    assert set(finished) <= set(listed), "a finished upload was not listed on B"
    for file_id in set(listed) - before:  # every file ever listed, downloaded through B: the whole of one upload
        content = client_b.files.content(file_id).content
        assert sha(content) in sent and len(content) == listed[file_id], (file_id, len(content))
        assert file_id not in finished or sha(content) == finished[file_id]
    assert sorted(f.id for f in replicas.a_client().files.list()) == sorted(f.id for f in client_b.files.list())
