"""POST /v1/chat/completions."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from openai_frontend.outputs.chat import ChunkStream, completion_body, now
from openai_frontend.routers.common import check_model, service_of
from openai_frontend.schemas.chat import ChatCompletionRequest
from openai_frontend.schemas.common import read_json, validate
from openai_frontend.sse import EventStreamResponse, until_disconnected

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    service = service_of(request)
    started = time.perf_counter()
    body = validate(ChatCompletionRequest, await read_json(request, service.settings.max_body_bytes))
    check_model(body.model, service)
    body.check_supported()
    conversation = body.conversation()
    request_id = f"chatcmpl-{uuid.uuid4().hex}"

    # Media fetching, decoding and generation all stop if the client leaves meanwhile.
    llm_request = await until_disconnected(request, service.prepare(
        conversation, video_defaults=body.video_defaults(), sampling=body.generation_sampling(),
        stream=body.stream, request_id=request_id))
    if not body.stream:
        completion = await until_disconnected(request, service.complete(llm_request))
        return JSONResponse(completion_body(request_id, now(), service.model_name, completion))
    deltas = await until_disconnected(request, service.start_stream(llm_request))
    options = body.stream_options
    chunks = ChunkStream(
        request_id=request_id, model=service.model_name, n=int(body.n or 1), created=now(),
        include_usage=bool(options and options.include_usage),
        continuous_usage=bool(options and options.continuous_usage_stats),
    )
    return EventStreamResponse(chunks.events(deltas, service, request.url.path, started))
