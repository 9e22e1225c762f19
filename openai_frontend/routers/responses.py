"""POST /v1/responses."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from openai_frontend.logging_config import engine_request_id
from openai_frontend.outputs.responses import ResponseBuilder
from openai_frontend.routers.common import check_model, scope_of, service_of
from openai_frontend.schemas.common import read_json, validate
from openai_frontend.schemas.responses import ResponsesRequest
from openai_frontend.sse import EventStreamResponse, until_disconnected

router = APIRouter()


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    service = service_of(request)
    started = time.perf_counter()
    scope = scope_of(request)  # refused before the body is read
    body = validate(ResponsesRequest, await read_json(request, service.settings.max_body_bytes))
    check_model(body.model, service)
    body.check_supported()
    body.check_dry_run(body.stream)
    conversation = body.conversation()
    builder = ResponseBuilder(request=body, response_id=f"resp_{uuid.uuid4().hex}", model=service.model_name,
                              message_id=f"msg_{uuid.uuid4().hex}")

    # Media fetching, decoding and generation all stop if the client leaves meanwhile.
    llm_request = await until_disconnected(request, service.prepare(
        conversation, video_defaults=body.video_defaults(), sampling=body.generation_sampling(),
        stream=body.stream, request_id=engine_request_id(), scope=scope, dry_run=bool(body.dry_run)))
    builder.infos = llm_request.infos
    if body.dry_run:
        return JSONResponse(builder.dry_run())
    if not body.stream:
        completion = await until_disconnected(request, service.complete(llm_request))
        return JSONResponse(builder.completed(completion))
    deltas = await until_disconnected(request, service.start_stream(llm_request))
    return EventStreamResponse(builder.events(deltas, service, request.url.path, started))
