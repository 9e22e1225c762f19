"""The Videos API: POST /v1/videos (a job), POST /v1/videos/sync (the mp4 at once), GET /v1/videos[/{id}],
POST /v1/videos/{id}/remix, GET (and HEAD) /v1/videos/{id}/content[?variant=thumbnail|spritesheet],
DELETE /v1/videos/{id}. OpenAI's shapes, vLLM-Omni's extension fields."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.files.full import store_full
from openai_frontend.routers.common import scope_of
from openai_frontend.routers.files import (
    Unsatisfiable,
    parse_range,
    range_not_satisfiable,
    remote_file_response,
)
from openai_frontend.sse import until_disconnected
from openai_frontend.videos.jobs import layout_of
from openai_frontend.videos.requests import (
    VideoAsk,
    jobs_of,
    read_remix_request,
    read_video_request,
    remix_of,
)
from openai_frontend.videos.stills import VARIANTS, VIDEO, Variant
from openai_frontend.videos.store import JobRecord

router = APIRouter()

#: How often the OpenAI SDK's poll() should ask about a running job (its openai-poll-after-ms header).
POLL_AFTER_MS = 500


@router.post("/v1/videos")
async def create_video(request: Request) -> Response:
    scope = scope_of(request)  # refused before the body is read
    return await _queue(request, await read_video_request(request), scope)


@router.post("/v1/videos/{video_id}/remix")
async def remix_video(request: Request, video_id: str) -> Response:
    """OpenAI's remix: a new job from a completed video's parameters with a new prompt (see
    :func:`~openai_frontend.videos.requests.remix_of`)."""
    scope = scope_of(request)
    prompt = await read_remix_request(request)
    source = await _job(request, video_id)
    if source.status != "completed":
        raise bad_request(f"video {video_id} is {source.status}; only a completed video can be remixed",
                          "video_id", code="video_not_ready")
    return await _queue(request, await remix_of(request, source, prompt), scope, remixed_from=source.id)


async def _queue(request: Request, ask: VideoAsk, scope: str, remixed_from: str | None = None) -> Response:
    jobs = jobs_of(request)
    try:
        record = await jobs.create(ask.params, ask.image, model=ask.model, scope=scope, seconds=ask.seconds,
                                   remixed_from=remixed_from)
    except (OSError, sqlite3.OperationalError) as exc:  # the job's row is not written: nothing to undo
        raise store_full(exc, where=jobs.store.db.name, refused="the video job cannot be recorded", param=None) from None
    return JSONResponse(jobs.view(record))


@router.post("/v1/videos/sync")
async def create_video_sync(request: Request) -> Response:
    scope_of(request)  # the same tenant rules as every route here, though nothing is stored
    ask = await read_video_request(request)
    final = await until_disconnected(request, jobs_of(request).generate_now(ask.params, ask.image))
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


@router.api_route("/v1/videos/{video_id}/content", methods=["GET", "HEAD"])
async def video_content(request: Request, video_id: str, variant: str = "video") -> Response:
    """The mp4, or (``variant``) its thumbnail (WebP) or spritesheet (JPEG), made when first asked for; Range
    and HEAD answered as for any file."""
    kind = VARIANTS.get(variant)
    if kind is None:
        raise bad_request(f"variant: {variant[:40]!r} is not one of {', '.join(VARIANTS)}", "variant")
    record = await _job(request, video_id)
    if record.status != "completed":
        raise OpenAIError(409, f"video {video_id} is {record.status}; its content exists once it is completed",
                          param="video_id", code="video_not_ready")
    if kind is not VIDEO:
        return await _still(request, record, kind)
    store = jobs_of(request).store
    reader = store.output_reader(record)
    if reader is not None:  # in S3: a ranged GetObject streamed through, from any replica
        if request.method == "HEAD":
            return _head(reader.size, kind, f"{record.id}.mp4", {"x-video-bytes": str(reader.size)})
        response = await remote_file_response(reader, kind.media_type, f"{record.id}.mp4", request.headers.get("range"))
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
    # FileResponse streams from disk in chunks and answers Range requests (206, multipart ranges, 416) and HEAD.
    return FileResponse(path, media_type=kind.media_type, filename=f"{record.id}.mp4",
                        headers={"x-video-bytes": str(size)})


async def _still(request: Request, record: JobRecord, kind: Variant) -> Response:
    try:
        found = await jobs_of(request).still(record, kind)
    except FileNotFoundError:  # deleted or expired while it was being made
        raise _not_found(record.id) from None
    filename = f"{record.id}.{kind.name}.{kind.suffix}"
    headers = layout_of(record).headers() if kind.name == "spritesheet" else {}
    if isinstance(found, bytes):  # from the bucket: small, so whole, answered here
        return _bytes_response(request, found, kind, filename, headers)
    return FileResponse(found, media_type=kind.media_type, filename=filename, headers=headers)


def _bytes_response(request: Request, data: bytes, kind: Variant, filename: str, headers: dict[str, str]) -> Response:
    """``data`` as FileResponse would send a file of it: 200, one range as 206 (several: the whole, as HTTP
    allows), 416, or HEAD's headers alone."""
    if request.method == "HEAD":
        return _head(len(data), kind, filename, headers)
    try:
        ranges = parse_range(request.headers.get("range"), len(data))
    except Unsatisfiable:
        return range_not_satisfiable(len(data))
    headers = {**headers, "accept-ranges": "bytes", "content-disposition": f'attachment; filename="{filename}"'}
    if len(ranges) != 1:
        return Response(data, media_type=kind.media_type, headers=headers)
    first, last = ranges[0]
    headers["content-range"] = f"bytes {first}-{last}/{len(data)}"
    return Response(data[first:last + 1], status_code=206, media_type=kind.media_type, headers=headers)


def _head(size: int, kind: Variant, filename: str, headers: dict[str, str]) -> Response:
    """HEAD of a remote asset: the headers its GET would have, and no body."""
    return Response(media_type=kind.media_type, headers={
        **headers, "content-length": str(size), "accept-ranges": "bytes",
        "content-disposition": f'attachment; filename="{filename}"'})


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

