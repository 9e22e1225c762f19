"""Function tools on the OpenAI surface: the definitions and ``tool_choice`` a request gives, the tool
turns of a conversation, and the calls the llm model found, in OpenAI's shapes.

Chat: ``tools: [{"type": "function", "function": {"name", "description", "parameters", "strict"}}]``,
``tool_choice`` (``"none"`` | ``"auto"`` | ``"required"`` | ``{"type": "function", "function": {"name"}}``),
``parallel_tool_calls``; assistant messages replay ``tool_calls``, ``role: "tool"`` messages answer one
by its ``tool_call_id``. Responses: ``tools: [{"type": "function", "name", ...}]``, ``tool_choice:
{"type": "function", "name"}``, input items ``function_call`` and ``function_call_output``.

The llm model does the work (video_pipeline.engines.tools): it renders the tools through the model's
chat template and parses the output with vLLM's tool parser. The parser is the operator's choice
(settings ``tool_call_parser`` and ``enable_auto_tool_choice``, vLLM's ``--tool-call-parser`` and
``--enable-auto-tool-choice``): it is a property of the served model, as in vLLM's server, and this
module sends its name with each request that has tools, so the llm model needs no setting of its own.
``"auto"`` needs both settings (vLLM refuses it otherwise); ``"required"`` and named tool_choice work
without them, through vLLM's JSON-schema grammar of the tools.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from openai_frontend.errors import OpenAIError, bad_request
from video_pipeline.engines.sampling import STRUCTURED_OUTPUTS

#: vLLM 0.32's ``--tool-call-parser`` names (vllm.tool_parsers._TOOL_PARSERS_TO_REGISTER); the shim
#: checks the setting against them at start without importing vLLM (tests/unit/test_tools_shim.py
#: keeps the list equal to the installed vLLM's).
VLLM_TOOL_PARSERS = (
    "apertus", "cohere_command3", "cohere_command4", "deepseek_v3", "deepseek_v31", "deepseek_v32", "deepseek_v4",
    "deepseek_v41", "dots", "ernie45", "functiongemma", "gemma4", "gigachat3", "glm45", "glm47", "granite",
    "granite-20b-fc", "granite4", "hermes", "hf", "hunyuan_a13b", "hy_v3", "hy_v4", "inkling", "internlm", "jamba",
    "k2_horizon", "kimi_k2", "kimi_k3", "lfm2", "ling3", "llama3_json", "llama4_json", "llama4_pythonic", "longcat",
    "mimo", "minicpm5", "minimax_m2", "minimax_m3", "mistral", "muse_glimmer", "olmo3", "openai", "phi4_mini_json",
    "plamo3", "poolside_v1", "pythonic", "qwen3_coder", "qwen3_json", "qwen3_xml", "seed_oss", "step3", "step3p5",
    "xlam",
)
# OpenAI's rule for function names.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FUNCTION_KEYS = ("name", "description", "parameters", "strict")
_CHOICES = ("none", "auto", "required")


def check_settings(tool_call_parser: str, enable_auto_tool_choice: bool) -> None:
    """The tool settings at start: a parser vLLM has; auto tool choice only with one (as vLLM checks)."""
    if tool_call_parser and tool_call_parser not in VLLM_TOOL_PARSERS:
        raise ValueError(f"setting tool_call_parser: {tool_call_parser!r} is not one of vLLM's tool parsers "
                         f"({', '.join(VLLM_TOOL_PARSERS)})")
    if enable_auto_tool_choice and not tool_call_parser:
        raise ValueError("setting enable_auto_tool_choice needs tool_call_parser (the parser of the served model's "
                         "tool calls, e.g. hermes for Qwen)")


# --- tool definitions and tool_choice ------------------------------------------------------------------


def _missing(param: str) -> OpenAIError:
    return OpenAIError(400, f"{param}: required", param=param, code="missing_required_parameter")


def _object(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise OpenAIError(400, f"{where}: must be an object", param=where, code="invalid_type")
    return raw


def _check_keys(raw: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    """Refuses the first (by name) of ``raw``'s keys that is not ``known``."""
    unknown = sorted(k for k in raw if k not in known)
    if unknown:
        raise OpenAIError(400, f"unsupported parameter: {where}.{unknown[0]}", param=f"{where}.{unknown[0]}",
                          code="unsupported_parameter")


def _required_object(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        raise _missing(where)
    return _object(raw, where)


def _optional(raw: dict[str, Any], key: str, kind: type, what: str, where: str) -> Any:
    """``raw[key]`` when it is given (None when not), refused unless a ``kind`` (``what`` in the message)."""
    value = raw.get(key)
    if value is not None and not isinstance(value, kind):
        raise OpenAIError(400, f"{where}.{key}: must be {what}", param=f"{where}.{key}", code="invalid_type")
    return value


def _call_id(raw: Any, where: str) -> str:
    """An id a tool call gives (``id``, or a Responses item's ``call_id``): a non-empty string."""
    if raw is None:
        raise _missing(where)
    if not isinstance(raw, str) or not raw:
        raise bad_request(f"{where}: must be a non-empty string", where)
    return raw


def _function(raw: Any, where: str) -> dict[str, Any]:
    """A function definition (chat's ``function`` object, or a Responses tool without its ``type``) as the
    chat shape's ``function``: name, description, parameters, strict, only those given."""
    _object(raw, where)
    _check_keys(raw, _FUNCTION_KEYS, where)
    name = raw.get("name")
    if name is None:
        raise _missing(f"{where}.name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise bad_request(f"{where}.name: {str(name)[:80]!r} is not a valid function name (letters, digits, "
                          "underscores and dashes, at most 64)", f"{where}.name")
    out: dict[str, Any] = {"name": name}
    description = _optional(raw, "description", str, "a string", where)
    if description is not None:
        out["description"] = description
    parameters = raw.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise OpenAIError(400, f"{where}.parameters: must be a JSON Schema object, got "
                              f"{type(parameters).__name__}", param=f"{where}.parameters", code="invalid_type")
        if parameters.get("type", "object") != "object":
            raise OpenAIError(400, f"{where}.parameters: the schema must be of type \"object\", got "
                              f"{str(parameters.get('type'))[:40]!r}", param=f"{where}.parameters",
                              code="invalid_value")
        out["parameters"] = parameters
    strict = _optional(raw, "strict", bool, "true or false", where)
    if strict is not None:
        out["strict"] = strict
    return out


def _unsupported_tool(kind: Any, where: str) -> OpenAIError:
    return OpenAIError(400, f"{where}.type: {str(kind)[:40]!r} tools are not supported; only function tools are",
                       param="tools", code="unsupported_parameter")


def _function_tools(raw: Any, *, may_be_empty: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """A ``tools`` list's entries with their parameter paths, each checked to be a function tool as it is
    reached (so the first bad entry is the one a refusal names)."""
    if not isinstance(raw, list):
        raise OpenAIError(400, "tools: must be a list of tools", param="tools", code="invalid_type")
    if not raw and not may_be_empty:
        raise bad_request("tools: must not be empty; give at least one tool or leave tools out", "tools",
                          code="empty_array")
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        _object(tool, where)
        if tool.get("type") != "function":
            raise _unsupported_tool(tool.get("type"), where)
        yield where, tool


def chat_tools(raw: Any) -> list[dict[str, Any]]:
    """Chat's ``tools`` as the llm takes them (OpenAI's chat shape, only the fields given)."""
    out = []
    for where, tool in _function_tools(raw, may_be_empty=False):
        _check_keys(tool, ("type", "function"), where)
        if tool.get("function") is None:
            raise _missing(f"{where}.function")
        out.append({"type": "function", "function": _function(tool["function"], f"{where}.function")})
    return out


def responses_tools(raw: Any) -> list[dict[str, Any]]:
    """The Responses API's ``tools`` (``{"type": "function", "name", ...}``) in chat's shape."""
    return [{"type": "function", "function": _function({k: v for k, v in tool.items() if k != "type"}, where)}
            for where, tool in _function_tools(raw, may_be_empty=True)]


def _names(tools: list[dict[str, Any]]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def _named(name: Any, tools: list[dict[str, Any]], param: str) -> dict[str, Any]:
    if name is None:
        raise _missing(param)
    if not isinstance(name, str) or name not in _names(tools):
        raise bad_request(f"{param}: no tool named {str(name)[:80]!r} in tools (they are: "
                          f"{', '.join(_names(tools))[:400]})", param)
    return {"type": "function", "function": {"name": name}}


def chat_tool_choice(raw: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    """Chat's ``tool_choice``, checked against the tools (as OpenAI and vLLM check it)."""
    if raw is None:
        return "auto" if tools else "none"
    if isinstance(raw, str):
        if raw not in _CHOICES:
            raise bad_request(f"tool_choice: must be none, auto, required or a named function, got {raw[:40]!r}",
                              "tool_choice")
    elif not isinstance(raw, dict):
        raise OpenAIError(400, "tool_choice: must be a string or an object", param="tool_choice",
                          code="invalid_type")
    if raw != "none" and not tools:
        raise bad_request("tool_choice: only allowed when tools are given", "tool_choice")
    if isinstance(raw, str):
        return raw
    if raw.get("type") != "function":
        raise bad_request(f"tool_choice.type: only function tool choices are supported, got "
                          f"{str(raw.get('type'))[:40]!r}", "tool_choice.type")
    function = _required_object(raw.get("function"), "tool_choice.function")
    return _named(function.get("name"), tools, "tool_choice.function.name")


def responses_tool_choice(raw: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    """The Responses API's ``tool_choice`` (default "auto", with or without tools) in chat's shape."""
    if raw is None or raw == "auto" or (raw == "none"):
        return raw or "auto"
    if raw == "required":
        if not tools:
            raise bad_request("tool_choice: \"required\" needs tools", "tool_choice")
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function":
        return _named(raw.get("name"), tools, "tool_choice.name")
    if isinstance(raw, dict):
        raise bad_request(f"tool_choice.type: only function tool choices are supported, got "
                          f"{str(raw.get('type'))[:40]!r}", "tool_choice.type")
    raise bad_request(f"tool_choice: must be none, auto, required or a function, got {str(raw)[:40]!r}", "tool_choice")


def tools_request(tools: list[dict[str, Any]], choice: str | dict[str, Any], parallel: bool | None
                  ) -> dict[str, Any] | None:
    """A conversation's tool calling (None without tools)."""
    if not tools:
        return None
    return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel}


def llm_document(request: Mapping[str, Any] | None, tool_call_parser: str, enable_auto: bool) -> dict[str, Any] | None:
    """The llm model's ``tools`` input for a conversation's tool calling: with the operator's parser."""
    if request is None:
        return None
    if request["tool_choice"] == "auto" and not enable_auto:
        raise bad_request('tool_choice: "auto" (the default with tools) needs a tool-call parser on this server: '
                          'its operator sets tool_call_parser and enable_auto_tool_choice (vLLM\'s --tool-call-parser '
                          'and --enable-auto-tool-choice); give tool_choice "none", "required" or a named function',
                          "tool_choice")
    return {**request, "tool_call_parser": tool_call_parser or None}


def tools_for_llm(request: Mapping[str, Any] | None, settings: Any, sampling: Mapping[str, Any]
                  ) -> dict[str, Any] | None:
    """The llm model's ``tools`` input (None without tools), with the server's parser; when tool_choice
    forces a call, the llm's refusals of its grammar (``structured_outputs: ...``) name ``tools``."""
    document = llm_document(request, settings.tool_call_parser, settings.enable_auto_tool_choice)
    params = getattr(sampling, "params", None)
    if forces_a_call(request) and isinstance(params, dict):
        params[STRUCTURED_OUTPUTS] = "tools"
    return document


def forces_a_call(request: Mapping[str, Any] | None) -> bool:
    """Whether tool_choice makes the model call a tool (required, or a named function): vLLM's grammar of
    the tools then holds the output, and its errors are about the tools."""
    return request is not None and request["tool_choice"] != "auto" and request["tool_choice"] != "none"


# --- the tool turns of a conversation ----------------------------------------------------------------


def tool_call_params(raw: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls`` (replayed): OpenAI's call objects, their arguments a JSON object."""
    if not isinstance(raw, list):
        raise OpenAIError(400, f"{where}: must be a list", param=where, code="invalid_type")
    out = []
    for j, call in enumerate(raw):
        at = f"{where}[{j}]"
        _object(call, at)
        _check_keys(call, ("id", "type", "function"), at)
        if call.get("type", "function") != "function":
            raise bad_request(f"{at}.type: only function calls are supported, got {str(call.get('type'))[:40]!r}",
                              f"{at}.type")
        call_id = _call_id(call.get("id"), f"{at}.id")
        function = _required_object(call.get("function"), f"{at}.function")
        _check_keys(function, ("name", "arguments"), f"{at}.function")
        out.append({"id": call_id, "type": "function",
                    "function": _call(function.get("name"), function.get("arguments"), f"{at}.function")})
    return out


def _call(name: Any, arguments: Any, where: str) -> dict[str, str]:
    if name is None:
        raise _missing(f"{where}.name")
    if not isinstance(name, str) or not name:
        raise bad_request(f"{where}.name: must be a non-empty string", f"{where}.name")
    return {"name": name, "arguments": checked_arguments(arguments, f"{where}.arguments")}


def checked_arguments(raw: Any, param: str) -> str:
    """A replayed call's ``arguments``: JSON text of an object (the chat template renders them as one)."""
    if raw is None:
        raise _missing(param)
    if not isinstance(raw, str):
        raise OpenAIError(400, f"{param}: must be a string of JSON", param=param, code="invalid_type")
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise bad_request(f"{param}: not valid JSON ({exc})", param) from None
    if not isinstance(value, dict):
        raise bad_request(f"{param}: must be a JSON object, got {type(value).__name__}", param)
    return raw


def tool_content(raw: Any, where: str) -> str:
    """A tool message's content (or a function_call_output's output): a string, or text parts joined."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise OpenAIError(400, f"{where}: must be a string or a list of text parts", param=where,
                          code="invalid_type")
    texts = []
    for j, part in enumerate(raw):
        if not isinstance(part, dict) or part.get("type") not in ("text", "input_text", "output_text") \
                or not isinstance(part.get("text"), str):
            raise bad_request(f"{where}[{j}]: a tool's result takes only text parts", f"{where}[{j}]")
        texts.append(part["text"])
    return "\n".join(texts)


def function_call_item(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """A Responses ``function_call`` input item as an assistant's tool call."""
    _check_keys(raw, ("type", "id", "call_id", "name", "arguments", "status"), where)
    call_id = _call_id(raw.get("call_id"), f"{where}.call_id")
    return {"id": call_id, "type": "function", "function": _call(raw.get("name"), raw.get("arguments"), where)}


def function_call_output_item(raw: dict[str, Any], where: str) -> tuple[str, str]:
    """A Responses ``function_call_output`` input item: (call_id, output text)."""
    _check_keys(raw, ("type", "id", "call_id", "output", "status"), where)
    call_id = _call_id(raw.get("call_id"), f"{where}.call_id")
    if raw.get("output") is None:
        raise _missing(f"{where}.output")
    return call_id, tool_content(raw["output"], f"{where}.output")


# --- the calls found, in OpenAI's shapes -------------------------------------------------------------


def message_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A completion message's ``tool_calls``: {"id", "type", "function": {"name", "arguments"}}."""
    return [{"id": c.get("id", ""), "type": "function",
             "function": {"name": c["function"]["name"], "arguments": c["function"].get("arguments", "")}}
            for c in calls]


def output_item(call: dict[str, Any], item_id: str, status: str = "completed") -> dict[str, Any]:
    """A Responses ``function_call`` output item for a call."""
    return {"type": "function_call", "id": item_id, "call_id": call.get("id", ""),
            "name": call["function"]["name"], "arguments": call["function"].get("arguments", ""), "status": status}


def response_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The response object's ``tools``: the request's, in the Responses API's shape."""
    return [{"type": "function", "name": t["function"]["name"], "description": t["function"].get("description"),
             "parameters": t["function"].get("parameters"), "strict": t["function"].get("strict", False)}
            for t in tools]


def response_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any]:
    """The response object's ``tool_choice``, in the Responses API's shape."""
    if isinstance(choice, dict):
        return {"type": "function", "name": choice["function"]["name"]}
    return choice or "auto"


class StreamedCalls:
    """Delta tool calls (llm's stream: ``index``, then ``id``/``name`` once, then argument fragments)
    merged into whole calls, in the order they started."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: list[dict[str, Any]]) -> list[tuple[int, bool, str]]:
        """Merges ``deltas``; per delta: (call index, whether it started the call, its argument fragment)."""
        out = []
        for delta in deltas:
            index = int(delta.get("index", len(self.calls)))
            function = delta.get("function") or {}
            new = index not in self.calls
            call = self.calls.setdefault(index, {"id": "", "type": "function", "function": {"name": "",
                                                                                              "arguments": ""}})
            if delta.get("id"):
                call["id"] = delta["id"]
            if function.get("name"):
                call["function"]["name"] = function["name"]
            fragment = function.get("arguments") or ""
            call["function"]["arguments"] += fragment
            out.append((index, new, fragment))
        return out

    def whole(self) -> list[dict[str, Any]]:
        return [self.calls[i] for i in sorted(self.calls)]
