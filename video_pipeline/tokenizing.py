"""The ``llm`` model's tokenize and detokenize requests, and its chat-template kwargs: no generation.

vLLM's server answers ``/tokenize`` and ``/detokenize`` with the engine's own tokenizer and chat
template; here the llm model does, so the shim never loads a tokenizer and a count always agrees
with what generation counts. A ``tokenize`` request renders its prompt exactly as generation does
(:meth:`VllmEngine.build_prompt <video_pipeline.engines.vllm_engine.VllmEngine.build_prompt>`: the chat
template with the request's ``chat_template_kwargs``) and encodes it as generation encodes it
(chat prompts without added special tokens: the template holds them; raw prompts with them).

No Triton imports; the engine is anything with ``tokenizer``, ``build_prompt`` and ``max_model_len``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from video_pipeline import contract as C
from video_pipeline.engines.types import GenerationRequest
from video_pipeline.errors import InvalidInput
from video_pipeline.steps import as_bytes_list, json_tensor, parse_json_list

#: chat_template_kwargs keys vLLM refuses ("Found unexpected chat template kwargs from request"): the
#: template is the server's, and rendering must give text.
REFUSED_TEMPLATE_KWARGS = ("chat_template", "tokenize")
#: The ``tokenize`` input's options (vLLM's TokenizeRequest fields beyond the prompt) and their types.
TOKENIZE_OPTIONS = {"add_special_tokens": bool, "return_token_strs": bool}


def chat_template_kwargs_of(arr: np.ndarray | None) -> dict[str, Any]:
    """The ``chat_template_kwargs`` input as a dict (empty when absent); InvalidInput naming it otherwise."""
    docs = parse_json_list(arr, C.CHAT_TEMPLATE_KWARGS)
    if not docs:
        return {}
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise InvalidInput(f"{C.CHAT_TEMPLATE_KWARGS} must be one JSON object", param=C.CHAT_TEMPLATE_KWARGS,
                           code="invalid_type")
    kwargs = docs[0]
    refused = sorted(k for k in kwargs if k in REFUSED_TEMPLATE_KWARGS)
    if refused:
        raise InvalidInput(f"{C.CHAT_TEMPLATE_KWARGS}.{refused[0]}: not allowed (the chat template is the served "
                           "model's, and it renders text)", param=f"{C.CHAT_TEMPLATE_KWARGS}.{refused[0]}",
                           code="invalid_value")
    for key in ("add_generation_prompt", "continue_final_message"):
        if key in kwargs and not isinstance(kwargs[key], bool):
            raise InvalidInput(f"{C.CHAT_TEMPLATE_KWARGS}.{key} must be true or false",
                               param=f"{C.CHAT_TEMPLATE_KWARGS}.{key}", code="invalid_type")
    if kwargs.get("continue_final_message"):
        if kwargs.get("add_generation_prompt"):
            raise InvalidInput(f"{C.CHAT_TEMPLATE_KWARGS}: add_generation_prompt and continue_final_message "
                               "cannot both be true", param=f"{C.CHAT_TEMPLATE_KWARGS}.continue_final_message",
                               code="invalid_value")
        kwargs = {**kwargs, "add_generation_prompt": False}  # the template's default (true) would clash
    return kwargs


def tokenize_options(arr: np.ndarray | None) -> dict[str, Any]:
    """The ``tokenize`` input's options ({} or its text empty: the defaults); unknown keys are refused."""
    raw = as_bytes_list(arr, C.TOKENIZE)
    if len(raw) != 1:
        raise InvalidInput(f"{C.TOKENIZE} must be one JSON object", param=C.TOKENIZE, code="invalid_type")
    if not raw[0].strip():
        return {}
    try:
        options = json.loads(raw[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{C.TOKENIZE} is not valid JSON: {exc}", param=C.TOKENIZE, code="invalid_json") from None
    if not isinstance(options, dict):
        raise InvalidInput(f"{C.TOKENIZE} must be a JSON object", param=C.TOKENIZE, code="invalid_type")
    for key, value in options.items():
        kind = TOKENIZE_OPTIONS.get(key)
        if kind is None:
            raise InvalidInput(f"{C.TOKENIZE}: unknown option {key[:40]!r}; known: {', '.join(TOKENIZE_OPTIONS)}",
                               param=key[:40], code="unsupported_parameter")
        if value is not None and not isinstance(value, kind):
            raise InvalidInput(f"{C.TOKENIZE}.{key} must be true or false", param=key, code="invalid_type")
    return {k: v for k, v in options.items() if v is not None}


def tokenize(engine: Any, request: GenerationRequest, options: Mapping[str, Any]) -> dict[str, Any]:
    """vLLM's TokenizeResponse for ``request``'s prompt: ``count``, ``max_model_len``, ``tokens``
    (and ``token_strs`` when asked)."""
    text = engine.build_prompt(request)["prompt"]
    # As generation encodes it (VllmEngine.generate): chat templates already hold the special tokens.
    add_special = options.get("add_special_tokens", request.messages is None)
    tokenizer = engine.tokenizer
    ids = [int(t) for t in tokenizer.encode(text, add_special_tokens=add_special)]
    doc: dict[str, Any] = {"count": len(ids), "max_model_len": int(engine.max_model_len), "tokens": ids}
    if options.get("return_token_strs"):
        doc["token_strs"] = [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]
    return doc


def detokenize(engine: Any, token_ids: np.ndarray) -> str:
    """The text of ``token_ids`` (the tokenizer's decode, special tokens kept, as vLLM's /detokenize)."""
    ids = np.asarray(token_ids).reshape(-1)
    if ids.dtype.kind not in "iu":
        raise InvalidInput(f"{C.TOKEN_IDS} must be integers", param=C.TOKEN_IDS, code="invalid_type")
    tokenizer = engine.tokenizer
    vocab = len(tokenizer)
    bad = [i for i, t in enumerate(ids) if t < 0 or t >= vocab]
    if bad:
        where = f"{C.TOKEN_IDS}[{bad[0]}]"
        raise InvalidInput(f"{where}: {int(ids[bad[0]])} is not a token id of this model (0 to {vocab - 1})",
                           param=where, code="invalid_value")
    return str(tokenizer.decode([int(t) for t in ids]))


def tokens_outputs(doc: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The one response answering a tokenize request."""
    return {C.TOKENS: json_tensor([dict(doc)]),
            C.NUM_INPUT_TOKENS: np.array([doc["count"]], dtype=np.uint32)}


def text_outputs(text: str, count: int) -> dict[str, np.ndarray]:
    """The one response answering a detokenize request."""
    return {C.TEXT_OUTPUT: np.array([text.encode()], dtype=np.object_),
            C.NUM_INPUT_TOKENS: np.array([count], dtype=np.uint32)}
