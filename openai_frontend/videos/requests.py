"""A video request's body -> checked generation parameters and the reference image's bytes.

The body is multipart/form-data (the reference image may be a file part, staged on disk
by the Files API's streaming parser), a urlencoded form, or JSON; a JSON reference
(``image_reference`` or ``input_reference: {image_url | file_id}``) is fetched like any
media. Everything is checked against the model before a job exists. A remix's body is its prompt alone;
its parameters come from the source job (:func:`remix_of`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from openai_frontend.errors import OpenAIError, bad_request, model_not_found
from openai_frontend.files.upload import Upload, sniff
from openai_frontend.media.urls import FILE_ID_SCHEME
from openai_frontend.routers.common import receive_form, scope_of, service_of
from openai_frontend.schemas.common import read_json, validate
from openai_frontend.schemas.videos import (
    DEFAULT_SECONDS,
    INPUT_REFERENCE,
    VideoCreateRequest,
    VideoRemixRequest,
    form_to_body,
    json_to_body,
)
from openai_frontend.videos.jobs import JobManager
from openai_frontend.videos.stills import first_frame_png
from openai_frontend.videos.store import JobRecord
from video_pipeline.generation.encode import load_image
from video_pipeline.generation.params import (
    FIELDS,
    Capabilities,
    GenerationParams,
    InvalidParameter,
    format_seconds,
    parse_request,
)


def jobs_of(request: Request) -> JobManager:
    return request.app.state.videos


@dataclass(frozen=True)
class VideoAsk:
    """A video request checked against the model."""

    params: GenerationParams
    image: bytes | None  # the reference image's bytes
    model: str  # the served model's name
    seconds: str  # what the video object shows as ``seconds``: see :func:`resolve`


async def read_video_request(request: Request) -> VideoAsk:
    """The body checked against the model (before any job exists: a bad one is a 400 now)."""
    body, form = await _read_body(request)
    try:
        req = validate(VideoCreateRequest, body)
        caps = await jobs_of(request).capabilities()
        if req.model is not None and req.model != caps.model:
            raise model_not_found(req.model, caps.model)
        image = await _reference_image(request, req, form)
        params, seconds = resolve(req.prompt, req.generation_fields(), caps, has_image=image is not None)
        if image is not None:
            where = INPUT_REFERENCE if req.image_reference is None else "image_reference"
            await asyncio.to_thread(load_image, image, where)  # a 400 now, not a failed job later
        return VideoAsk(params, image, caps.model, seconds)
    finally:
        if form is not None:
            form.discard()


def resolve(prompt: Any, fields: dict[str, Any], caps: Capabilities, *, has_image: bool) -> tuple[GenerationParams,
                                                                                                 str]:
    """The parameters, and the ``seconds`` the video object shows, as OpenAI's API has them: what was asked
    (``"4"``, not the 65 frames' 4.0625 s at 16 fps), and ``"4"`` (OpenAI's default) when neither ``seconds`` nor
    ``num_frames`` is given. Two cases show the clip's own length instead: ``num_frames`` given (it wins over
    ``seconds``, as in vLLM-Omni), and a model that cannot make 4 s (its own default clip then). The clip's length
    is always in the object's ``duration_s``. OpenAI's API takes ``seconds`` "4", "8" and "12"; this one any
    positive number the model's frame limit allows."""
    asked = fields.get("seconds")
    defaulted = asked is None and fields.get("num_frames") is None
    try:
        params = parse_request(prompt, {**fields, "seconds": DEFAULT_SECONDS} if defaulted else fields, caps,
                               has_image=has_image)
    except InvalidParameter as exc:
        if not (defaulted and exc.param == "seconds"):
            raise bad_request(str(exc), exc.param) from None
        defaulted = False  # too long for this model: its own default clip
        try:
            params = parse_request(prompt, fields, caps, has_image=has_image)
        except InvalidParameter as again:
            raise bad_request(str(again), again.param) from None
    if defaulted:
        return params, DEFAULT_SECONDS
    if asked is not None and fields.get("num_frames") is None:
        return params, format_seconds(float(asked))  # parse_request has checked it is a positive number
    return params, format_seconds(params.seconds)


async def read_remix_request(request: Request) -> str:
    """The new prompt of a remix (JSON, as the OpenAI SDK sends it, or a form); other fields are 400s."""
    body, form = await _read_body(request)
    try:
        if form is not None and form.files:
            raise bad_request(f"{INPUT_REFERENCE}: a remix starts from its source video; it takes only a prompt",
                              INPUT_REFERENCE, code="unsupported_parameter")
        return validate(VideoRemixRequest, body).prompt
    finally:
        if form is not None:
            form.discard()


async def remix_of(request: Request, source: JobRecord, prompt: str) -> VideoAsk:
    """A remix of the completed job ``source``: its parameters (size, frames, fps, steps, seed, guidance,
    extra_params ...) with the new prompt.

    On a model that generates from an image (Wan's image-to-video), the source video's first frame, as PNG, is
    the reference image: the remix starts where the source starts (an image-to-video source's first frame is
    its reference image as the model rendered it), and the new prompt says where it goes from there. On a
    text-only model it is the same parameters and seed with the new prompt and no image. ``seconds`` is the
    source's."""
    caps = await jobs_of(request).capabilities()
    fields = {k: v for k, v in source.params.items() if k in FIELDS}
    try:
        params = parse_request(prompt, fields, caps, has_image=caps.image_to_video)
    except InvalidParameter as exc:
        if exc.param == "prompt":
            raise bad_request(str(exc), exc.param) from None
        raise bad_request(f"video {source.id} was made with parameters model {caps.model} no longer takes: {exc}",
                          "video_id") from None
    image = None
    if caps.image_to_video:
        try:
            mp4 = await asyncio.to_thread(jobs_of(request).store.read_output, source)
        except FileNotFoundError:
            raise OpenAIError(404, f"no such video: {source.id!r}", param="video_id",
                              code="video_not_found") from None
        image = await asyncio.to_thread(first_frame_png, mp4)
    return VideoAsk(params, image, caps.model, source.seconds)


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
    form = await receive_form(request, content_type, file_fields=frozenset({INPUT_REFERENCE}), max_files=1,
                              refused=f"{INPUT_REFERENCE}: the reference image cannot be staged", param=INPUT_REFERENCE,
                              where="the file store's staging directory {}")
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
