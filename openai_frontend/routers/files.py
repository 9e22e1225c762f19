"""The Files API: POST/GET /v1/files, GET/DELETE /v1/files/{id}, GET /v1/files/{id}/content."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool
from starlette.types import Receive, Scope, Send

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.files.full import store_full
from openai_frontend.files.store import BlobReader, FileStore, QuotaExceeded
from openai_frontend.files.upload import check_content, clean_filename, receive
from openai_frontend.media.urls import file_not_found
from openai_frontend.routers.common import scope_of, service_of

logger = logging.getLogger(__name__)
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
    scope = scope_of(request)  # refused before the body is read
    cap = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap + _FORM_OVERHEAD:
        raise OpenAIError(413, f"file: the body is {declared} bytes; the upload limit is {cap} bytes",
                          param="file", code="file_too_large")
    try:
        upload = await receive(request.stream(), request.headers.get("content-type", ""), store.staging_dir(), cap)
    except OSError as exc:  # receive() has removed what it staged
        raise store_full(exc, store) from None
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
        ttl_s = _ttl_s(upload.fields, settings.files_ttl_s)
        mime = await asyncio.to_thread(check_content, staged, part.head, part.content_type)
        record = await asyncio.to_thread(store.add, staged, filename=filename, purpose=purpose, mime=mime,
                                         ttl_s=ttl_s, scope=scope)
    except QuotaExceeded as exc:
        raise OpenAIError(413, f"file: {exc}", param="file", code="file_too_large") from None
    except (OSError, sqlite3.OperationalError) as exc:
        raise store_full(exc, store) from None
    finally:
        upload.discard()  # a no-op once the store has taken the file
    service_of(request).metrics.upload_bytes.inc(record.bytes)
    return JSONResponse(record.openai())


def _ttl_s(fields: dict[str, str], default_ttl: int) -> int | None:
    """Seconds from ``created_at`` to expiry (None: never); the store adds them to the created_at it records."""
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return default_ttl or None
    if anchor != "created_at":
        raise bad_request("expires_after[anchor]: must be created_at", "expires_after.anchor")
    if seconds is None or not seconds.strip().isdigit() or not _MIN_TTL <= int(seconds) <= _MAX_TTL:
        raise bad_request(f"expires_after[seconds]: must be an integer from {_MIN_TTL} to {_MAX_TTL}",
                          "expires_after.seconds")
    return int(seconds)


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


# More ranges than this in one header is a broken client or an attack (RFC 9110 14.2): the whole body then.
_MAX_RANGES = 100


class Unsatisfiable(Exception):
    """A valid Range header none of whose ranges overlaps the representation (RFC 9110 14.1.2)."""


def parse_range(header: str | None, size: int) -> list[tuple[int, int]]:
    """The byte ranges ``(first, last)`` (inclusive, clamped to ``size``) a Range header asks for, as RFC 9110
    14 reads it: ``[]`` means "send the whole body": no header, another unit, an invalid ranges-specifier
    (``bytes=10-5``, garbage) or too many ranges, all of which a server ignores; :class:`Unsatisfiable` when the
    header is valid but no range starts inside the body (``bytes=99999-`` on a shorter one): a 416."""
    if not header:
        return []
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return []
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) > _MAX_RANGES:
        return []
    ranges: list[tuple[int, int]] = []
    for part in parts:
        m = _RANGE_SPEC.fullmatch(part)
        if m is None:
            return []  # one bad range-spec makes the whole ranges-specifier invalid
        first, last = m[1], m[2]
        if first:
            if last and int(last) < int(first):
                return []
            if int(first) < size:
                ranges.append((int(first), min(int(last), size - 1) if last else size - 1))
        elif last:  # a suffix: the last N bytes
            if int(last) > 0 and size > 0:
                ranges.append((max(0, size - int(last)), size - 1))
        else:
            return []  # "bytes=-": neither bound
    if not ranges:
        raise Unsatisfiable
    ranges.sort()
    merged = [ranges[0]]
    for first, last in ranges[1:]:
        if first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


_RANGE_SPEC = re.compile(r"(\d*)[ \t]*-[ \t]*(\d*)")


def range_not_satisfiable(size: int) -> JSONResponse:
    """416 with ``Content-Range: bytes */<size>`` (RFC 9110 15.5.17) and an OpenAI-shaped body."""
    err = OpenAIError(416, f"Range: no range of it starts inside the file's {size} bytes", param="Range",
                      code="range_not_satisfiable")
    return JSONResponse(err.body(), status_code=416, headers={"content-range": f"bytes */{size}"})


class _BlobFileResponse(FileResponse):
    """A FileResponse of an open descriptor that closes it however the response ends (sent, refused, the client
    gone, an error mid-body), reading the Range header as :func:`parse_range` does (416s in OpenAI's shape)."""

    def __init__(self, fd: int, **kwargs: Any) -> None:
        self._fd = fd
        super().__init__(f"/proc/self/fd/{fd}", stat_result=os.fstat(fd), **kwargs)

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        # Called by FileResponse only for a GET whose If-Range (if any) matches; Starlette's ends are exclusive.
        return [(first, last + 1) for first, last in parse_range(http_range, file_size)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Unsatisfiable:  # raised before anything was sent
            await range_not_satisfiable(self.stat_result.st_size)(scope, receive, send)
        finally:
            self.close()

    def close(self) -> None:
        """Closes the descriptor (once)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __del__(self) -> None:  # a response built but never sent (the app failed before sending it)
        self.close()


async def stored_file_response(path: Path, media_type: str, filename: str) -> FileResponse | None:
    """A streamed response of a stored blob with HTTP Range support (206, multipart ranges, 416), or None
    when it is gone. The blob is opened before answering, so a delete or an eviction while it streams
    cannot cut the response short: the open descriptor keeps the bytes (read back through /proc/self/fd);
    it is closed on every path, a refused range and a client gone mid-body included."""
    try:
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _BlobFileResponse(fd, media_type=media_type, filename=filename)
    except BaseException:
        os.close(fd)
        raise


async def remote_file_response(reader: BlobReader, media_type: str, filename: str,
                               range_header: str | None) -> Response | None:
    """A streamed response of a remote blob: the whole of it (200), one range (206) or 416; None when the blob
    is gone. One range only: several ranges get the whole blob, as HTTP allows (RFC 9110 14.2)."""
    size = reader.size
    try:
        ranges = parse_range(range_header, size)
    except Unsatisfiable:
        return range_not_satisfiable(size)
    first, last, status = 0, size - 1, 200
    if len(ranges) == 1:
        (first, last), status = ranges[0], 206
    try:
        chunks = await asyncio.to_thread(reader.open, first, last)
    except FileNotFoundError:
        return None
    quoted = quote(filename)  # as FileResponse names the local blobs
    disposition = f'attachment; filename="{filename}"' if quoted == filename else f"attachment; filename*=utf-8''{quoted}"
    headers = {"accept-ranges": "bytes", "content-length": str(last - first + 1), "content-disposition": disposition}
    if status == 206:
        headers["content-range"] = f"bytes {first}-{last}/{size}"
    return _ClosingStreamingResponse(chunks, status_code=status, media_type=media_type, headers=headers)


class _ClosingStreamingResponse(StreamingResponse):
    """Streams a blob reader's chunks and closes the reader (its HTTP connection to the bucket) however the
    response ends: finished, the client gone, or an error."""

    def __init__(self, chunks: Iterator[bytes], **kwargs: Any) -> None:
        super().__init__(iterate_in_threadpool(chunks), **kwargs)
        self._chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                await asyncio.to_thread(close)


@router.delete("/v1/files/{file_id}")
async def delete_file(request: Request, file_id: str) -> Response:
    deleted = await asyncio.to_thread(store_of(request).delete, file_id, scope_of(request))
    if not deleted:
        raise file_not_found(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
