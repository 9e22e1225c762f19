"""vLLM's POST /tokenize and POST /detokenize, answered by the llm model's own tokenizer and chat template
(through tritonserver: the shim loads no tokenizer), so a count agrees with what generation counts."""

from __future__ import annotations

from typing import TypeVar

from fastapi import APIRouter, Request

from openai_frontend.backend.base import TokenizeRequest as LlmTokenize
from openai_frontend.errors import OpenAIError
from openai_frontend.logging_config import engine_request_id
from openai_frontend.routers.common import check_model, service_of
from openai_frontend.schemas.chat import ChatCompletionRequest
from openai_frontend.schemas.common import read_json, validate
from openai_frontend.schemas.completions import DetokenizeRequest, TokenizeRequest
from openai_frontend.service import Service
from video_pipeline import contract as C
from video_pipeline.errors import PipelineError

router = APIRouter()

B = TypeVar("B", TokenizeRequest, DetokenizeRequest)


async def _checked(request: Request, schema: type[B]) -> tuple[Service, B]:
    """The app's service and the request's body, its model (when it names one) and its fields checked."""
    service = service_of(request)
    body = validate(schema, await read_json(request, service.settings.max_body_bytes))
    if body.model is not None:
        check_model(body.model, service)
    body.check()
    return service, body


@router.post("/tokenize")
async def tokenize(request: Request) -> dict:
    service, body = await _checked(request, TokenizeRequest)
    if body.prompt is not None:
        asked = LlmTokenize(request_id=engine_request_id(), prompt=body.prompt, options=body.options())
    else:
        # The chat endpoint's parsing, so the messages render exactly as a chat request's would.
        chat = validate(ChatCompletionRequest, {
            "model": service.model_name, "messages": body.messages,
            **{k: v for k in ("chat_template_kwargs", "add_generation_prompt", "continue_final_message")
               if (v := getattr(body, k)) is not None}})
        conversation = chat.conversation()
        media = [p for t in conversation.turns if not isinstance(t.content, str) for p in t.content
                 if not isinstance(p, str)]
        if media:
            where = getattr(media[0], "where", "messages")
            raise OpenAIError(400, f"{where}: /tokenize takes text messages only here (media tokens are counted "
                              "when the media are decoded: see usage.prompt_tokens of a chat request, or its "
                              "dry_run)", param=where, code="unsupported_parameter")
        asked = LlmTokenize(request_id=engine_request_id(), messages=conversation.llm_messages(),
                            chat_template_kwargs=dict(conversation.template_kwargs), options=body.options())
    answer = await service.backend.tokenize(asked)
    return {"count": answer["count"], "max_model_len": answer["max_model_len"], "tokens": answer["tokens"],
            "token_strs": answer.get("token_strs")}


@router.post("/detokenize")
async def detokenize(request: Request) -> dict:
    service, body = await _checked(request, DetokenizeRequest)
    if not body.tokens:
        return {"prompt": ""}
    try:
        return {"prompt": await service.backend.detokenize(body.tokens, engine_request_id())}
    except PipelineError as exc:  # the llm model names its own input: token_ids[i] is the body's tokens[i]
        if exc.param is not None and exc.param.startswith(C.TOKEN_IDS):
            exc.param = "tokens" + exc.param.removeprefix(C.TOKEN_IDS)
            if str(exc).startswith(C.TOKEN_IDS):
                exc.args = ("tokens" + str(exc).removeprefix(C.TOKEN_IDS),)
        raise
