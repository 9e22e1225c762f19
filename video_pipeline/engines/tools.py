"""Tool calling inside the llm model: vLLM's own tool parsers, run on the engine's output.

A request's ``tools`` input (contract.TOOLS) is one JSON document::

    {"tools": [<OpenAI chat tool>, ...],          # given to the chat template, as vLLM's server gives them
     "tool_choice": "none" | "auto" | "required" | {"type": "function", "function": {"name": ...}},
     "parallel_tool_calls": true | false | null,
     "tool_call_parser": "<a vLLM --tool-call-parser name>" | null}

Why the parsing happens here and not in the shim: vLLM's parsers (``vllm.tool_parsers``, composed by
``vllm.parser.ParserManager`` as vLLM's server composes them) take vLLM's request objects and the
model's tokenizer, and the same parser decides the grammar of ``required`` / named tool_choice
(``Parser.adjust_request``: vLLM's JSON schema of the tools, or the parser's structural tag, such as
hermes' ``<tool_call>`` envelope). The llm model has vLLM and the tokenizer; the shim has neither,
so it checks the request, chooses the parser (its ``tool_call_parser`` setting, as vLLM's
``--tool-call-parser``) and formats the calls this module finds (the ``tool_calls`` output).

Without a parser, ``required`` and named tool_choice still work: their grammar is vLLM's JSON schema
of the tools and vLLM's JSON paths read the calls (vLLM 0.32 itself asks for --tool-call-parser there;
its older releases and OpenAI do not). ``auto`` needs a parser (the shim refuses it without one).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from video_pipeline.engines.sampling import vllm_client_error
from video_pipeline.errors import InvalidInput

logger = logging.getLogger(__name__)

DOCUMENT_KEYS = frozenset({"tools", "tool_choice", "parallel_tool_calls", "tool_call_parser"})
_CHOICES = ("none", "auto", "required")


def tool_calling_of(document: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The ``tools`` input's document as (tool definitions for the chat template, how the output is
    read: None when it is not, i.e. tool_choice "none"). Raises InvalidInput naming the problem."""
    if not isinstance(document, Mapping):
        raise InvalidInput("tools must be a JSON object {\"tools\": [...], \"tool_choice\": ...}")
    unknown = sorted(str(k) for k in document if k not in DOCUMENT_KEYS)
    if unknown:
        raise InvalidInput(f"tools: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(DOCUMENT_KEYS))}")
    tools = document.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
        raise InvalidInput("tools.tools must be a list of tool objects")
    choice = document.get("tool_choice")
    if choice is None:
        choice = "auto" if tools else "none"
    if not (choice in _CHOICES or isinstance(choice, Mapping)):
        raise InvalidInput(f"tools.tool_choice must be none, auto, required or a named function, got {choice!r}")
    parallel = document.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidInput("tools.parallel_tool_calls must be true, false or null")
    parser = document.get("tool_call_parser")
    if parser is not None and (not isinstance(parser, str) or not parser):
        raise InvalidInput("tools.tool_call_parser must be a vLLM tool parser name or null")
    if choice == "none":
        return [dict(t) for t in tools], None
    if not tools:
        raise InvalidInput(f"tools.tool_choice {choice!r} needs tools")
    return [dict(t) for t in tools], {"tools": [dict(t) for t in tools], "tool_choice": choice,
                                      "parallel_tool_calls": parallel, "tool_call_parser": parser}


_PARSER_CLASSES: dict[tuple[str | None, int], type] = {}


def parser_class(name: str | None, tokenizer: Any) -> type:
    """vLLM's composed Parser class for ``name`` (as ``--tool-call-parser name
    --enable-auto-tool-choice`` gives vLLM's server), or, without a name, one whose tool parser only
    knows vLLM's JSON forms of ``required`` and named tool_choice. Cached per name and tokenizer."""
    key = (name, id(tokenizer))
    cls = _PARSER_CLASSES.get(key)
    if cls is not None:
        return cls
    from vllm.parser.abstract_parser import DelegatingParser
    from vllm.parser.parser_manager import ParserManager
    from vllm.tool_parsers.abstract_tool_parser import ToolParser

    if name is None:
        class _JsonToolCalls(ToolParser):
            """ToolParser's own adjust_request (vLLM's JSON schema of the tools) and none of a model's
            formats: DelegatingParser reads required/named calls from that JSON without it."""

        class _JsonParser(DelegatingParser):
            tool_parser_cls = _JsonToolCalls

        cls = _JsonParser
    else:
        from vllm.tool_parsers import ToolParserManager

        known = set(ToolParserManager.tool_parsers) | set(ToolParserManager.lazy_parsers)
        if name not in known:
            raise InvalidInput(f"tool_call_parser {name!r} is not one of vLLM's tool parsers ({', '.join(sorted(known))})")
        try:
            cls = ParserManager.get_parser(tool_parser_name=name, enable_auto_tools=True, tokenizer=tokenizer)
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidInput(f"tool_call_parser {name!r}: {exc}") from None
        if cls is None:
            raise InvalidInput(f"tool_call_parser {name!r}: vLLM composed no parser")
    _PARSER_CLASSES[key] = cls
    return cls


class ToolCallParser:
    """One request's tool-call parsing: vLLM's request adjustments (``sampling``: the grammar of
    required/named tool_choice, ``skip_special_tokens``) and, per choice, its parser over the output.

    :meth:`stream` reads one streamed delta, :meth:`final` a choice's whole text; both answer
    (content, tool_calls, finish_reason) with tool calls in OpenAI's shapes (stream: delta tool calls
    with ``index``; final: whole calls) and finish_reason as vLLM's server sets it."""

    def __init__(self, calling: Mapping[str, Any], tokenizer: Any) -> None:
        from pydantic import ValidationError
        from vllm.entrypoints.openai.chat_completion.protocol import (
            ChatCompletionNamedToolChoiceParam,
            ChatCompletionRequest,
        )

        self._tokenizer = tokenizer
        self._cls = parser_class(calling.get("tool_call_parser"), tokenizer)
        self._auto = calling.get("tool_call_parser") is not None
        try:
            request = ChatCompletionRequest(
                messages=[{"role": "user", "content": ""}], tools=list(calling["tools"]),
                tool_choice=calling["tool_choice"], parallel_tool_calls=calling.get("parallel_tool_calls"))
        except (ValidationError, ValueError, vllm_client_error()) as exc:
            raise InvalidInput(f"tools: {_first_error(exc)}") from None
        before = request.skip_special_tokens
        try:
            request = self._cls(tokenizer, request.tools).adjust_request(request)
        except (ValueError, TypeError, vllm_client_error()) as exc:
            raise InvalidInput(f"tools: {exc}") from None
        self._request = request
        self.named = isinstance(request.tool_choice, ChatCompletionNamedToolChoiceParam)
        self.required = request.tool_choice == "required"
        self.parallel = request.parallel_tool_calls is not False
        self.sampling: dict[str, Any] = {}
        if request.structured_outputs is not None:
            self.sampling["structured_outputs"] = structured_outputs_dict(request.structured_outputs)
        if request.skip_special_tokens != before:
            self.sampling["skip_special_tokens"] = request.skip_special_tokens
        self._parsers: dict[int, Any] = {}
        self._streamed: dict[int, bool] = {}

    def _parser(self, index: int) -> Any:
        if index not in self._parsers:  # parsers keep state: one per choice, as vLLM's server keeps them
            self._parsers[index] = self._cls(self._tokenizer, self._request.tools)
        return self._parsers[index]

    def stream(self, index: int, text: str, token_ids: Sequence[int], finish_reason: str | None
               ) -> tuple[str, list[dict[str, Any]], str | None] | None:
        """One streamed delta of choice ``index``: its content and delta tool calls, or None when the
        parser holds the text back (a tag may be starting) and the choice goes on."""
        message = self._parser(index).parse_delta(text, list(token_ids), self._request, prompt_token_ids=[],
                                                  finished=finish_reason is not None)
        calls: list[dict[str, Any]] = []
        content = ""
        if message is not None:
            content = message.content or ""
            for call in message.tool_calls or []:
                if not self.parallel and call.index != 0:
                    continue
                out = call.model_dump(exclude_none=True)
                if "id" in out:  # a new call: OpenAI's first delta of it always has arguments, maybe ""
                    out.setdefault("function", {}).setdefault("arguments", "")
                calls.append(out)
        if calls:
            self._streamed[index] = True
        if finish_reason is None and not content and not calls:
            return None
        if finish_reason == "stop" and self._streamed.get(index) and not self.named:
            finish_reason = "tool_calls"
        return content, calls, finish_reason

    def final(self, index: int, text: str, token_ids: Sequence[int], finish_reason: str | None
              ) -> tuple[str, list[dict[str, Any]], str | None]:
        """A choice's whole text: its content (without the calls' markup) and its tool calls."""
        from vllm.renderers.chat_utils import make_tool_call_id

        _, content, found = self._parser(index).parse(text, self._request, enable_auto_tools=self._auto,
                                                      model_output_token_ids=list(token_ids))
        calls = [{"id": c.id or make_tool_call_id(), "type": "function",
                  "function": {"name": c.name, "arguments": c.arguments}} for c in found or []]
        if not self.parallel:
            calls = calls[:1]
        auto_called = bool(calls) and not self.named and not self.required
        if auto_called or (self.required and finish_reason == "stop"):
            finish_reason = "tool_calls"
        return content or "", calls, finish_reason


def structured_outputs_dict(params: Any) -> dict[str, Any]:
    """vLLM's StructuredOutputsParams as the ``structured_outputs`` sampling parameter (its set fields)."""
    out = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if f.name.startswith("_") or value is None or value is False:
            continue
        out[f.name] = value
    return out


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)


def dumps(calls: list[dict[str, Any]]) -> bytes:
    """The ``tool_calls`` output's JSON."""
    return json.dumps(calls, separators=(",", ":"), ensure_ascii=False).encode()
