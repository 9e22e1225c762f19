"""OpenAI's Uploads API: POST /v1/uploads, /v1/uploads/{id}/parts, /v1/uploads/{id}/complete, /v1/uploads/{id}/cancel.

A large file in parts of at most 64 MB, completed into an ordinary Files API file (the SDK's
``client.uploads.upload_file_chunked``); the rules are in :mod:`openai_frontend.uploads.store`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, StrictInt, StrictStr

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.files.full import store_full
from openai_frontend.files.store import QuotaExceeded
from openai_frontend.files.upload import clean_filename, receive
from openai_frontend.routers.common import scope_of, service_of
from openai_frontend.routers.files import PURPOSES, store_of
from openai_frontend.schemas.common import Strict, read_json, validate
from openai_frontend.uploads.store import MAX_PART_BYTES, MAX_UPLOAD_BYTES, UploadStore, over_declared

logger = logging.getLogger(__name__)
router = APIRouter()

_DATA = "data"
# Multipart framing around a part's bytes.
_FORM_OVERHEAD = 64 * 1024
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
# expires_after.seconds of the file an Upload becomes, as OpenAI bounds it (1 hour .. 30 days), as for /v1/files.
_MIN_TTL, _MAX_TTL = 3600, 30 * 24 * 3600


class ExpiresAfter(Strict):
    anchor: Literal["created_at"]
    seconds: StrictInt = Field(ge=_MIN_TTL, le=_MAX_TTL)


class CreateUpload(Strict):
    """POST /v1/uploads."""

    bytes: StrictInt
    filename: StrictStr
    mime_type: StrictStr
    purpose: StrictStr
    expires_after: ExpiresAfter | None = None


class CompleteUpload(Strict):
    """POST /v1/uploads/{id}/complete."""

    part_ids: list[StrictStr]
    md5: StrictStr | None = None


def uploads_of(request: Request) -> UploadStore:
    uploads = request.app.state.uploads
    if uploads is None:
        raise OpenAIError(404, f"{request.url.path}: this server's file store does not take Uploads",
                          code="not_found")
    return uploads


@router.post("/v1/uploads")
async def create_upload(request: Request) -> Response:
    uploads = uploads_of(request)
    scope = scope_of(request)
    settings = service_of(request).settings
    body = validate(CreateUpload, await read_json(request, settings.max_body_bytes))
    if body.bytes <= 0:
        raise bad_request(f"bytes: must be a positive number of bytes, got {body.bytes}", "bytes")
    if body.bytes > MAX_UPLOAD_BYTES:
        raise bad_request(f"bytes: an Upload is at most {MAX_UPLOAD_BYTES} bytes (8 GB), got {body.bytes}", "bytes",
                          code="upload_too_large")
    if body.bytes > uploads.files.quota_bytes:
        raise OpenAIError(413, f"bytes: {body.bytes} is more than the file store keeps ({uploads.files.quota_bytes} "
                          "bytes, VLT_FILES_QUOTA_BYTES)", param="bytes", code="file_too_large")
    try:
        filename = clean_filename(body.filename)
    except OpenAIError:
        raise bad_request(f"filename: {body.filename[:80]!r} must be a plain name (not empty, no path, no control "
                          "characters, at most 255 characters)", "filename", code="invalid_filename") from None
    if body.purpose not in PURPOSES:
        raise bad_request(f"purpose: {body.purpose[:40]!r} is not one of {', '.join(PURPOSES)}", "purpose")
    mime = body.mime_type.split(";")[0].strip().lower()
    if mime != "application/octet-stream" and not mime.startswith(("video/", "image/", "audio/")):
        raise bad_request(f"mime_type: {body.mime_type[:80]!r} is not video/*, image/*, audio/* or "
                          "application/octet-stream (this server stores media)", "mime_type",
                          code="unsupported_mime_type")
    ttl_s = body.expires_after.seconds if body.expires_after is not None else (settings.files_ttl_s or None)
    try:
        record = await asyncio.to_thread(uploads.create, scope=scope, filename=filename, purpose=body.purpose,
                                         mime=mime, size=body.bytes, file_ttl_s=ttl_s)
    except sqlite3.OperationalError as exc:
        raise store_full(exc, uploads.files, refused="the Upload cannot be created", param=None) from None
    return JSONResponse(record.openai(uploads.clock()))


@router.post("/v1/uploads/{upload_id}/parts")
async def add_part(request: Request, upload_id: str) -> Response:
    uploads = uploads_of(request)
    scope = scope_of(request)
    record = await asyncio.to_thread(uploads.open_for_parts, upload_id, scope)
    left = record.bytes - record.received
    cap = min(MAX_PART_BYTES, left)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_PART_BYTES + _FORM_OVERHEAD:
        raise part_too_large(f"the body is {declared} bytes")
    store = store_of(request)
    try:
        form = await receive(request.stream(), request.headers.get("content-type", ""), store.staging_dir(), cap,
                             file_fields=frozenset({_DATA}))
    except OpenAIError as exc:
        if exc.status == 413 and exc.param == _DATA:  # over the cap while streaming: say which cap
            raise (part_too_large("it is larger") if cap == MAX_PART_BYTES else over_declared(record, record.received)
                   ) from None
        raise
    except OSError as exc:  # receive() has removed what it staged
        raise store_full(exc, store, refused="data: the part cannot be stored", param=_DATA) from None
    try:
        part = form.files.get(_DATA)
        if part is None:
            if _DATA in form.fields:
                raise bad_request("data: must be a file part (the SDK's data=..., curl -F data=@chunk)", _DATA)
            raise OpenAIError(400, "data: required (the part's bytes, as a multipart file field)", param=_DATA,
                              code="missing_required_parameter")
        if part.staged.bytes == 0:
            raise bad_request("data: the part is empty", _DATA, code="empty_file")
        added = await asyncio.to_thread(uploads.add_part, upload_id, scope, part.staged)
    except (OSError, sqlite3.OperationalError) as exc:
        raise store_full(exc, store, refused="data: the part cannot be stored", param=_DATA) from None
    finally:
        form.discard()  # a no-op once the part store has taken it
    return JSONResponse(added.openai())


def part_too_large(what: str) -> OpenAIError:
    return OpenAIError(413, f"data: a part is at most {MAX_PART_BYTES} bytes (64 MB); {what}", param=_DATA,
                       code="part_too_large")


@router.post("/v1/uploads/{upload_id}/complete")
async def complete_upload(request: Request, upload_id: str) -> Response:
    uploads = uploads_of(request)
    scope = scope_of(request)
    body = validate(CompleteUpload, await read_json(request, service_of(request).settings.max_body_bytes))
    if not body.part_ids:
        raise bad_request("part_ids: must name the Upload's parts, in order", "part_ids")
    if body.md5 is not None and not _MD5.fullmatch(body.md5):
        raise bad_request(f"md5: must be 32 hexadecimal digits, got {body.md5[:40]!r}", "md5")
    try:
        record, file = await asyncio.to_thread(uploads.complete, upload_id, scope, body.part_ids, body.md5)
    except QuotaExceeded as exc:
        raise OpenAIError(413, f"bytes: {exc}", param="bytes", code="file_too_large") from None
    except (OSError, sqlite3.OperationalError) as exc:
        raise store_full(exc, uploads.files, refused="the Upload cannot be completed", param=None,
                         hint="free space and complete it again (its parts are kept)") from None
    service_of(request).metrics.upload_bytes.inc(file.bytes)
    return JSONResponse(record.openai(uploads.clock(), file))


@router.post("/v1/uploads/{upload_id}/cancel")
async def cancel_upload(request: Request, upload_id: str) -> Response:
    uploads = uploads_of(request)
    record = await asyncio.to_thread(uploads.cancel, upload_id, scope_of(request))
    return JSONResponse(record.openai(uploads.clock()))
