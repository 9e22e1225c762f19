"""Function tools through the shim, on a fake llm: what requests become (llm's `tools` document, tool
turns in `messages`), the shapes of the calls in chat completions and Responses (whole and streamed),
and the 400s for malformed tools, tool_choice and tool messages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.backend.base import Delta, LlmRequest
from openai_frontend.settings import Settings
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, sse_data, sse_named

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = {"id": "chatcmpl-tool-1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
# what the llm streams for that call: index, id, type and the name first, then argument fragments
STREAMED = [[{"index": 0, "id": "chatcmpl-tool-1", "type": "function", "function": {"name": "get_weather",
                                                                                     "arguments": ""}}],
            [{"index": 0, "function": {"arguments": '{"city": '}}], [{"index": 0, "function": {"arguments": '"Oslo"}'}}]]


@dataclass
class ToolBackend(FakeBackend):
    """The fake llm answering ``text`` and ``calls`` (whole when not streaming; ``STREAMED`` when streaming)."""

    text: str = ""
    calls: list[dict[str, Any]] = field(default_factory=lambda: [CALL])

    async def generate(self, request: LlmRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        if not request.stream:
            yield Delta(self.text, 0, "tool_calls" if self.calls else "stop", 20, 9, tool_calls=list(self.calls) or None)
            return
        if self.text:
            yield Delta(self.text, 0, None, 20, 1)
        for k, calls in enumerate(STREAMED if self.calls else []):
            yield Delta("", 0, None, 20, k + 2, tool_calls=calls)
        yield Delta("", 0, "tool_calls" if self.calls else "stop", 20, 5)


@pytest.fixture
def backend() -> ToolBackend:
    return ToolBackend()


@pytest.fixture
def auto_client(settings: Settings, backend: ToolBackend) -> Iterator[TestClient]:
    """The shim with hermes as its tool-call parser and auto tool choice on."""
    auto = settings.with_(tool_call_parser="hermes", enable_auto_tool_choice=True)
    with TestClient(create_app(auto, backend), raise_server_exceptions=False) as c:
        yield c


def chat(client: TestClient, messages: list[dict[str, Any]] | None = None, **body: Any) -> Any:
    return client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": messages or [{"role": "user", "content": "Weather in Oslo?"}], **body})


def respond(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/responses", json={"model": MODEL, **body})


def error_of(r: Any) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    return r.json()["error"]


# --- what requests become ----------------------------------------------------------------------------


def test_chat_sends_the_tools_to_llm_without_a_parser_when_tool_choice_is_none(client, backend) -> None:
    backend.calls = []
    r = chat(client, tools=[WEATHER], tool_choice="none")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "" and "tool_calls" not in r.json()["choices"][0]["message"]
    assert backend.requests[0].tools == {"tools": [WEATHER], "tool_choice": "none", "parallel_tool_calls": None,
                                         "tool_call_parser": None}


def test_chat_sends_the_servers_parser_when_auto_tool_choice_is_on(auto_client, backend) -> None:
    r = chat(auto_client, tools=[WEATHER], parallel_tool_calls=False)
    assert r.status_code == 200, r.text
    assert backend.requests[0].tools == {"tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": False,
                                         "tool_call_parser": "hermes"}


def test_chat_answers_400_for_auto_tool_choice_when_the_server_has_no_parser(client, backend) -> None:
    err = error_of(chat(client, tools=[WEATHER]))
    assert err["param"] == "tool_choice" and "tool_call_parser" in err["message"] and "auto" in err["message"]
    assert backend.requests == []


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_chat_takes_required_and_named_tool_choice_when_the_server_has_no_parser(client, backend, choice) -> None:
    r = chat(client, tools=[WEATHER], tool_choice=choice)
    assert r.status_code == 200, r.text
    assert backend.requests[0].tools["tool_choice"] == choice and backend.requests[0].tools["tool_call_parser"] is None
    # the llm's refusals of the tools' grammar name the tools
    assert backend.requests[0].sampling.params["structured_outputs"] == "tools"


def test_chat_replays_assistant_tool_calls_and_tool_results_as_llm_messages(client, backend) -> None:
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None},
                {"role": "tool", "tool_call_id": "chatcmpl-tool-1", "content": [{"type": "text", "text": "sunny"}]},
                {"role": "user", "content": "Thanks"}]
    r = chat(client, messages, tools=[WEATHER], tool_choice="none")
    assert r.status_code == 200, r.text
    assert backend.requests[0].messages == [
        {"role": "user", "content": "Weather in Oslo?"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "sunny", "tool_call_id": "chatcmpl-tool-1"}, {"role": "user", "content": "Thanks"}]


# --- the calls, in OpenAI's shapes -------------------------------------------------------------------


def test_chat_answers_the_calls_in_message_tool_calls_with_null_content_when_not_streaming(auto_client) -> None:
    r = chat(auto_client, tools=[WEATHER])
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {"role": "assistant", "content": None, "refusal": None, "tool_calls": [CALL]}


def test_chat_keeps_the_text_beside_the_calls_when_the_model_wrote_some(auto_client, backend) -> None:
    backend.text = "Let me look."
    message = chat(auto_client, tools=[WEATHER]).json()["choices"][0]["message"]
    assert message["content"] == "Let me look." and message["tool_calls"] == [CALL]


def test_chat_streams_delta_tool_calls_as_openai_streams_them(auto_client) -> None:
    r = chat(auto_client, tools=[WEATHER], stream=True)
    assert r.status_code == 200, r.text
    chunks = [json.loads(d) for d in sse_data(r.text)[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert [d["tool_calls"] for d in deltas if "tool_calls" in d] == STREAMED
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_responses_answers_a_function_call_item_and_echoes_its_tools_when_not_streaming(auto_client, backend) -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}]
    r = respond(auto_client, input="Weather in Oslo?", tools=tools)
    assert r.status_code == 200, r.text
    body = r.json()
    [item] = body["output"]
    assert item["type"] == "function_call" and item["id"].startswith("fc_") and item["status"] == "completed"
    assert (item["call_id"], item["name"], item["arguments"]) == ("chatcmpl-tool-1", "get_weather", '{"city": "Oslo"}')
    assert body["tools"] == [{"type": "function", "name": "get_weather", "description": None,
                              "parameters": WEATHER["function"]["parameters"], "strict": False}]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True
    assert backend.requests[0].tools["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}}]


def test_responses_puts_the_message_before_the_calls_when_the_model_wrote_text(auto_client, backend) -> None:
    backend.text = "Let me look."
    body = respond(auto_client, input="Weather?", tools=[{"type": "function", "name": "get_weather"}]).json()
    assert [i["type"] for i in body["output"]] == ["message", "function_call"]
    assert body["output"][0]["content"][0]["text"] == "Let me look."


def test_responses_streams_function_call_events_when_the_model_calls_a_tool(auto_client) -> None:
    r = respond(auto_client, input="Weather?", tools=[{"type": "function", "name": "get_weather"}], stream=True)
    assert r.status_code == 200, r.text
    events = sse_named(r.text)
    kinds = [k for k, _ in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta", "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    added = events[2][1]["item"]
    assert added["type"] == "function_call" and added["status"] == "in_progress" and added["name"] == "get_weather"
    assert "".join(e["delta"] for k, e in events if k.endswith("arguments.delta")) == '{"city": "Oslo"}'
    done = events[5][1]
    assert done["arguments"] == '{"city": "Oslo"}' and done["item_id"] == added["id"] and done["output_index"] == 0
    final = events[-1][1]["response"]
    assert [i["type"] for i in final["output"]] == ["function_call"] and final["output"][0]["status"] == "completed"
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))


def test_responses_streams_the_message_first_then_the_call_when_there_is_text(auto_client, backend) -> None:
    backend.text = "Let me look."
    events = sse_named(respond(auto_client, input="Weather?", stream=True,
                               tools=[{"type": "function", "name": "get_weather"}]).text)
    added = [(e["output_index"], e["item"]["type"]) for k, e in events if k == "response.output_item.added"]
    assert added == [(0, "message"), (1, "function_call")]
    assert [i["type"] for i in events[-1][1]["response"]["output"]] == ["message", "function_call"]


def test_responses_replays_function_call_and_function_call_output_items_as_tool_turns(client, backend) -> None:
    backend.calls = []
    r = respond(client, tool_choice="none", tools=[{"type": "function", "name": "get_weather"}], input=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Oslo"}', "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}])
    assert r.status_code == 200, r.text
    assert backend.requests[0].messages == [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}], "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}]


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, param, code", [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
     "tool_choice.function.name", "invalid_value"),
    ({"tools": [{"type": "function", "function": {"parameters": {"type": "object"}}}], "tool_choice": "required"},
     "tools[0].function.name", "missing_required_parameter"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "an object"}}], "tool_choice": "none"},
     "tools[0].function.parameters", "invalid_type"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
      "tool_choice": "none"}, "tools[0].function.parameters", "invalid_value"),
    ({"tools": [{"type": "function", "function": {"name": "no spaces"}}], "tool_choice": "none"},
     "tools[0].function.name", "invalid_value"),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"tools": [], "tool_choice": "none"}, "tools", "empty_array"),
    ({"tools": [{"type": "custom", "custom": {"name": "c"}}], "tool_choice": "none"}, "tools", "unsupported_parameter"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
])
def test_chat_answers_400_naming_malformed_tools_and_tool_choice(client, backend, body, param, code) -> None:
    err = error_of(chat(client, **body))
    assert (err["param"], err["code"]) == (param, code), err
    assert err["type"] == "invalid_request_error" and backend.requests == []


@pytest.mark.parametrize("message, param, code", [
    ({"role": "tool", "content": "sunny"}, "messages[1].tool_call_id", "missing_required_parameter"),
    ({"role": "tool", "tool_call_id": "c", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
     "messages[1].content[0]", "invalid_value"),
    ({"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "get_weather", "arguments": "{oops"}}]},
     "messages[1].tool_calls[0].function.arguments", "invalid_value"),
    ({"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "get_weather", "arguments": "[1, 2]"}}]},
     "messages[1].tool_calls[0].function.arguments", "invalid_value"),
    ({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
     "messages[1].tool_calls[0].id", "missing_required_parameter"),
    ({"role": "user", "content": "x", "tool_calls": [CALL]}, "messages[1].tool_calls", "invalid_value"),
    ({"role": "user", "content": "x", "tool_call_id": "c"}, "messages[1].tool_call_id", "invalid_value"),
])
def test_chat_answers_400_naming_malformed_tool_messages(client, backend, message, param, code) -> None:
    err = error_of(chat(client, [{"role": "user", "content": "q"}, message], tools=[WEATHER], tool_choice="none"))
    assert (err["param"], err["code"]) == (param, code), err
    assert backend.requests == []


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}},
     "tool_choice.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function"}]}, "tools[0].name"),
    ({"tools": [{"type": "web_search"}]}, "tools"),
    ({"tools": [{"type": "function", "name": "f"}], "tool_choice": "auto",
      "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"tools": [{"type": "function", "name": "f"}], "tool_choice": "none",
      "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "nope"}]}, "input[0].arguments"),
])
def test_responses_answers_400_naming_malformed_tools_and_items(client, backend, body, param) -> None:
    err = error_of(respond(client, **{"input": "Hi", **body}))
    assert err["param"] == param, err
    assert backend.requests == []


def test_settings_refuse_auto_tool_choice_without_a_parser_and_unknown_parsers() -> None:
    with pytest.raises(ValueError, match="enable_auto_tool_choice needs tool_call_parser"):
        Settings(enable_auto_tool_choice=True)
    with pytest.raises(ValueError, match="not one of vLLM's tool parsers"):
        Settings(tool_call_parser="hermes2")
