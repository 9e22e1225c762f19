"""POST /v1/chat/completions: a JSON body, or multipart/form-data with the JSON in a ``payload``
field and media as file parts that content parts name as ``form://<field name>``."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from openai_frontend.logging_config import engine_request_id
from openai_frontend.outputs.chat import ChunkStream, completion_body, dry_run_body, now
from openai_frontend.routers.common import check_model, read_body, scope_of, service_of
from openai_frontend.schemas.chat import ChatCompletionRequest
from openai_frontend.schemas.common import validate
from openai_frontend.sse import EventStreamResponse, until_disconnected

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    service = service_of(request)
    started = time.perf_counter()
    scope = scope_of(request)  # refused before the body is read
    data, form = await read_body(request)
    try:
        body = validate(ChatCompletionRequest, data)
        check_model(body.model, service)
        body.check_supported()
        body.check_dry_run(body.stream)
        conversation = body.conversation()
        request_id = f"chatcmpl-{uuid.uuid4().hex}"

        # Media fetching, decoding and generation all stop if the client leaves meanwhile.
        llm_request = await until_disconnected(request, service.prepare(
            conversation, video_defaults=body.video_defaults(), sampling=body.generation_sampling(),
            stream=body.stream, request_id=engine_request_id(), scope=scope,
            attachments={name: part.staged.path for name, part in form.files.items()} if form else None,
            dry_run=bool(body.dry_run)))
    finally:
        if form is not None:
            form.discard()  # their bytes are in llm_request now
    if body.dry_run:
        return JSONResponse(dry_run_body(request_id, now(), service.model_name, llm_request.infos))
    if not body.stream:
        completion = await until_disconnected(request, service.complete(llm_request))
        return JSONResponse(completion_body(request_id, now(), service.model_name, completion, llm_request.infos))
    deltas = await until_disconnected(request, service.start_stream(llm_request))
    options = body.stream_options
    chunks = ChunkStream(
        request_id=request_id, model=service.model_name, n=int(body.n or 1), created=now(),
        include_usage=bool(options and options.include_usage),
        continuous_usage=bool(options and options.continuous_usage_stats), infos=llm_request.infos,
    )
    return EventStreamResponse(chunks.events(deltas, service, request.url.path, started))
