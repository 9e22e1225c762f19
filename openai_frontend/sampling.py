"""vLLM's request features as both endpoints take them: structured outputs, logprobs, logit_bias.

The shim only maps OpenAI's (and vLLM's) request shapes onto the llm model's sampling keys, which
are vLLM's ``SamplingParams`` names (:mod:`video_pipeline.engines.sampling`); vLLM compiles the
constraints and computes the logprobs. The chat API's ``response_format`` and the Responses API's
``text.format`` become ``structured_outputs`` as vLLM's own server makes them
(``{"type": "json_schema"}`` -> ``{"json": schema}``, ``{"type": "json_object"}`` ->
``{"json_object": true}``), over vLLM's ``structured_outputs`` extension when both are given.

The llm model names the key (or the llm input: ``messages``, ``text_input``) a refusal is about as data,
the error's ``param``; :class:`Sampling` remembers which client parameter stands behind each of them
(``max_output_tokens`` for ``max_tokens``, ``input`` for ``messages`` ...), and :func:`named_error` turns
the refusal into a 400 naming that parameter, in ``param`` and in the message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.schemas.common import Strict, validate
from video_pipeline import contract as C
from video_pipeline.errors import PipelineError

#: The Responses API's ``include`` value that asks for the output text's logprobs (the only one we take).
OUTPUT_TEXT_LOGPROBS = "message.output_text.logprobs"


class Sampling(dict[str, Any]):
    """The llm model's ``sampling_parameters`` (a plain JSON object on the wire) and, in ``params``,
    the client's parameter behind each key (and llm input) the llm model may name in its errors.

    ``values`` are sent under the client's own names (``temperature`` ...) unless ``params`` says
    otherwise (``{"max_tokens": "max_output_tokens", "messages": "input"}``)."""

    def __init__(self, values: Mapping[str, Any] | None = None, params: Mapping[str, str] | None = None) -> None:
        super().__init__(values or {})
        self.params: dict[str, str] = {**{key: key for key in self}, **(params or {})}

    def put(self, key: str, value: Any, param: str) -> None:
        """Sets ``key`` (when ``value`` is not None), sent by the client as ``param``."""
        if value is not None:
            self[key] = value
            self.params[key] = param


#: llm inputs whose refusals name them, as OpenAI's API names the same thing (a raw prompt is completions' prompt).
_CLIENT_NAMES = {C.TEXT_INPUT: "prompt"}


def named_error(exc: PipelineError, sampling: Mapping[str, Any]) -> BaseException:
    """A 400 naming the client's parameter for an llm refusal that names its key as data (``exc.param``,
    a sampling key, a field of one, or an llm input): in ``param``, and in the message where the
    llm's key stands for it (``max_tokens must be at least 1`` -> ``max_output_tokens must be ...``;
    ``structured_outputs: Failed ...`` -> ``response_format: Failed ...``). Any other error as it is."""
    if exc.http_status != 400 or exc.param is None:
        return exc
    params: Mapping[str, str] = getattr(sampling, "params", {})
    key, field = _llm_key(exc.param, params)
    param = params.get(key, _CLIENT_NAMES.get(key, key))
    code = exc.code or "invalid_value"
    message = str(exc)
    if param == key:  # sent under the llm's name: the field at fault is the client's too
        return OpenAIError(400, _client_words(message, params), param=f"{key}{field}", code=code)
    named = f"{key}{field}: "
    if message.startswith(named):  # the llm names the key first: the client's name takes its place
        rest = message[len(named):]
        return OpenAIError(400, f"{param} ({key}{field}): {rest}" if field else f"{param}: {rest}", param=param,
                           code=code)
    return OpenAIError(400, _client_words(message, params), param=param, code=code)


def _llm_key(param: str, params: Mapping[str, str]) -> tuple[str, str]:
    """The llm's key an error's ``param`` names and the ``.field`` below it, when it names a field of a key
    (``structured_outputs.regex`` -> ``structured_outputs``, ``.regex``)."""
    head, dot, rest = param.partition(".")
    if dot and head in params:
        return head, f".{rest}"
    return param, ""


def _client_words(message: str, params: Mapping[str, str]) -> str:
    """``message`` with each llm key it names as a word standing for a client parameter of another name
    (``max_tokens`` for ``max_output_tokens``, ``messages`` for ``input``) replaced by that name. A key
    followed by ``[`` or ``.<field>`` is left as it is: ``messages[1]`` counts the llm's messages, not
    the client's items."""
    for key, name in params.items():
        if key != name:
            message = re.sub(rf"(?<![\w.]){re.escape(key)}(?![\w\[]|\.\w)", name, message)
    return message


# --- the request shapes ------------------------------------------------------------------------------


class JsonSchema(Strict):
    """OpenAI's ``json_schema`` object (chat: inside response_format; Responses: the format itself)."""

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None  # accepted: vLLM's grammar always holds the output to the schema


def structured_from_format(fmt: Any, where: str, schema_at: str) -> dict[str, Any] | None:
    """vLLM's structured_outputs constraint for a response format (``{"type": ...}``); None for text.

    ``schema_at``: where the json_schema object sits in ``fmt`` ("json_schema" in chat, "" in
    Responses, whose format holds name and schema itself)."""
    if not isinstance(fmt, dict):
        raise bad_request(f"{where}: must be an object with a type", where)
    kind = fmt.get("type")
    rest = {k: v for k, v in fmt.items() if k != "type"}
    if kind == "text" or kind == "json_object":
        if rest:
            raise OpenAIError(400, f"unsupported parameter: {where}.{sorted(rest)[0]}",
                              param=f"{where}.{sorted(rest)[0]}", code="unsupported_parameter")
        return None if kind == "text" else {"json_object": True}
    if kind == "json_schema":
        if schema_at:
            extra = sorted(k for k in rest if k != schema_at)
            if extra:
                raise OpenAIError(400, f"unsupported parameter: {where}.{extra[0]}", param=f"{where}.{extra[0]}",
                                  code="unsupported_parameter")
            if rest.get(schema_at) is None:
                raise OpenAIError(400, f"{where}.{schema_at}: required when type is json_schema",
                                  param=f"{where}.{schema_at}", code="missing_required_parameter")
            spec = validate(JsonSchema, rest[schema_at], f"{where}.{schema_at}")
            at = f"{where}.{schema_at}"
        else:
            spec = validate(JsonSchema, rest, where)
            at = where
        if spec.schema_ is None:
            raise OpenAIError(400, f"{at}.schema: required", param=f"{at}.schema", code="missing_required_parameter")
        return {"json": spec.schema_}
    raise bad_request(f"{where}.type: must be one of text, json_object, json_schema, got {str(kind)[:40]!r}",
                      f"{where}.type")


def merged_structured_outputs(extension: dict[str, Any] | None, constraint: dict[str, Any] | None) -> dict[str, Any] | None:
    """vLLM's ``structured_outputs`` from its extension and a response format's constraint, set over the
    extension's fields as vLLM's server does (``dataclasses.replace``): the extension's options apply, and
    a constraint of its own beside the format's is refused by the llm model (one constraint at most)."""
    if constraint is None:
        return extension
    if extension is None:
        return constraint
    return {**extension, **constraint}


def logprobs_count(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """The llm's ``logprobs`` (top tokens per position) for chat's ``logprobs`` / ``top_logprobs``."""
    if top_logprobs is not None and top_logprobs < 0 and top_logprobs != -1:
        raise bad_request(f"top_logprobs: must be between 0 and 20, got {top_logprobs}", "top_logprobs")
    if top_logprobs not in (None, 0) and not logprobs:
        raise bad_request("top_logprobs: requires logprobs: true", "top_logprobs")
    return (top_logprobs or 0) if logprobs else None


def checked_logit_bias(bias: dict[str, float] | None) -> dict[str, float] | None:
    """OpenAI's ``logit_bias`` (token id strings -> bias in [-100, 100]), checked before the model's vocabulary
    is (by vLLM)."""
    if bias is None:
        return None
    for key, value in bias.items():
        if not key.strip().isdigit():
            raise bad_request(f"logit_bias: keys must be token ids (integers as strings), got {key[:40]!r}",
                              "logit_bias")
        if not -100 <= value <= 100:
            raise bad_request(f"logit_bias: the bias of token {key} must be between -100 and 100, got {value}",
                              "logit_bias")
    return bias

