"""A video request's body -> checked generation parameters and the reference image's bytes.

The body is multipart/form-data (the reference image may be a file part, staged on disk
by the Files API's streaming parser), a urlencoded form, or JSON; a JSON reference
(``image_reference`` or ``input_reference: {image_url | file_id}``) is fetched like any
media. Everything is checked against the model before a job exists.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from openai_frontend.errors import OpenAIError, bad_request, model_not_found
from openai_frontend.files.full import store_full
from openai_frontend.files.upload import Upload, receive, sniff
from openai_frontend.media.urls import FILE_ID_SCHEME
from openai_frontend.routers.common import scope_of, service_of
from openai_frontend.schemas.common import read_json, validate
from openai_frontend.schemas.videos import INPUT_REFERENCE, VideoCreateRequest, form_to_body, json_to_body
from openai_frontend.videos.jobs import JobManager
from video_pipeline.generation.encode import load_image
from video_pipeline.generation.params import GenerationParams, InvalidParameter, parse_request


def jobs_of(request: Request) -> JobManager:
    return request.app.state.videos


async def read_video_request(request: Request) -> tuple[GenerationParams, bytes | None, str]:
    """The body checked against the model: parameters, the reference image's bytes, the model's name."""
    body, form = await _read_body(request)
    try:
        req = validate(VideoCreateRequest, body)
        caps = await jobs_of(request).capabilities()
        if req.model is not None and req.model != caps.model:
            raise model_not_found(req.model, caps.model)
        image = await _reference_image(request, req, form)
        try:
            params = parse_request(req.prompt, req.generation_fields(), caps, has_image=image is not None)
        except InvalidParameter as exc:
            raise bad_request(str(exc), exc.param) from None
        if image is not None:
            where = INPUT_REFERENCE if req.image_reference is None else "image_reference"
            await asyncio.to_thread(load_image, image, where)  # a 400 now, not a failed job later
        return params, image, caps.model
    finally:
        if form is not None:
            form.discard()


async def _read_body(request: Request) -> tuple[dict[str, Any], Upload | None]:
    """multipart/form-data (the reference image may be a file part), a urlencoded form, or JSON."""
    settings = service_of(request).settings
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("application/x-www-form-urlencoded"):
        raw = await read_body_bytes(request, settings.max_body_bytes)
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise bad_request("the form is not valid UTF-8", code="invalid_form") from None
        return form_to_body(dict(pairs)), None
    if not content_type.lower().startswith("multipart/form-data"):
        return json_to_body(await read_json(request, settings.max_body_bytes)), None
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise OpenAIError(413, f"the request body is {declared} bytes; the limit is {settings.max_body_bytes}",
                          code="request_too_large")
    staging = request.app.state.files.staging_dir()
    try:
        form = await receive(request.stream(), content_type, staging, settings.max_media_bytes,
                             file_fields=frozenset({INPUT_REFERENCE}), max_files=1)
    except OSError as exc:  # receive() has removed what it staged
        raise store_full(exc, where=f"the file store's staging directory {staging}",
                         refused=f"{INPUT_REFERENCE}: the reference image cannot be staged", param=INPUT_REFERENCE,
                         hint="try later") from None
    try:
        return form_to_body(form.fields), form
    except BaseException:
        form.discard()
        raise


async def read_body_bytes(request: Request, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise OpenAIError(413, f"the request body exceeds the limit of {max_bytes} bytes", code="request_too_large")
    return bytes(body)


async def _reference_image(request: Request, req: VideoCreateRequest, form: Upload | None) -> bytes | None:
    part = form.files.get(INPUT_REFERENCE) if form is not None else None
    refs = [(name, ref) for name, ref in ((INPUT_REFERENCE, req.input_reference),
                                          ("image_reference", req.image_reference)) if ref is not None]
    if (part is not None) + len(refs) > 1:
        raise bad_request("give one reference image: input_reference (a file or {image_url | file_id}) or "
                          "image_reference", "image_reference")
    if part is not None:
        found = sniff(part.head)
        if found is None or found[0] != "image":
            raise OpenAIError(415, f"{INPUT_REFERENCE}: must be an image (PNG, JPEG, WebP, ...); this server "
                              "generates video from an image", param=INPUT_REFERENCE, code="unsupported_media")
        return await asyncio.to_thread(part.staged.path.read_bytes)
    if not refs:
        return None
    name, ref = refs[0]
    url = ref.image_url if ref.image_url is not None else FILE_ID_SCHEME + (ref.file_id or "")
    data = await service_of(request).fetcher.fetch(url, "image", name, scope_of(request))
    if not isinstance(data, bytes):
        raise OpenAIError(415, f"{name}: must be one image", param=name, code="unsupported_media")
    return data
