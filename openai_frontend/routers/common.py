"""What every router needs: the app's service, the model-name check, the caller's file scope."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from openai_frontend.errors import OpenAIError, bad_request, model_not_found
from openai_frontend.files.upload import Upload, receive
from openai_frontend.schemas.common import parse_json, read_json
from openai_frontend.service import Service

#: The form field of a multipart chat request that holds the JSON request.
PAYLOAD_FIELD = "payload"


def service_of(request: Request) -> Service:
    return request.app.state.service


def check_model(name: str, service: Service) -> None:
    if name != service.model_name:
        raise model_not_found(name, service.model_name)


def scope_of(request: Request) -> str:
    """The tenant whose files this request sees: the configured header's value ("" when none is set)."""
    header = service_of(request).settings.files_scope_header
    return request.headers.get(header, "") if header else ""


async def read_body(request: Request) -> tuple[Any, Upload | None]:
    """The JSON request, and for a multipart/form-data body the files its parts name as ``form://<field>``.

    The files are staged on disk (each capped like any media); the caller discards them once
    the media are read.
    """
    settings = service_of(request).settings
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return await read_json(request, settings.max_body_bytes), None
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise OpenAIError(413, f"the request body is {declared} bytes; the limit is {settings.max_body_bytes}",
                          code="request_too_large")
    form = await receive(request.stream(), content_type, request.app.state.files.staging_dir(),
                         settings.max_media_bytes, file_fields=None,
                         max_files=settings.max_videos + settings.max_images)
    try:
        raw = form.fields.get(PAYLOAD_FIELD)
        if raw is None and PAYLOAD_FIELD in form.files:  # curl -F payload=@request.json
            raw = form.files[PAYLOAD_FIELD].staged.path.read_bytes()
            form.files.pop(PAYLOAD_FIELD).staged.path.unlink()
        if raw is None:
            raise OpenAIError(400, f"{PAYLOAD_FIELD}: required (the JSON request as a form field)",
                              param=PAYLOAD_FIELD, code="missing_required_parameter")
        data = parse_json(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw, PAYLOAD_FIELD,
                          PAYLOAD_FIELD)
        if not isinstance(data, dict):
            raise bad_request(f"{PAYLOAD_FIELD}: must be a JSON object", PAYLOAD_FIELD, code="invalid_json")
    except BaseException:
        form.discard()
        raise
    return data, form
