"""Shared pieces of the request schemas: the strict base model, body parsing, sampling fields."""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request

from openai_frontend.errors import OpenAIError, bad_request, from_validation, unsupported
from openai_frontend.media.options import video_defaults
from openai_frontend.media.urls import AUDIO_FORMATS

M = TypeVar("M", bound=BaseModel)
USE_AUDIO_IN_VIDEO = "use_audio_in_video"


class Strict(BaseModel):
    """Unknown fields are refused with a 400 naming them, as OpenAI's API does."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class SamplingFields(Strict):
    """Generation parameters both endpoints take (OpenAI's, plus vLLM's common extras)."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None  # accepted for compatibility; not used
    # vLLM's extras, as its OpenAI server takes them (in the body or the SDK's extra_body)
    top_k: int | None = None
    min_p: float | None = None
    min_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool | None = None
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    # media knobs as vLLM/LMDeploy take them; see openai_frontend.media.options
    media_io_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    # ours: decode the videos and answer their sampling plan and token cost, without the model
    dry_run: bool | None = None
    # accepted, no effect here
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    # with tools: false keeps one call (vLLM's grammar and parser hold it to one); see openai_frontend.tools
    parallel_tool_calls: bool | None = None

    SAMPLING_KEYS: ClassVar[tuple[str, ...]] = ("temperature", "top_p", "seed", "stop", "top_k", "min_p", "min_tokens", "presence_penalty",
                 "frequency_penalty", "repetition_penalty", "ignore_eos", "stop_token_ids", "skip_special_tokens",
                 "include_stop_str_in_output")

    def check_dry_run(self, stream: bool) -> None:
        refuse_if(bool(self.dry_run) and stream, "dry_run", "cannot be combined with stream: true")

    def video_defaults(self) -> dict[str, Any]:
        """Request-level ``video_options`` from media_io_kwargs / mm_processor_kwargs
        (``use_audio_in_video`` is not a video option: see :meth:`use_audio_in_video`)."""
        proc = self.mm_processor_kwargs
        if isinstance(proc, dict) and USE_AUDIO_IN_VIDEO in proc:
            proc = {k: v for k, v in proc.items() if k != USE_AUDIO_IN_VIDEO}
        return video_defaults(self.media_io_kwargs, proc)

    def use_audio_in_video(self) -> bool:
        """vLLM's ``mm_processor_kwargs.use_audio_in_video``: the videos' own audio tracks go with them."""
        value = (self.mm_processor_kwargs or {}).get(USE_AUDIO_IN_VIDEO, False)
        if not isinstance(value, bool):
            raise bad_request(f"mm_processor_kwargs.{USE_AUDIO_IN_VIDEO} must be true or false",
                              f"mm_processor_kwargs.{USE_AUDIO_IN_VIDEO}", code="invalid_value")
        return value

    def sampling(self, max_tokens: int | None, n: int | None = None) -> dict[str, Any]:
        """The llm model's ``sampling_parameters``: only what the client set."""
        out = {k: getattr(self, k) for k in self.SAMPLING_KEYS if getattr(self, k) is not None}
        if max_tokens is not None:
            out["max_tokens"] = max_tokens
        if n is not None:
            out["n"] = n
        return out


#: chat_template_kwargs keys vLLM refuses: the template is the server's, and it must render text.
REFUSED_TEMPLATE_KWARGS = ("chat_template", "tokenize")


def template_kwargs(kwargs: dict[str, Any] | None, add_generation_prompt: bool | None = None,
                    continue_final_message: bool | None = None) -> dict[str, Any]:
    """The llm model's ``chat_template_kwargs``, merged as vLLM merges them: the request's top-level
    ``add_generation_prompt`` (default: true, false with continue_final_message) and
    ``continue_final_message`` (default false) win over the same keys inside ``kwargs``. ``{}`` when
    nothing differs from the template's defaults."""
    for key in REFUSED_TEMPLATE_KWARGS:
        if kwargs and key in kwargs:
            raise bad_request(f"chat_template_kwargs.{key}: not allowed (the chat template is the served model's, "
                              "and it renders text)", f"chat_template_kwargs.{key}")
    final = bool(continue_final_message)
    generation = (not final) if add_generation_prompt is None else add_generation_prompt
    if generation and final:
        raise bad_request("continue_final_message: cannot be combined with add_generation_prompt: true",
                          "continue_final_message")
    if not kwargs and generation and not final:
        return {}
    return {**(kwargs or {}), "add_generation_prompt": generation, "continue_final_message": final}


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON, with a size cap; 400 on anything that is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise OpenAIError(413, f"the request body is {declared} bytes; the limit is {max_bytes}",
                          code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise OpenAIError(413, f"the request body exceeds the limit of {max_bytes} bytes", code="request_too_large")
    data = parse_json(bytes(body))
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    return data


# A lone surrogate (text that is no Unicode, and that no UTF-8 answer can echo) comes only from a
# \ud800-\udfff escape or from surrogate bytes (json reads bytes with "surrogatepass"): cheap to
# look for, and only then is the parsed document walked. Two patterns, each starting with a literal, so
# the regex engine skips to candidates (one alternation scanned a 22 MB data URL in 136 ms, these in 12).
_SURROGATE = (re.compile(rb"\\u[dD][89a-fA-F]"), re.compile(rb"\xed[\xa0-\xbf]"))


def parse_json(raw: bytes, what: str = "the request body", param: str | None = None) -> Any:
    """JSON from ``raw``; 400 for bad JSON, nesting too deep to parse, or strings that are not Unicode."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise bad_request(f"{what} is nested too deeply", param, code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"{what} is not valid JSON: {exc}", param, code="invalid_json") from None
    if (any(p.search(raw) for p in _SURROGATE) or json.detect_encoding(raw) != "utf-8") and _has_lone_surrogate(data):
        raise bad_request(f"{what} holds a string that is not valid Unicode (a lone surrogate \\ud800-\\udfff)",
                          param, code="invalid_json")
    return data


def _has_lone_surrogate(data: Any) -> bool:
    stack = [data]  # iterative: a document nested as deep as json allows would overflow a recursion
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def validate(model: type[M], data: Any, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, prefix) from None


def refuse_if(condition: bool, param: str, why: str = "is not supported") -> None:
    if condition:
        raise unsupported(param, why)


def validate_part(raw: Any, where: str, models: dict[str, type[BaseModel]], supported: tuple[str, ...]) -> BaseModel:
    """One content part: an object whose ``type`` names one of ``models``; unknown types are a 400."""
    if not isinstance(raw, dict):
        raise OpenAIError(400, f"{where}: a content part must be an object", param=where, code="invalid_value")
    kind = raw.get("type")
    model = models.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise OpenAIError(400, f"{where}.type: unknown content part type {kind!r}; supported: {', '.join(supported)}",
                          param=f"{where}.type", code="invalid_value")
    return validate(model, raw, where)


def media_uuid(uuid: str | None, where: str) -> str | None:
    """A media part's ``uuid`` beside its media: None, or a non-empty string."""
    if uuid is not None and not uuid:
        raise OpenAIError(400, f"{where}.uuid: must not be empty", param=f"{where}.uuid", code="invalid_value")
    return uuid


def media_url(url: str, uuid: str | None, param: str, where: str) -> str:
    """A media part's URL; "" for a part named by its ``uuid`` alone (vLLM's cache-hit shape)."""
    if uuid is not None and not uuid:
        raise OpenAIError(400, f"{where}.uuid: must not be empty", param=f"{where}.uuid", code="invalid_value")
    if not url and uuid is None:
        raise OpenAIError(400, f"{param}: required (or give a uuid of media sent before)", param=param,
                          code="missing_required_parameter")
    return url


class InputAudio(Strict):
    """OpenAI's ``input_audio`` object: base64 data and its format."""

    data: str
    format: str


def audio_data_url(audio: InputAudio, where: str) -> str:
    """An ``input_audio`` as the data: URL the fetcher reads (its byte budget applies before decoding)."""
    mime = AUDIO_FORMATS.get(audio.format.lower()) if isinstance(audio.format, str) else None
    if mime is None:
        raise OpenAIError(400, f"{where}.format: unsupported audio format {audio.format[:40]!r}; supported: "
                          f"{', '.join(sorted(AUDIO_FORMATS))}", param=f"{where}.format", code="invalid_value")
    if not audio.data:
        raise OpenAIError(400, f"{where}.data: must not be empty", param=f"{where}.data", code="invalid_value")
    return f"data:{mime};base64,{audio.data}"
