"""POST /v1/completions: OpenAI's legacy completions on the llm model's raw ``text_input`` path."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from openai_frontend.backend.base import LlmRequest
from openai_frontend.logging_config import engine_request_id
from openai_frontend.outputs.chat import now
from openai_frontend.outputs.completions import CompletionStream, completion_body, start_all
from openai_frontend.routers.common import check_model, service_of
from openai_frontend.schemas.common import read_json, validate
from openai_frontend.schemas.completions import CompletionRequest
from openai_frontend.service import all_of
from openai_frontend.sse import EventStreamResponse, until_disconnected

router = APIRouter()


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    service = service_of(request)
    started = time.perf_counter()
    body = validate(CompletionRequest, await read_json(request, service.settings.max_body_bytes))
    check_model(body.model, service)
    body.check_supported()
    prompts = body.prompts()
    sampling = body.generation_sampling()
    engine_id = engine_request_id()
    llm_requests = [LlmRequest(request_id=engine_id if len(prompts) == 1 else f"{engine_id}-{i}", messages=[],
                               sampling=sampling, stream=body.stream, prompt=prompt)
                    for i, prompt in enumerate(prompts)]
    request_id = f"cmpl-{uuid.uuid4().hex}"
    n = int(body.n or 1)
    if not body.stream:
        done = await until_disconnected(request, all_of([service.complete(r) for r in llm_requests]))
        return JSONResponse(completion_body(request_id, now(), service.model_name, done, prompts, n, bool(body.echo)))
    streams = await until_disconnected(request, start_all(service, llm_requests))
    options = body.stream_options
    chunks = CompletionStream(request_id=request_id, model=service.model_name, created=now(), n=n, prompts=prompts,
                              echo=bool(body.echo), include_usage=bool(options and options.include_usage),
                              continuous_usage=bool(options and options.continuous_usage_stats))
    return EventStreamResponse(chunks.events(streams, service, request.url.path, started))
