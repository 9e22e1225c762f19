"""The video job queue: create, run (at most N at once), report progress, cancel, and the sync path.

:class:`JobManager` (the embedded store): each job is an asyncio task that waits for one of
``videos_concurrency`` slots, streams the model's progress, and lands the mp4 in the
:class:`~openai_frontend.videos.store.JobStore`. Progress lives in memory while a job runs (a
restart fails running jobs anyway) and status changes are written through, so GET sees the same
job before and after a restart. ``POST /v1/videos/sync`` takes a slot like any job, without a record.

:class:`SharedJobManager` (``database_url``, several replicas): the queue is the table. A job is
queued as a row; any replica claims the oldest one (``FOR UPDATE SKIP LOCKED``) while fewer than
``videos_concurrency`` generations of all replicas hold a live lease, and renews its leases every
``videos_lease_s / 3`` seconds. Progress is written to the row, so every replica's GET shows it.
DELETE on any replica removes the row and NOTIFYs the one running it, which cancels the
generation (a missed notification is caught by its next heartbeat: the row is gone). A replica
that stops renewing (killed, partitioned) loses its jobs once their leases expire: another
replica queues them again (twice at most, then they fail); a starting replica touches nothing
else, so it never fails another replica's live job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openai_frontend.errors import OpenAIError, from_exception
from openai_frontend.storage.db import StoreUnavailable
from openai_frontend.videos import stills
from openai_frontend.videos.backend import VideoBackend, VideoEvent, VideoRequest
from openai_frontend.videos.stills import Variant
from openai_frontend.videos.store import REMIXED_FROM, JobRecord, JobStore, Order, SharedJobStore, new_job_id
from video_pipeline.errors import PipelineError
from video_pipeline.generation.params import Capabilities, GenerationParams, format_seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

# Progress: denoising fills 0..90 %, decoding 90, encoding 95, a finished job 100.
_DENOISE_SHARE = 90


def queue_full(waiting: int) -> OpenAIError:
    return OpenAIError(429, f"{waiting} video jobs are waiting already; try again later", code="too_many_requests",
                       type_="rate_limit_error")


def progress_of(event: VideoEvent) -> int:
    """The job's 0..99 progress while the model works on it."""
    if event.stage == "encoding":
        return 95
    if event.num_steps <= 0:
        return 0
    return min(_DENOISE_SHARE, _DENOISE_SHARE * event.step // event.num_steps)


@dataclass
class _Live:
    """A job of this process: its task and its progress."""

    task: asyncio.Task[None] | None = None
    progress: int = 0


class JobManager:
    """Owns the running video jobs of one app; see the module docstring."""

    def __init__(self, store: JobStore, backend: VideoBackend, *, concurrency: int, max_queued: int, ttl_s: int,
                 cancel_timeout_s: float, sweep_s: float) -> None:
        self.store = store
        self.backend = backend
        self.max_queued = max_queued
        self.ttl_s = ttl_s
        self.cancel_timeout_s = cancel_timeout_s
        self.sweep_s = sweep_s
        self._slots = asyncio.Semaphore(concurrency)
        self._queued: set[str] = set()  # jobs waiting for a slot
        self._sync_waiting = 0  # sync requests waiting for a slot
        self._live: dict[str, _Live] = {}
        self._still_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.store.recover, self.ttl_s)
        await self._sweep_once()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="videos-sweeper")

    async def shutdown(self) -> None:
        """Stops the sweeper and every job of this process; their records stay as they are, and the
        next start marks them failed (the same path as after a crash)."""
        tasks = [t for t in (self._sweeper, *(live.task for live in self._live.values())) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.cancel_timeout_s)
        await asyncio.to_thread(self.store.close)

    def queued_count(self) -> int:
        """Jobs and sync requests waiting for a slot (the queue depth metric reads it at scrape time)."""
        return len(self._queued) + self._sync_waiting

    def running_count(self) -> int:
        """Jobs holding a slot."""
        return len(self._live) - len(self._queued)

    async def capabilities(self) -> Capabilities:
        return await self.backend.capabilities()

    # --- jobs ----------------------------------------------------------------------------------------

    async def create(self, params: GenerationParams, image: bytes | None, *, model: str, scope: str = "",
                     seconds: str | None = None, remixed_from: str | None = None) -> JobRecord:
        """A queued job for ``params``; it starts as soon as a slot is free. ``seconds``: what the video object
        shows (what the client asked; the clip's length when None); ``remixed_from``: the source of a remix."""
        self._check_queue()
        record = new_record(params, image, model=model, scope=scope, seconds=seconds, remixed_from=remixed_from)
        await asyncio.to_thread(self.store.add, record)
        live = self._live[record.id] = _Live()
        request = VideoRequest(record.id, params, image)
        self._queued.add(record.id)  # counted now, so a burst of creates cannot overfill the queue
        live.task = asyncio.create_task(self._run(record.id, request, live), name=f"video-job-{record.id}")
        logger.info("video job %s queued (%s, %d frames, %d steps)", record.id, params.size, params.num_frames,
                    params.num_inference_steps)
        return record

    async def _run(self, job_id: str, request: VideoRequest, live: _Live) -> None:
        async def in_a_slot() -> bool:
            async with self._slot(record_id=job_id):
                await asyncio.to_thread(self.store.mark, job_id, "in_progress", progress=0)
                final = await self._generate(request, live)
                return await asyncio.to_thread(self.store.complete, job_id, final.video or b"", final.info,
                                               self.ttl_s)

        try:
            await self._conclude(job_id, live, in_a_slot(), gone="finished after it was deleted")
        finally:
            self._live.pop(job_id, None)
            self._queued.discard(job_id)

    async def _conclude(self, job_id: str, live: _Live, work: Awaitable[bool], *, gone: str,
                        owner: str | None = None) -> None:
        """Awaits the job's ``work`` (it generates and stores the video: whether the record was still there to
        take it, else the job is ``gone``) and logs how the job ended; a failure is recorded on the job (while
        ``owner`` still holds it, with one) for its owner to read; a cancellation passes on."""
        try:
            saved = await work
            logger.info("video job %s %s", job_id, "completed" if saved else gone)
        except asyncio.CancelledError:
            logger.info("video job %s cancelled", job_id)
            raise
        except Exception as exc:  # noqa: BLE001 - the job's failure, recorded for its owner
            err = from_exception(exc)
            logger.info("video job %s failed: %s", job_id, err.message)
            await asyncio.to_thread(self.store.mark, job_id, "failed", progress=live.progress,
                                    error={"code": err.code, "message": err.message}, ttl_s=self.ttl_s,
                                    owner=owner)

    async def _generate(self, request: VideoRequest, live: _Live | None = None,
                        on_progress: Callable[[int], Awaitable[None]] | None = None) -> VideoEvent:
        async with aclosing(self.backend.generate(request)) as events:
            async for event in events:
                if event.video is not None:
                    return event
                if live is not None:
                    progress = max(live.progress, progress_of(event))
                    if on_progress is not None and progress != live.progress:
                        await on_progress(progress)
                    live.progress = progress
        raise PipelineError("the video model ended the request without a video")

    def _check_queue(self) -> None:
        waiting = len(self._queued) + self._sync_waiting
        if waiting >= self.max_queued:
            raise queue_full(waiting)

    @asynccontextmanager
    async def _slot(self, *, record_id: str | None = None) -> AsyncIterator[None]:
        """One of the concurrency slots; while waiting for it the request counts as queued
        (a job since its creation, a sync request from here)."""
        if record_id is None:
            self._check_queue()
            self._sync_waiting += 1
        try:
            await self._slots.acquire()
        finally:
            if record_id is None:
                self._sync_waiting -= 1
            else:
                self._queued.discard(record_id)
        try:
            yield
        finally:
            self._slots.release()

    async def generate_now(self, params: GenerationParams, image: bytes | None) -> VideoEvent:
        """``POST /v1/videos/sync``: the finished video, no record; cancelling the caller cancels the generation."""
        async with self._slot():
            return await self._generate(VideoRequest(f"sync-{uuid.uuid4().hex}", params, image))

    # --- stills ----------------------------------------------------------------------------------------

    async def still(self, record: JobRecord, variant: Variant) -> Path | bytes:
        """A completed job's thumbnail or spritesheet: the local file to send, or the bucket's bytes. Made from
        the mp4 the first time it is asked for (once at a time per process), then kept beside it in the store;
        FileNotFoundError when the job or its mp4 is gone meanwhile."""
        key = (record.id, variant.name)
        lock = self._still_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                found = await asyncio.to_thread(self._stored_still, record, variant)
                if found is not None:
                    return found
                data = await asyncio.to_thread(self._make_still, record, variant)
                if not await asyncio.to_thread(self.store.save_still, record.id, variant, data):
                    raise FileNotFoundError(record.id)
                logger.info("video job %s: %s made (%d bytes)", record.id, variant.name, len(data))
                return data if self.store.objects is not None else self.store.still_path(record.id, variant)
        finally:
            if not lock.locked():
                self._still_locks.pop(key, None)

    def _stored_still(self, record: JobRecord, variant: Variant) -> Path | bytes | None:
        if self.store.objects is not None:
            return self.store.read_still(record.id, variant)
        path = self.store.still_path(record.id, variant)
        return path if path.exists() else None

    def _make_still(self, record: JobRecord, variant: Variant) -> bytes:
        return make_still(self.store.read_output(record), record, variant)

    # --- reads and deletion ----------------------------------------------------------------------------

    def view(self, record: JobRecord) -> dict[str, Any]:
        """The OpenAI video object, with the live progress of a running job."""
        live = self._live.get(record.id)
        return record.openai(progress=live.progress if live is not None and record.status == "in_progress" else None)

    async def get(self, job_id: str, scope: str = "") -> JobRecord | None:
        return await asyncio.to_thread(self.store.get, job_id, scope)

    async def list(self, *, scope: str = "", after: str | None = None, limit: int = 20,
                   order: Order = "desc") -> tuple[list[JobRecord], bool]:
        return await asyncio.to_thread(self.store.list, scope=scope, after=after, limit=limit, order=order)

    async def _stop_live(self, job_id: str) -> bool:
        """Cancels this replica's running task of ``job_id`` and waits at most ``cancel_timeout_s`` for it;
        False when this replica runs no such task."""
        live = self._live.get(job_id)
        if live is None or live.task is None or live.task.done():
            return False
        live.task.cancel()
        done, _ = await asyncio.wait({live.task}, timeout=self.cancel_timeout_s)
        if not done:
            logger.warning("video job %s did not stop within %.0f s of its deletion", job_id, self.cancel_timeout_s)
        return True

    async def delete(self, job_id: str, scope: str = "") -> bool:
        """Forget a job and its output; a queued or running one is cancelled first (the model is told to
        stop, and this waits at most ``cancel_timeout_s`` for that)."""
        if await self.get(job_id, scope) is None:
            return False
        self._queued.discard(job_id)  # a task cancelled before its first step never runs its finally
        await self._stop_live(job_id)
        self._live.pop(job_id, None)
        return await asyncio.to_thread(self.store.delete, job_id, scope)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            await self._sweep_once()

    async def _sweep_once(self) -> None:
        try:
            await asyncio.to_thread(self.store.sweep)  # off the event loop: requests go on meanwhile
        except StoreUnavailable as exc:  # the bucket is down: the next sweep tries again
            logger.warning("videos: sweep skipped: %s", exc.message)
        except Exception:
            logger.exception("videos: sweep failed")


# --- several replicas --------------------------------------------------------------------------------------

#: NOTIFY channels: a job to cancel (payload: its id), and "look at the queue" (a job queued, a slot freed).
CANCEL_CHANNEL = "vlt_video_cancel"
WAKE_CHANNEL = "vlt_video_wake"
#: A job whose replica was lost runs again at most this many times in all, then fails.
MAX_ATTEMPTS = 2


class SharedJobManager(JobManager):
    """Jobs in PostgreSQL, shared by replicas; see the module docstring."""

    store: SharedJobStore

    def __init__(self, store: SharedJobStore, backend: VideoBackend, *, concurrency: int, max_queued: int,
                 ttl_s: int, cancel_timeout_s: float, sweep_s: float, lease_s: float,
                 replica: str | None = None) -> None:
        super().__init__(store, backend, concurrency=concurrency, max_queued=max_queued, ttl_s=ttl_s,
                         cancel_timeout_s=cancel_timeout_s, sweep_s=sweep_s)
        self.concurrency = concurrency
        self.lease_s = lease_s
        #: This replica's name in the ``owner`` column.
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._sync: set[str] = set()  # this replica's sync requests, queued or running
        self._counts = (0, 0)  # (waiting, running) of every replica, as of the last heartbeat
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._leases: asyncio.Task[None] | None = None
        self._listener: threading.Thread | None = None
        #: This replica's own channel, NOTIFYed at shutdown so its listener stops at once.
        self._stop_channel = f"vlt_video_stop_{secrets.token_hex(6)}"
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.store.reap, self.ttl_s, MAX_ATTEMPTS)  # expired leases only
        await self._sweep_once()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="videos-sweeper")
        self._leases = asyncio.create_task(self._lease_forever(), name="videos-leases")
        self._listener = threading.Thread(target=self._listen, name="videos-listener", daemon=True)
        self._listener.start()

    async def shutdown(self) -> None:
        """Stops this replica's generations and hands its running jobs back to the queue at once, so another
        replica takes them over without waiting for the leases to expire."""
        self._stop.set()
        tasks = [t for t in (self._sweeper, self._leases, *(live.task for live in self._live.values()))
                 if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.cancel_timeout_s)
        try:
            released = await asyncio.to_thread(self.store.release, self.replica)
            if released:
                logger.info("videos: %d running job(s) handed back to the queue", len(released))
                await asyncio.to_thread(self.store.notify, WAKE_CHANNEL, "")
        except StoreUnavailable as exc:
            logger.warning("videos: could not hand back running jobs (their leases will expire): %s", exc.message)
        if self._listener is not None:
            with contextlib.suppress(StoreUnavailable):  # it stops within its 0.5-s timeout anyway
                await asyncio.to_thread(self.store.notify, self._stop_channel, "")
            await asyncio.to_thread(self._listener.join, 5)
        await asyncio.to_thread(self.store.close)

    def queued_count(self) -> int:
        return self._counts[0]

    def running_count(self) -> int:
        return self._counts[1]

    # --- jobs ----------------------------------------------------------------------------------------

    async def create(self, params: GenerationParams, image: bytes | None, *, model: str, scope: str = "",
                     seconds: str | None = None, remixed_from: str | None = None) -> JobRecord:
        """A queued row; whichever replica has a free slot first runs it."""
        record = new_record(params, image, model=model, scope=scope, seconds=seconds, remixed_from=remixed_from)
        if not await asyncio.to_thread(self.store.enqueue, record, image, self.max_queued):
            raise queue_full(self.max_queued)
        logger.info("video job %s queued (%s, %d frames, %d steps)", record.id, params.size, params.num_frames,
                    params.num_inference_steps)
        self._wake.set()
        await self._notify(WAKE_CHANNEL, "")
        return record

    async def generate_now(self, params: GenerationParams, image: bytes | None) -> VideoEvent:
        """``POST /v1/videos/sync``: waits for a slot of the global cap (counted in the global queue meanwhile)."""
        slot = f"sync-{uuid.uuid4().hex}"
        if not await asyncio.to_thread(self.store.sync_enqueue, slot, self.replica, self.lease_s, self.max_queued):
            raise queue_full(self.max_queued)
        self._sync.add(slot)
        try:
            while not await asyncio.to_thread(self.store.sync_claim, slot, self.concurrency):
                await asyncio.sleep(0.1)
            return await self._generate(VideoRequest(slot, params, image))
        finally:
            self._sync.discard(slot)
            await asyncio.shield(asyncio.to_thread(self.store.sync_done, slot))
            self._wake.set()
            await self._notify(WAKE_CHANNEL, "")

    async def delete(self, job_id: str, scope: str = "") -> bool:
        """Forget a job and its output on any replica; the one running it is told to stop (NOTIFY), and this
        replica waits at most ``cancel_timeout_s`` when it runs the job itself."""
        if await self.get(job_id, scope) is None:
            return False
        deleted = await asyncio.to_thread(self.store.delete, job_id, scope)
        if not await self._stop_live(job_id):
            await self._notify(CANCEL_CHANNEL, job_id)
        return deleted

    async def _run_claimed(self, record: JobRecord, image: bytes | None, live: _Live) -> None:
        job_id = record.id

        async def on_progress(progress: int) -> None:
            try:
                await asyncio.to_thread(self.store.progress, job_id, self.replica, progress)
            except StoreUnavailable as exc:  # shown late, not lost: the next write catches up
                logger.warning("video job %s: progress not written: %s", job_id, exc.message)

        async def generate_and_store() -> bool:
            final = await self._generate(VideoRequest(job_id, params_of(record), image), live, on_progress)
            return await asyncio.to_thread(self.store.complete, job_id, final.video or b"", final.info, self.ttl_s,
                                           self.replica)

        try:
            await self._conclude(job_id, live, generate_and_store(),
                                 gone="finished after it was deleted or taken over", owner=self.replica)
        finally:
            self._live.pop(job_id, None)
            self._wake.set()  # a slot is free: claim the next job (here, or on another replica)
            if not self._stop.is_set():
                asyncio.get_running_loop().create_task(self._notify(WAKE_CHANNEL, ""))

    # --- leases ------------------------------------------------------------------------------------------

    async def _lease_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.lease_s / 3)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.heartbeat()
            except StoreUnavailable as exc:
                logger.warning("videos: heartbeat failed: %s", exc.message)
            except Exception:
                logger.exception("videos: heartbeat failed")

    async def heartbeat(self) -> None:
        """Renew this replica's leases (cancelling jobs it no longer holds), take over expired ones, claim
        queued jobs while the global cap allows."""
        mine = [*self._live, *self._sync]
        held = await asyncio.to_thread(self.store.renew, self.replica, mine, self.lease_s)
        for job_id, live in list(self._live.items()):
            if job_id not in held and live.task is not None and not live.task.done():
                logger.info("video job %s: no longer held here (deleted, or taken over); stopping it", job_id)
                live.task.cancel()
        await asyncio.to_thread(self.store.reap, self.ttl_s, MAX_ATTEMPTS)
        while not self._stop.is_set():
            claimed = await asyncio.to_thread(self.store.claim, self.replica, self.lease_s, self.concurrency)
            if claimed is None:
                break
            record, image = claimed
            logger.info("video job %s claimed by %s", record.id, self.replica)
            live = self._live[record.id] = _Live()
            live.task = asyncio.create_task(self._run_claimed(record, image, live), name=f"video-job-{record.id}")
        self._counts = await asyncio.to_thread(self.store.counts)

    async def _notify(self, channel: str, payload: str) -> None:
        try:
            await asyncio.to_thread(self.store.notify, channel, payload)
        except StoreUnavailable as exc:  # heartbeats catch up: a deleted row stops its job at the next one
            logger.warning("videos: NOTIFY %s failed: %s", channel, exc.message)

    def _listen(self) -> None:
        """LISTEN on its own connection, in a thread; reconnects until shutdown."""
        while not self._stop.is_set():
            try:
                conn = self.store.db.listener()
            except StoreUnavailable:
                self._stop.wait(1.0)
                continue
            try:
                conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                conn.execute(f"LISTEN {WAKE_CHANNEL}")
                self._soon(self._wake.set)  # whatever was missed while not listening
                conn.execute(f"LISTEN {self._stop_channel}")
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=0.5):
                        if self._stop.is_set():
                            break  # shutdown's NOTIFY on the stop channel: no wait for the timeout
                        self._soon(self._on_notify, note.channel, note.payload)
            except Exception as exc:  # noqa: BLE001 - the connection dropped: listen again
                logger.warning("videos: LISTEN connection lost (%s); reconnecting", exc)
                self._stop.wait(1.0)
            finally:
                conn.close()

    def _soon(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == CANCEL_CHANNEL:
            live = self._live.get(payload)
            if live is not None and live.task is not None and not live.task.done():
                logger.info("video job %s deleted on another replica; stopping it", payload)
                live.task.cancel()
        else:
            self._wake.set()


def new_record(params: GenerationParams, image: bytes | None, *, model: str, scope: str, seconds: str | None,
               remixed_from: str | None) -> JobRecord:
    """A queued job's record: the parameters that reproduce it, and what its video object shows."""
    extra: dict[str, Any] = {"input_reference": image is not None}
    if remixed_from is not None:
        extra[REMIXED_FROM] = remixed_from
    return JobRecord(
        id=new_job_id(), status="queued", model=model, prompt=params.prompt, size=params.size,
        seconds=format_seconds(params.seconds) if seconds is None else seconds,
        params={**params.to_json(), **extra}, created_at=int(time.time()), scope=scope,
    )


def make_still(mp4: bytes, record: JobRecord, variant: Variant) -> bytes:
    """``variant`` of a completed job's mp4 (see :mod:`openai_frontend.videos.stills`)."""
    p = record.params
    if variant.name == "thumbnail":
        return stills.thumbnail(mp4, int(p["num_frames"]))
    return stills.spritesheet(mp4, layout_of(record))


def layout_of(record: JobRecord) -> stills.SheetLayout:
    """The spritesheet layout of a job, from its recorded frame count and size."""
    p = record.params
    return stills.sheet_layout(int(p["num_frames"]), int(p["width"]), int(p["height"]))


def params_of(record: JobRecord) -> GenerationParams:
    """The parameters a queued row was created with (``to_json`` plus the prompt)."""
    known = set(GenerationParams.__dataclass_fields__)
    return GenerationParams(prompt=record.prompt, **{k: v for k, v in record.params.items() if k in known})


def open_job_manager(settings: Any, backend: VideoBackend, objects: Any = None) -> JobManager:
    """The embedded manager on ``files_dir``'s SQLite, or the shared one when ``database_url`` is set."""
    kwargs = {"concurrency": settings.videos_concurrency, "max_queued": settings.videos_max_queued,
              "ttl_s": settings.videos_ttl_s, "cancel_timeout_s": settings.videos_cancel_timeout_s,
              "sweep_s": settings.files_sweep_s}
    if settings.database_url:
        from openai_frontend.storage.db import PostgresDatabase

        store = SharedJobStore(settings.files_dir, db=PostgresDatabase(settings.database_url), objects=objects)
        return SharedJobManager(store, backend, lease_s=settings.videos_lease_s, **kwargs)
    return JobManager(JobStore(settings.files_dir, objects=objects), backend, **kwargs)
