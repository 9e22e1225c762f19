"""The FastAPI app: ``create_app(settings, backend)``.

Tests pass a fake backend; the launcher passes a
:class:`~openai_frontend.backend.triton.TritonBackend`. Every error leaves as
OpenAI's error object; a traceback never reaches a client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from openai_frontend.backend.base import Backend
from openai_frontend.backend.pool import TritonPool, video_backend_for_pool
from openai_frontend.errors import OpenAIError, from_exception
from openai_frontend.files.store import FileStore, open_file_store
from openai_frontend.logging_config import RequestIdMiddleware
from openai_frontend.media.fetch import media_client
from openai_frontend.media.urls import MediaFetcher
from openai_frontend.metrics import Metrics, MetricsMiddleware
from openai_frontend.routers import (
    chat,
    completions,
    files,
    health,
    models,
    responses,
    tokenize,
    uploads,
    version,
    videos,
)
from openai_frontend.service import Service
from openai_frontend.settings import Settings
from openai_frontend.sse import ClientGone
from openai_frontend.uploads.store import open_uploads
from openai_frontend.videos.backend import VideoBackend, video_backend_for
from openai_frontend.videos.jobs import open_job_manager
from video_pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

# Not a real HTTP status a client sees (it is gone); nginx's "client closed request", for the log.
CLIENT_CLOSED = 499


def create_app(settings: Settings, backend: Backend, *, http: httpx.AsyncClient | None = None,
               store: FileStore | None = None, video_backend: VideoBackend | None = None) -> FastAPI:
    """The OpenAI-compatible app on ``backend``; ``http`` fetches media URLs (one is made if not given),
    ``store`` keeps uploaded files (the one the settings name if not given: by default a
    :class:`~openai_frontend.files.store.LocalFileStore` in ``settings.files_dir``),
    ``video_backend`` generates videos (the same tritonserver's video_generator if not given)."""
    http = http or media_client(settings)  # every connection checked by the settings' address policy
    metrics = Metrics()
    owns_store = store is None
    store = store or open_file_store(settings)  # SQLite + files_dir unless database_url / files_backend=s3
    upload_store = open_uploads(store)  # /v1/uploads: its tables in the store's database, parts beside its blobs
    # Finished videos go where uploads go: the bucket of files_backend=s3 (any replica can serve them), else files_dir.
    objects = getattr(getattr(store, "blobs", None), "objects", None)
    pool = backend if isinstance(backend, TritonPool) else None  # several tritonservers
    if pool is not None:
        pool.use_metrics(metrics)
        video_backend = video_backend or video_backend_for_pool(pool)
    jobs = open_job_manager(settings, video_backend or video_backend_for(backend), objects)
    metrics.video_jobs_queued.set_function(jobs.queued_count)  # read at scrape time
    metrics.video_jobs_running.set_function(jobs.running_count)

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(settings.files_sweep_s)
            try:
                await asyncio.to_thread(store.sweep)  # off the event loop: requests go on meanwhile
                if upload_store is not None:
                    await asyncio.to_thread(upload_store.sweep)  # expired Uploads and their parts
            except Exception:
                logger.exception("files: sweep failed")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(sweep_forever(), name="files-sweeper")
        if pool is not None:
            await pool.start()  # readiness probes of every endpoint, in the background
        await jobs.start()  # embedded: jobs a previous process left running are marked failed
        yield
        sweeper.cancel()
        with suppress(asyncio.CancelledError):
            await sweeper
        await jobs.shutdown()
        if owns_store:
            await asyncio.to_thread(store.close)
        await http.aclose()
        await backend.close()

    app = FastAPI(title="video-llm-triton OpenAI-compatible API", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = Service(settings, backend, MediaFetcher(settings, http, store), metrics)
    app.state.files = store
    app.state.uploads = upload_store
    app.state.videos = jobs
    app.state.started_at = int(time.time())
    for module in (chat, responses, completions, tokenize, version, files, uploads, models, health, videos):
        app.include_router(module.router)
    if settings.playground:
        from openai_frontend import playground

        app.include_router(playground.router)

    def answer(request: Request, err: OpenAIError) -> JSONResponse:
        metrics.error(request.url.path, err.code)
        if err.status >= 500:
            logger.warning("%s %s -> %d %s", request.method, request.url.path, err.status, err.message)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(OpenAIError)
    async def on_openai_error(request: Request, exc: OpenAIError) -> Response:
        return answer(request, exc)

    @app.exception_handler(PipelineError)
    async def on_pipeline_error(request: Request, exc: PipelineError) -> Response:
        return answer(request, from_exception(exc))

    @app.exception_handler(ClientGone)
    async def on_client_gone(request: Request, exc: ClientGone) -> Response:
        logger.info("%s %s: client disconnected; request cancelled", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return answer(request, OpenAIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                           code=code))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        return answer(request, OpenAIError(400, str(exc.errors()[0].get("msg", "invalid request"))))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return answer(request, from_exception(exc))

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)  # added last: outermost, so every log line of a request has its id
    return app
