"""The Videos API: POST /v1/videos (a job), POST /v1/videos/sync (the mp4 at once), GET /v1/videos[/{id}],
GET /v1/videos/{id}/content, DELETE /v1/videos/{id}. OpenAI's shapes, vLLM-Omni's extension fields."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.files.full import store_full
from openai_frontend.routers.common import scope_of
from openai_frontend.routers.files import remote_file_response
from openai_frontend.sse import until_disconnected
from openai_frontend.videos.requests import jobs_of, read_video_request
from openai_frontend.videos.store import JobRecord

router = APIRouter()

#: How often the OpenAI SDK's poll() should ask about a running job (its openai-poll-after-ms header).
POLL_AFTER_MS = 500


@router.post("/v1/videos")
async def create_video(request: Request) -> Response:
    scope = scope_of(request)  # refused before the body is read
    params, image, model = await read_video_request(request)
    jobs = jobs_of(request)
    try:
        record = await jobs.create(params, image, model=model, scope=scope)
    except (OSError, sqlite3.OperationalError) as exc:  # the job's row is not written: nothing to undo
        raise store_full(exc, where=jobs.store.db.name, refused="the video job cannot be recorded", param=None) from None
    return JSONResponse(jobs.view(record))


@router.post("/v1/videos/sync")
async def create_video_sync(request: Request) -> Response:
    scope_of(request)  # the same tenant rules as every route here, though nothing is stored
    params, image, _model = await read_video_request(request)
    final = await until_disconnected(request, jobs_of(request).generate_now(params, image))
    info = final.info
    headers = {f"x-video-{k.replace('_', '-')}": str(info[k]) for k in ("seed", "num_frames", "fps", "seconds")
               if k in info}
    return Response(final.video or b"", media_type="video/mp4", headers=headers)


@router.get("/v1/videos")
async def list_videos(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
                      order: Literal["asc", "desc"] = "desc") -> Response:
    jobs = jobs_of(request)
    try:
        records, more = await jobs.list(scope=scope_of(request), after=after, limit=limit, order=order)
    except KeyError:
        raise bad_request(f"after: no such video: {after!r}", "after") from None
    data = [jobs.view(r) for r in records]
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": more})


@router.get("/v1/videos/{video_id}")
async def retrieve_video(request: Request, video_id: str) -> Response:
    record = await _job(request, video_id)
    headers = {"openai-poll-after-ms": str(POLL_AFTER_MS)} if record.status in ("queued", "in_progress") else {}
    return JSONResponse(jobs_of(request).view(record), headers=headers)


@router.get("/v1/videos/{video_id}/content")
async def video_content(request: Request, video_id: str, variant: str = "video") -> Response:
    if variant != "video":
        raise OpenAIError(400, f"variant: {variant[:40]!r} is not available; this server keeps the video only",
                          param="variant", code="unsupported_parameter")
    record = await _job(request, video_id)
    if record.status != "completed":
        raise OpenAIError(409, f"video {video_id} is {record.status}; its content exists once it is completed",
                          param="video_id", code="video_not_ready")
    store = jobs_of(request).store
    reader = store.output_reader(record)
    if reader is not None:  # in S3: a ranged GetObject streamed through, from any replica
        response = await remote_file_response(reader, "video/mp4", f"{record.id}.mp4", request.headers.get("range"))
        if response is None:
            raise _not_found(video_id)
        response.headers["x-video-bytes"] = str(reader.size)
        return response
    path = store.output_path(record.id)
    try:
        # Opened before answering: a job deleted or expired meanwhile is a 404, not a broken stream.
        size = (await asyncio.to_thread(path.stat)).st_size
    except FileNotFoundError:
        raise _not_found(video_id) from None
    # FileResponse streams from disk in chunks and answers Range requests (206, multipart ranges, 416).
    return FileResponse(path, media_type="video/mp4", filename=f"{record.id}.mp4",
                        headers={"x-video-bytes": str(size)})


@router.delete("/v1/videos/{video_id}")
async def delete_video(request: Request, video_id: str) -> Response:
    if not await jobs_of(request).delete(video_id, scope_of(request)):
        raise _not_found(video_id)
    return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})


async def _job(request: Request, video_id: str) -> JobRecord:
    record = await jobs_of(request).get(video_id, scope_of(request))
    if record is None:
        raise _not_found(video_id)
    return record


def _not_found(video_id: str) -> OpenAIError:
    return OpenAIError(404, f"no such video: {video_id[:80]!r}", param="video_id", code="video_not_found")

