"""What every router needs: the app's service, the model-name check, the caller's file scope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request

from openai_frontend.errors import OpenAIError, bad_request, model_not_found
from openai_frontend.files.full import store_full
from openai_frontend.files.upload import MAX_FIELD, Upload, receive
from openai_frontend.schemas.common import parse_json, read_json
from openai_frontend.service import Service

logger = logging.getLogger(__name__)

#: The form field of a multipart chat request that holds the JSON request.
PAYLOAD_FIELD = "payload"


def service_of(request: Request) -> Service:
    return request.app.state.service


def check_model(name: str, service: Service) -> None:
    if name != service.model_name:
        raise model_not_found(name, service.model_name)


#: The longest tenant name the scope header may carry.
MAX_SCOPE_CHARS = 256


def scope_of(request: Request) -> str:
    """The tenant whose files and videos this request sees: the configured header's one value ("" when
    scoping is off).

    With scoping on, the header must come exactly once with one non-empty value: a repeated header or a
    comma-joined list is refused, never read first- or last-wins, since a client that adds its own copy in
    front of (or behind) the one its gateway sets would otherwise pick the tenant.
    """
    header = service_of(request).settings.files_scope_header
    if not header:
        return ""
    values = request.headers.getlist(header)
    if not values:
        raise OpenAIError(400, f"{header}: required (this server scopes files and videos by it)", param=header,
                          code="missing_required_parameter")
    if len(values) > 1:
        raise bad_request(f"{header}: given {len(values)} times; send it once (a gateway must remove the "
                          "client's copies and set one value)", header, code="invalid_scope")
    value = values[0].strip()
    if not value:
        raise bad_request(f"{header}: empty; it must name one tenant", header, code="invalid_scope")
    if "," in value:
        raise bad_request(f"{header}: several values ({value[:80]!r}); it must name one tenant", header,
                          code="invalid_scope")
    if len(value) > MAX_SCOPE_CHARS or not value.isprintable():
        raise bad_request(f"{header}: must be at most {MAX_SCOPE_CHARS} printable characters", header,
                          code="invalid_scope")
    return value


async def receive_form(request: Request, content_type: str, *, file_fields: frozenset[str] | None, max_files: int,
                       refused: str, param: str | None, where: str = "{}", max_field: int = MAX_FIELD) -> Upload:
    """A multipart/form-data body (its declared length within the body limit), its file parts staged in the
    file store's staging directory, each capped like any media (see :func:`receive`). A full disk there is a
    507: ``<refused>: <where> is full``, ``where`` with the directory in its ``{}``."""
    settings = service_of(request).settings
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise OpenAIError(413, f"the request body is {declared} bytes; the limit is {settings.max_body_bytes}",
                          code="request_too_large")
    staging = request.app.state.files.staging_dir()
    try:
        return await receive(request.stream(), content_type, staging, settings.max_media_bytes,
                             file_fields=file_fields, max_files=max_files, max_field=max_field)
    except OSError as exc:  # receive() has removed what it staged
        raise store_full(exc, where=where.format(staging), refused=refused, param=param, hint="try later") from None


async def read_body(request: Request) -> tuple[Any, Upload | None]:
    """The JSON request, and for a multipart/form-data body the files its parts name as ``form://<field>``.

    The files are staged on disk (each capped like any media); the caller discards them once
    the media are read.
    """
    settings = service_of(request).settings
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return await read_json(request, settings.max_body_bytes), None
    form = await receive_form(request, content_type, file_fields=None,
                              max_files=settings.max_videos + settings.max_images, max_field=settings.max_body_bytes,
                              refused="the multipart request's files cannot be staged", param=None)
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
