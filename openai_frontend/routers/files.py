"""The Files API: POST/GET /v1/files, GET/DELETE /v1/files/{id}, GET /v1/files/{id}/content."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.files.store import BlobReader, FileStore, QuotaExceeded
from openai_frontend.files.upload import check_content, clean_filename, receive
from openai_frontend.media.urls import file_not_found
from openai_frontend.routers.common import scope_of, service_of

router = APIRouter()

#: OpenAI's documented purposes; any of them may hold media here.
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
# expires_after[seconds] bounds, as OpenAI documents them (1 hour .. 30 days).
_MIN_TTL, _MAX_TTL = 3600, 30 * 24 * 3600
# Multipart framing and the small fields on top of the file itself.
_FORM_OVERHEAD = 64 * 1024


def store_of(request: Request) -> FileStore:
    return request.app.state.files


@router.post("/v1/files")
async def create_file(request: Request) -> Response:
    settings = service_of(request).settings
    store = store_of(request)
    cap = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap + _FORM_OVERHEAD:
        raise OpenAIError(413, f"file: the body is {declared} bytes; the upload limit is {cap} bytes",
                          param="file", code="file_too_large")
    upload = await receive(request.stream(), request.headers.get("content-type", ""), store.staging_dir(), cap)
    try:
        part = upload.files.get("file")
        if part is None:
            if "file" in upload.fields:
                raise bad_request("file: must be a file part (curl -F file=@path)", "file")
            raise OpenAIError(400, "file: required", param="file", code="missing_required_parameter")
        staged = part.staged
        purpose = upload.fields.get("purpose")
        if not purpose:
            raise OpenAIError(400, "purpose: required", param="purpose", code="missing_required_parameter")
        if purpose not in PURPOSES:
            raise bad_request(f"purpose: {purpose[:40]!r} is not one of {', '.join(PURPOSES)}", "purpose")
        filename = clean_filename(part.filename)
        if staged.bytes == 0:
            raise bad_request("file: the file is empty", "file", code="empty_file")
        expires_at = _expires_at(upload.fields, settings.files_ttl_s)
        mime = await asyncio.to_thread(check_content, staged, part.head, part.content_type)
        record = await asyncio.to_thread(store.add, staged, filename=filename, purpose=purpose, mime=mime,
                                         expires_at=expires_at, scope=scope_of(request))
    except QuotaExceeded as exc:
        raise OpenAIError(413, f"file: {exc}", param="file", code="file_too_large") from None
    finally:
        upload.discard()  # a no-op once the store has taken the file
    service_of(request).metrics.upload_bytes.inc(record.bytes)
    return JSONResponse(record.openai())


def _expires_at(fields: dict[str, str], default_ttl: int) -> int | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return int(time.time()) + default_ttl if default_ttl else None
    if anchor != "created_at":
        raise bad_request("expires_after[anchor]: must be created_at", "expires_after.anchor")
    if seconds is None or not seconds.strip().isdigit() or not _MIN_TTL <= int(seconds) <= _MAX_TTL:
        raise bad_request(f"expires_after[seconds]: must be an integer from {_MIN_TTL} to {_MAX_TTL}",
                          "expires_after.seconds")
    return int(time.time()) + int(seconds)


@router.get("/v1/files")
async def list_files(request: Request, after: str | None = None, limit: int = Query(10000, ge=1, le=10000),
                     order: Literal["asc", "desc"] = "desc", purpose: str | None = None) -> Response:
    store = store_of(request)
    try:
        records, more = await asyncio.to_thread(store.list, scope=scope_of(request), purpose=purpose, after=after,
                                                limit=limit, order=order)
    except KeyError:
        raise bad_request(f"after: no such file: {after!r}", "after") from None
    data = [r.openai() for r in records]
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": more})


@router.get("/v1/files/{file_id}")
async def retrieve_file(request: Request, file_id: str) -> Response:
    record = await asyncio.to_thread(store_of(request).get, file_id, scope_of(request))
    if record is None:
        raise file_not_found(file_id)
    return JSONResponse(record.openai())


@router.get("/v1/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> Response:
    store = store_of(request)
    record = await asyncio.to_thread(store.get, file_id, scope_of(request), touch=True)
    if record is None:
        raise file_not_found(file_id)
    reader = store.reader(record)
    if reader is not None:  # a remote blob (S3): a ranged GetObject streamed through
        response = await remote_file_response(reader, record.mime, record.filename, request.headers.get("range"))
    else:
        response = await stored_file_response(store.blob_path(record), record.mime, record.filename)
    if response is None:  # evicted or deleted since the lookup
        raise file_not_found(file_id)
    return response


async def stored_file_response(path: Path, media_type: str, filename: str) -> FileResponse | None:
    """A streamed response of a stored blob with HTTP Range support (206, multipart ranges, 416), or None
    when it is gone. The blob is opened before answering, so a delete or an eviction while it streams
    cannot cut the response short: the open descriptor keeps the bytes (read back through /proc/self/fd)."""
    try:
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    return FileResponse(f"/proc/self/fd/{fd}", stat_result=os.fstat(fd), media_type=media_type, filename=filename,
                        background=BackgroundTask(os.close, fd))


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


async def remote_file_response(reader: BlobReader, media_type: str, filename: str,
                               range_header: str | None) -> Response | None:
    """A streamed response of a remote blob: the whole of it (200), one range (206) or 416; None when the blob
    is gone. One range only: a multi-range or malformed Range header gets the whole blob, as HTTP allows."""
    size = reader.size
    first, last, status = 0, size - 1, 200
    m = _RANGE.fullmatch(range_header.strip()) if range_header else None
    if m is not None and (m[1] or m[2]):
        if m[1]:
            first, last = int(m[1]), min(int(m[2]), size - 1) if m[2] else size - 1
        else:  # a suffix: the last N bytes
            first = max(0, size - int(m[2]))
        if first >= size or first > last:
            return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
        status = 206
    try:
        chunks = await asyncio.to_thread(reader.open, first, last)
    except FileNotFoundError:
        return None
    quoted = quote(filename)  # as FileResponse names the local blobs
    disposition = f'attachment; filename="{filename}"' if quoted == filename else f"attachment; filename*=utf-8''{quoted}"
    headers = {"accept-ranges": "bytes", "content-length": str(last - first + 1), "content-disposition": disposition}
    if status == 206:
        headers["content-range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(iterate_in_threadpool(chunks), status_code=status, media_type=media_type,
                             headers=headers)


@router.delete("/v1/files/{file_id}")
async def delete_file(request: Request, file_id: str) -> Response:
    deleted = await asyncio.to_thread(store_of(request).delete, file_id, scope_of(request))
    if not deleted:
        raise file_not_found(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
