"""The video job queue: create, run (at most N at once), report progress, cancel, and the sync path.

Each job is an asyncio task that waits for one of ``videos_concurrency`` slots, streams
the model's progress, and lands the mp4 in the :class:`~openai_frontend.videos.store.JobStore`.
Progress lives in memory while a job runs (a restart fails running jobs anyway) and
status changes are written through, so GET sees the same job before and after a restart.
``POST /v1/videos/sync`` takes a slot like any job, without a record.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from openai_frontend.errors import OpenAIError, from_exception
from openai_frontend.videos.backend import VideoBackend, VideoEvent, VideoRequest
from openai_frontend.videos.store import JobRecord, JobStore, Order, new_job_id
from video_pipeline.errors import PipelineError
from video_pipeline.generation.params import Capabilities, GenerationParams, format_seconds

logger = logging.getLogger(__name__)

# Progress: denoising fills 0..90 %, decoding 90, encoding 95, a finished job 100.
_DENOISE_SHARE = 90


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
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.store.recover, self.ttl_s)
        await asyncio.to_thread(self.store.sweep)
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

    async def create(self, params: GenerationParams, image: bytes | None, *, model: str, scope: str = "") -> JobRecord:
        """A queued job for ``params``; it starts as soon as a slot is free."""
        self._check_queue()
        record = JobRecord(
            id=new_job_id(), status="queued", model=model, prompt=params.prompt, size=params.size,
            seconds=format_seconds(params.seconds),
            params={**params.to_json(), "input_reference": image is not None}, created_at=int(time.time()),
            scope=scope,
        )
        await asyncio.to_thread(self.store.add, record)
        live = self._live[record.id] = _Live()
        request = VideoRequest(record.id, params, image)
        self._queued.add(record.id)  # counted now, so a burst of creates cannot overfill the queue
        live.task = asyncio.create_task(self._run(record.id, request, live), name=f"video-job-{record.id}")
        logger.info("video job %s queued (%s, %d frames, %d steps)", record.id, params.size, params.num_frames,
                    params.num_inference_steps)
        return record

    async def _run(self, job_id: str, request: VideoRequest, live: _Live) -> None:
        try:
            async with self._slot(record_id=job_id):
                await asyncio.to_thread(self.store.mark, job_id, "in_progress", progress=0)
                final = await self._generate(request, live)
                saved = await asyncio.to_thread(self.store.complete, job_id, final.video or b"", final.info,
                                                self.ttl_s)
            logger.info("video job %s %s", job_id, "completed" if saved else "finished after it was deleted")
        except asyncio.CancelledError:
            logger.info("video job %s cancelled", job_id)
            raise
        except Exception as exc:  # noqa: BLE001 - the job's failure, recorded for its owner
            err = from_exception(exc)
            logger.info("video job %s failed: %s", job_id, err.message)
            await asyncio.to_thread(self.store.mark, job_id, "failed", progress=live.progress,
                                    error={"code": err.code, "message": err.message}, ttl_s=self.ttl_s)
        finally:
            self._live.pop(job_id, None)
            self._queued.discard(job_id)

    async def _generate(self, request: VideoRequest, live: _Live | None = None) -> VideoEvent:
        async with aclosing(self.backend.generate(request)) as events:
            async for event in events:
                if event.video is not None:
                    return event
                if live is not None:
                    live.progress = max(live.progress, progress_of(event))
        raise PipelineError("the video model ended the request without a video")

    def _check_queue(self) -> None:
        waiting = len(self._queued) + self._sync_waiting
        if waiting >= self.max_queued:
            raise OpenAIError(429, f"{waiting} video jobs are waiting already; try again later",
                              code="too_many_requests", type_="rate_limit_error")

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

    async def delete(self, job_id: str, scope: str = "") -> bool:
        """Forget a job and its output; a queued or running one is cancelled first (the model is told to
        stop, and this waits at most ``cancel_timeout_s`` for that)."""
        if await self.get(job_id, scope) is None:
            return False
        self._queued.discard(job_id)  # a task cancelled before its first step never runs its finally
        live = self._live.get(job_id)
        if live is not None and live.task is not None and not live.task.done():
            live.task.cancel()
            done, _ = await asyncio.wait({live.task}, timeout=self.cancel_timeout_s)
            if not done:
                logger.warning("video job %s did not stop within %.0f s of its deletion", job_id,
                               self.cancel_timeout_s)
        self._live.pop(job_id, None)
        return await asyncio.to_thread(self.store.delete, job_id, scope)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                await asyncio.to_thread(self.store.sweep)  # off the event loop: requests go on meanwhile
            except Exception:
                logger.exception("videos: sweep failed")
