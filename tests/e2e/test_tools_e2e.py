"""Function tools end to end: the real OpenAI SDK -> shim -> tritonserver -> llm (vLLM, tiny Qwen2-VL).

The random-weight model never chooses to call a tool, but named and "required" tool_choice hold its
output to vLLM's grammar of the tools, so the calls are real and schema-valid: without a tool-call
parser (the session's shim) through vLLM's JSON schema of the tools; with hermes (a second shim on the
same tritonserver, its tool_call_parser set) through hermes' <tool_call> structural tag, read back by
vLLM's hermes parser. Conversations replaying the calls and their results are rendered by the model's
chat template; malformed tools and tool messages are 400s naming the parameter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from tests.servers import serving

pytestmark = pytest.mark.e2e

# Enums keep the grammar's output short (a random model would fill free strings to max_tokens).
WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]},
                                                    "days": {"type": "integer", "enum": [1, 2, 3]}},
                  "required": ["city", "days"], "additionalProperties": False}
TIME_PARAMS = {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
               "required": ["zone"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The forecast of a city",
                                            "parameters": WEATHER_PARAMS}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The time in a zone",
                                         "parameters": TIME_PARAMS}}
SCHEMAS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
ASK = [{"role": "user", "content": "What is the weather in Paris for two days?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
GEN = {"max_tokens": 96, "temperature": 0}


@pytest.fixture(scope="module")
def client(shim) -> openai.OpenAI:
    return shim.client()


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


@pytest.fixture(scope="module")
def hermes(shim) -> Iterator[openai.OpenAI]:
    """A second shim on the session's tritonserver, with vLLM's hermes parser and auto tool choice on."""
    from openai_frontend.app import create_app
    from openai_frontend.backend.triton import TritonBackend

    settings = shim.settings.with_(tool_call_parser="hermes", enable_auto_tool_choice=True, port=0)
    with serving(create_app(settings, TritonBackend(shim.triton.grpc_url, timeout_s=120)), name="hermes-shim") as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300)


def valid_call(name: str, arguments: str) -> dict[str, Any]:
    """The call's arguments, checked against its tool's parameters schema."""
    args = json.loads(arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return args


def merged_stream(chunks: Any) -> tuple[str, list[dict[str, Any]], str | None, list[dict[str, Any]]]:
    """(content, calls merged per index, finish_reason, the first delta of each call) of a chat stream."""
    content, calls, finish, firsts = "", {}, None, []
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            for tc in delta.tool_calls or []:
                if tc.index not in calls:
                    firsts.append(tc.model_dump())
                    calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
                calls[tc.index]["arguments"] += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish, firsts


# --- without a parser: vLLM's JSON schema of the tools ---------------------------------------------


def test_named_tool_choice_answers_a_schema_valid_call_with_finish_reason_stop(client, model) -> None:
    r = client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER, TIME], tool_choice=NAMED, **GEN)
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice
    assert choice.message.content is None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("chatcmpl-tool-") and call.function.name == "get_weather"
    valid_call("get_weather", call.function.arguments)


def test_named_tool_choice_streams_the_call_as_openai_streams_it(client, model) -> None:
    chunks = client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER], tool_choice=NAMED,
                                            stream=True, **GEN)
    content, calls, finish, firsts = merged_stream(chunks)
    assert content == "" and finish == "stop"
    [first] = firsts
    assert first["index"] == 0 and first["id"].startswith("chatcmpl-tool-") and first["type"] == "function"
    assert first["function"]["name"] == "get_weather"
    [call] = calls
    valid_call("get_weather", call["arguments"])


def test_required_tool_choice_answers_calls_of_the_given_tools_with_finish_reason_tool_calls(client, model) -> None:
    r = client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       parallel_tool_calls=False, **GEN)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert len(choice.message.tool_calls) == 1  # parallel_tool_calls false: the grammar allows one
    call = choice.message.tool_calls[0]
    valid_call(call.function.name, call.function.arguments)


def test_required_tool_choice_streams_whole_calls_when_streaming(client, model) -> None:
    chunks = client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                            parallel_tool_calls=False, stream=True, **GEN)
    _, calls, finish, firsts = merged_stream(chunks)
    assert finish == "tool_calls" and len(calls) == 1 and firsts[0]["id"]
    valid_call(calls[0]["name"], calls[0]["arguments"])


def test_a_conversation_replaying_the_call_and_its_result_is_answered_in_text(client, model) -> None:
    first = client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER], tool_choice=NAMED, **GEN)
    message = first.choices[0].message
    messages = [*ASK, message, {"role": "tool", "tool_call_id": message.tool_calls[0].id,
                                "content": "Sunny, 24 C, then rain."}]
    r = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], tool_choice="none",
                                       max_tokens=8)
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.message.tool_calls is None
    assert isinstance(choice.message.content, str)
    # the replayed turns are in the prompt: more tokens than the question alone
    alone = client.chat.completions.create(model=model, messages=ASK, max_tokens=1)
    assert r.usage.prompt_tokens > alone.usage.prompt_tokens + 5


def test_tool_choice_none_answers_text(client, model) -> None:
    r = client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=8)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length")


def test_responses_named_tool_choice_answers_a_function_call_item(client, model) -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER_PARAMS}]
    r = client.responses.create(model=model, input="Weather in Oslo?", tools=tools,
                                tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=96,
                                temperature=0)
    assert r.status == "completed"
    [item] = r.output
    assert item.type == "function_call" and item.name == "get_weather" and item.call_id.startswith("chatcmpl-tool-")
    valid_call("get_weather", item.arguments)
    assert r.tools[0].name == "get_weather" and r.tool_choice.name == "get_weather"
    # the call and its output replayed as input items
    again = client.responses.create(model=model, tools=tools, tool_choice="none", max_output_tokens=8, input=[
        {"role": "user", "content": "Weather in Oslo?"}, item.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": item.call_id, "output": "Rain, 9 C."}])
    assert again.status in ("completed", "incomplete") and again.output[0].type == "message"


def test_responses_streams_function_call_events(client, model) -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER_PARAMS}]
    events = list(client.responses.create(model=model, input="Weather?", tools=tools, stream=True,
                                          tool_choice={"type": "function", "name": "get_weather"},
                                          max_output_tokens=96, temperature=0))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert done.arguments == deltas
    valid_call("get_weather", done.arguments)
    assert [i.type for i in events[-1].response.output] == ["function_call"]


# --- hermes: its structural tag, read back by vLLM's hermes parser ---------------------------------


def test_hermes_required_tool_choice_answers_calls_the_parser_read(hermes, model) -> None:
    strict = [{"type": "function", "function": {**WEATHER["function"], "strict": True}}]  # arguments to the schema
    r = hermes.chat.completions.create(model=model, messages=ASK, tools=strict, tool_choice="required", **GEN)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "get_weather"
    for call in choice.message.tool_calls:
        valid_call(call.function.name, call.function.arguments)


def test_hermes_named_tool_choice_streams_a_call_the_parser_read(hermes, model) -> None:
    strict = [{"type": "function", "function": {**WEATHER["function"], "strict": True}}]
    chunks = hermes.chat.completions.create(model=model, messages=ASK, tools=strict, tool_choice=NAMED,
                                            stream=True, **GEN)
    _, calls, finish, firsts = merged_stream(chunks)
    assert finish == "stop" and calls and firsts[0]["function"]["name"] == "get_weather"
    valid_call("get_weather", calls[0]["arguments"])


def test_hermes_auto_tool_choice_answers_when_the_server_has_a_parser(hermes, model) -> None:
    r = hermes.chat.completions.create(model=model, messages=ASK, tools=[WEATHER], max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, param, code", [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_news"}}},
     "tool_choice.function.name", "invalid_value"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}], "tool_choice": "required"},
     "tools[0].function.name", "missing_required_parameter"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": ["city"]}}], "tool_choice": "required"},
     "tools[0].function.parameters", "invalid_type"),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"tools": [WEATHER]}, "tool_choice", "invalid_value"),  # auto, and this server has no parser
    ({"tools": [WEATHER], "tool_choice": "none", "messages": [*ASK, {"role": "tool", "content": "sunny"}]},
     "messages[1].tool_call_id", "missing_required_parameter"),
    ({"tools": [WEATHER], "tool_choice": "none", "messages": [*ASK, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{city: Paris"}}]}]},
     "messages[1].tool_calls[0].function.arguments", "invalid_value"),
])
def test_malformed_tools_are_400s_naming_the_parameter(client, model, body, param, code) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, **{"messages": ASK, "max_tokens": 4, **body})
    error = err.value.body
    assert (error["param"], error["code"]) == (param, code), error
    assert error["type"] == "invalid_request_error"


def test_a_tool_schema_vllm_cannot_compile_is_a_400_naming_the_tools(client, model) -> None:
    bad = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "pattern": "(unclosed"}}, "required": ["x"]}}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=ASK, tools=[bad], tool_choice="required", max_tokens=8)
    assert err.value.body["param"] == "tools", err.value.body
    # the server stays up
    assert client.chat.completions.create(model=model, messages=ASK, max_tokens=1).choices
