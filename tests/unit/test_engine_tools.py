"""Tool calling in the llm model: vLLM's tool parsers on crafted model text (hermes, and vLLM's JSON
forms of required / named tool_choice), the sampling adjustments they ask for, tools and tool
messages through a chat template, and LlmHandler sending `tool_calls` beside the content."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import numpy as np
import pytest

from tests.unit.test_llm_handler_media import Sink
from video_pipeline import contract as C
from video_pipeline.engines import tiny_model
from video_pipeline.engines.background import BackgroundEngine
from video_pipeline.engines.prompt import normalize_messages, render_prompt
from video_pipeline.engines.tools import ToolCallParser, tool_calling_of
from video_pipeline.engines.types import GenerationDelta, GenerationRequest
from video_pipeline.errors import InvalidInput
from video_pipeline.llm_handler import LlmHandler
from video_pipeline.steps import json_tensor

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
HERMES_TEXT = ('Let me look. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
               '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')

# A Qwen2.5-style template with its tool sections (the tiny model's Qwen2-VL template has none).
TOOLS_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}"
    "\n</tools><|im_end|>\n{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n{{ message.content }}"
    "{%- for call in message.tool_calls %}<tool_call>\n{\"name\": \"{{ call.function.name }}\", \"arguments\": "
    "{{ call.function.arguments | tojson }}}\n</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response id={{ message.tool_call_id }}>\n"
    "{{ message.content }}\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_model.build_tokenizer()


def calling(choice: Any = "auto", parser: str | None = "hermes", tools: list[Any] | None = None,
            parallel: bool | None = None) -> dict[str, Any]:
    _, doc = tool_calling_of({"tools": tools or [WEATHER, TIME], "tool_choice": choice,
                              "parallel_tool_calls": parallel, "tool_call_parser": parser})
    assert doc is not None
    return doc


def pieces(text: str, size: int = 4) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def stream_all(parser: ToolCallParser, text: str, finish: str = "stop") -> tuple[str, list[dict], str | None]:
    """Feeds ``text`` in small deltas; the content, the delta calls merged per index, the last finish."""
    content, merged, last = "", {}, None
    chunks = pieces(text)
    for k, piece in enumerate(chunks):
        got = parser.stream(0, piece, (), finish if k == len(chunks) - 1 else None)
        if got is None:
            continue
        text_part, calls, last = got
        content += text_part
        for call in calls:
            into = merged.setdefault(call["index"], {"function": {"arguments": ""}})
            for key in ("id", "type"):
                if key in call:
                    into[key] = call[key]
            fn = call.get("function", {})
            if "name" in fn:
                into["function"]["name"] = fn["name"]
            into["function"]["arguments"] += fn.get("arguments", "")
    return content, [merged[i] for i in sorted(merged)], last


# --- the request document ---------------------------------------------------------------------------


def test_tool_calling_of_reads_nothing_when_tool_choice_is_none() -> None:
    tools, doc = tool_calling_of({"tools": [WEATHER], "tool_choice": "none"})
    assert tools == [WEATHER] and doc is None


def test_tool_calling_of_defaults_tool_choice_to_auto_when_tools_are_given() -> None:
    _, doc = tool_calling_of({"tools": [WEATHER]})
    assert doc is not None and doc["tool_choice"] == "auto"


@pytest.mark.parametrize("document, says", [
    ({"tools": [WEATHER], "bogus": 1}, "unknown key"),
    ({"tools": "x"}, "list of tool objects"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [], "tool_choice": "required"}, "needs tools"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"tools": [WEATHER], "tool_call_parser": ""}, "tool_call_parser"),
    ([], "JSON object"),
])
def test_tool_calling_of_raises_invalid_input_when_the_document_is_malformed(document: Any, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        tool_calling_of(document)


def test_tool_call_parser_raises_invalid_input_when_the_parser_is_unknown(tokenizer: Any) -> None:
    with pytest.raises(InvalidInput, match="not one of vLLM's tool parsers.*hermes"):
        ToolCallParser(calling(parser="no_such_parser"), tokenizer)


def test_tool_call_parser_raises_invalid_input_when_the_named_tool_is_not_among_the_tools(tokenizer: Any) -> None:
    with pytest.raises(InvalidInput, match="tool_choice"):
        ToolCallParser(calling({"type": "function", "function": {"name": "nope"}}, parser=None), tokenizer)


# --- hermes ("auto") on crafted model text -----------------------------------------------------------


def test_hermes_final_finds_every_call_and_keeps_the_text_before_them_when_auto(tokenizer: Any) -> None:
    parser = ToolCallParser(calling(), tokenizer)
    content, calls, finish = parser.final(0, HERMES_TEXT, (), "stop")
    assert content == "Let me look. " and finish == "tool_calls"
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"}), ("function", "get_time", {})]
    assert all(c["id"].startswith("chatcmpl-tool-") for c in calls) and calls[0]["id"] != calls[1]["id"]


def test_hermes_final_answers_plain_text_when_the_model_calls_no_tool(tokenizer: Any) -> None:
    parser = ToolCallParser(calling(), tokenizer)
    assert parser.final(0, "It is sunny.", (), "stop") == ("It is sunny.", [], "stop")


def test_hermes_stream_sends_id_and_name_first_then_argument_fragments_when_auto(tokenizer: Any) -> None:
    parser = ToolCallParser(calling(), tokenizer)
    firsts = []
    for k, piece in enumerate(pieces(HERMES_TEXT)):
        got = parser.stream(0, piece, (), None if k < len(pieces(HERMES_TEXT)) - 1 else "stop")
        if got:
            firsts += [c for c in got[1] if "id" in c]
    assert [(c["index"], c["type"], c["function"]["name"], c["function"]["arguments"]) for c in firsts] == [
        (0, "function", "get_weather", ""), (1, "function", "get_time", "")]
    content, calls, finish = stream_all(ToolCallParser(calling(), tokenizer), HERMES_TEXT)
    assert content.strip() == "Let me look." and finish == "tool_calls"
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {})]


def test_hermes_stream_holds_back_a_partial_tag_and_ends_with_stop_when_no_call_follows(tokenizer: Any) -> None:
    parser = ToolCallParser(calling(), tokenizer)
    assert parser.stream(0, "Hi <tool", (), None) == ("Hi ", [], None)
    assert parser.stream(0, "box> done", (), "stop") == ("<toolbox> done", [], "stop")


def test_hermes_asks_for_special_tokens_when_tools_may_be_called(tokenizer: Any) -> None:
    assert ToolCallParser(calling(), tokenizer).sampling == {"skip_special_tokens": False}


def test_hermes_required_asks_for_its_structural_tag_and_reads_the_calls_from_it(tokenizer: Any) -> None:
    parser = ToolCallParser(calling("required"), tokenizer)
    tag = json.loads(parser.sampling["structured_outputs"]["structural_tag"])
    assert '<tool_call>\n{"name": "get_weather", "arguments": ' in [t["begin"] for t in tag["format"]["tags"]]
    content, calls, finish = parser.final(0, HERMES_TEXT, (), "stop")
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"] and finish == "tool_calls"


def test_parallel_tool_calls_false_keeps_only_the_first_call_when_streamed_or_not(tokenizer: Any) -> None:
    assert len(ToolCallParser(calling(parallel=False), tokenizer).final(0, HERMES_TEXT, (), "stop")[1]) == 1
    _, calls, _ = stream_all(ToolCallParser(calling(parallel=False), tokenizer), HERMES_TEXT)
    assert [c["function"]["name"] for c in calls] == ["get_weather"]


# --- required / named without a parser: vLLM's JSON schema and JSON forms ----------------------------


def test_named_tool_choice_asks_for_the_tools_parameters_schema_when_no_parser_is_set(tokenizer: Any) -> None:
    parser = ToolCallParser(calling(NAMED, parser=None), tokenizer)
    assert parser.sampling == {"structured_outputs": {"json": WEATHER["function"]["parameters"]}}


def test_named_tool_choice_reads_the_whole_output_as_the_arguments_and_finishes_with_stop(tokenizer: Any) -> None:
    parser = ToolCallParser(calling(NAMED, parser=None), tokenizer)
    content, calls, finish = parser.final(0, '{"city": "Oslo"}', (), "stop")
    assert content == "" and finish == "stop"
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [("get_weather", '{"city": "Oslo"}')]
    content, calls, finish = stream_all(ToolCallParser(calling(NAMED, parser=None), tokenizer), '{"city": "Oslo"}')
    assert content == "" and finish == "stop"
    assert [(c["type"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("function", "get_weather", '{"city": "Oslo"}')]


def test_required_tool_choice_asks_for_an_array_of_calls_and_reads_it_when_no_parser_is_set(tokenizer: Any) -> None:
    parser = ToolCallParser(calling("required", parser=None, parallel=False), tokenizer)
    schema = parser.sampling["structured_outputs"]["json"]
    assert schema["type"] == "array" and schema["minItems"] == 1 and schema["maxItems"] == 1
    text = '[{"name": "get_weather", "parameters": {"city": "Rome"}}, {"name": "get_time", "parameters": {}}]'
    content, calls, finish = ToolCallParser(calling("required", parser=None), tokenizer).final(0, text, (), "stop")
    assert finish == "tool_calls" and [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                                       for c in calls] == [("get_weather", {"city": "Rome"}), ("get_time", {})]
    _, streamed, finish = stream_all(ToolCallParser(calling("required", parser=None), tokenizer), text)
    assert finish == "tool_calls" and [c["function"]["name"] for c in streamed] == ["get_weather", "get_time"]
    assert json.loads(streamed[0]["function"]["arguments"]) == {"city": "Rome"}


# --- tools and tool messages through a chat template -------------------------------------------------


def test_render_prompt_gives_tools_and_tool_messages_to_the_template_when_tools_are_given(tokenizer: Any) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"},
                                                                 {"type": "text", "text": "21C"}]},
    ]
    text = render_prompt(GenerationRequest("r", messages=messages, tools=[WEATHER]), tokenizer, TOOLS_TEMPLATE)
    assert '"name": "get_weather"' in text.split("</tools>")[0]  # the tool's definition, as JSON
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<tool_response id=call_1>\nsunny\n21C\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant")


def test_render_prompt_renders_tool_messages_with_a_template_that_has_no_tools_section(tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "Hi"},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                      "function": {"name": "get_time", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "noon"}]
    text = render_prompt(GenerationRequest("r", messages=messages, tools=[TIME]), tokenizer, tiny_model.CHAT_TEMPLATE)
    assert "<|im_start|>tool\nnoon<|im_end|>" in text


@pytest.mark.parametrize("message, says", [
    ({"role": "tool", "content": "x"}, "tool_call_id"),
    ({"role": "tool", "tool_call_id": "c", "content": [{"type": "image"}]}, "only text parts"),
    ({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{"}}]},
     r"tool_calls\[0\].function.arguments: not valid JSON"),
    ({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "[1]"}}]},
     "must be a JSON object"),
    ({"role": "assistant", "tool_calls": [{"type": "custom", "custom": {}}]}, "only function tool calls"),
    ({"role": "assistant", "tool_calls": [{"type": "function", "function": {"arguments": "{}"}}]}, "name: required"),
])
def test_normalize_messages_raises_invalid_input_when_tool_messages_are_malformed(message: Any, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        normalize_messages([{"role": "user", "content": "q"}, message])


# --- LlmHandler: the `tools` input and the `tool_calls` output ---------------------------------------


class ScriptedEngine:
    """Emits ``chunks`` as one choice's deltas (finish_reason ``finish`` on the last); records requests."""

    def __init__(self, chunks: list[str], finish: str = "stop") -> None:
        self.chunks, self.finish = chunks, finish
        self.tokenizer = tiny_model.build_tokenizer()
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationDelta, None]:
        self.requests.append(request)
        for i, text in enumerate(self.chunks if request.stream else ["".join(self.chunks)]):
            await asyncio.sleep(0)
            last = i == (len(self.chunks) if request.stream else 1) - 1
            yield GenerationDelta(index=0, text=text, token_ids=(i,), finish_reason=self.finish if last else None,
                                  stop_reason=None, prompt_tokens=5, completion_tokens=i + 1, video_tokens=0,
                                  image_tokens=0)

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self) -> None: ...

    def shutdown(self) -> None: ...


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedEngine, BackgroundEngine]]:
    fake = ScriptedEngine(pieces(HERMES_TEXT, 7))
    engine = BackgroundEngine(lambda: fake)
    yield fake, engine
    engine.shutdown()


def run(engine: BackgroundEngine, stream: bool, document: dict[str, Any]) -> Sink:
    sink = Sink()
    handler = LlmHandler(engine)
    handler.submit({C.MESSAGES: json_tensor([[{"role": "user", "content": "Weather?"}]]),
                    C.STREAM: np.array([stream]), C.TOOLS: json_tensor([document])}, "req-1", sink)
    assert sink.done.wait(30) and sink.error is None, sink.error
    return sink


def text_of(outputs: dict[str, np.ndarray], name: str) -> str:
    return outputs[name].reshape(-1)[0].decode()


def test_llm_handler_answers_the_calls_in_tool_calls_beside_the_content_when_not_streaming(scripted: Any) -> None:
    fake, engine = scripted
    sink = run(engine, False, {"tools": [WEATHER, TIME], "tool_choice": "auto", "tool_call_parser": "hermes"})
    [out] = sink.sent
    assert text_of(out, C.TEXT_OUTPUT) == "Let me look. " and text_of(out, C.FINISH_REASON) == "tool_calls"
    calls = json.loads(text_of(out, C.TOOL_CALLS))
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert fake.requests[0].sampling["skip_special_tokens"] is False  # hermes' adjustment reached the engine
    assert fake.requests[0].tools == [WEATHER, TIME]


def test_llm_handler_streams_delta_tool_calls_and_ends_with_tool_calls_when_streaming(scripted: Any) -> None:
    _, engine = scripted
    sink = run(engine, True, {"tools": [WEATHER, TIME], "tool_call_parser": "hermes"})
    deltas = [json.loads(text_of(o, C.TOOL_CALLS)) for o in sink.sent if C.TOOL_CALLS in o]
    firsts = [c for d in deltas for c in d if "id" in c]
    assert [(c["index"], c["function"]["name"]) for c in firsts] == [(0, "get_weather"), (1, "get_time")]
    args = "".join(c["function"].get("arguments", "") for d in deltas for c in d if c["index"] == 0)
    assert json.loads(args) == {"city": "Paris"}
    assert text_of(sink.sent[-1], C.FINISH_REASON) == "tool_calls"
    assert "".join(text_of(o, C.TEXT_OUTPUT) for o in sink.sent).strip() == "Let me look."


def test_llm_handler_renders_tools_but_parses_nothing_when_tool_choice_is_none(scripted: Any) -> None:
    fake, engine = scripted
    sink = run(engine, False, {"tools": [WEATHER], "tool_choice": "none", "tool_call_parser": "hermes"})
    [out] = sink.sent
    assert C.TOOL_CALLS not in out and text_of(out, C.TEXT_OUTPUT) == HERMES_TEXT
    assert fake.requests[0].tools == [WEATHER] and fake.requests[0].tool_calling is None


def test_llm_handler_refuses_tools_with_a_raw_prompt() -> None:
    handler = LlmHandler(engine=None)
    with pytest.raises(InvalidInput, match="'tools' needs 'messages'"):
        handler.submit({C.TEXT_INPUT: json_tensor(["hi"]), C.TOOLS: json_tensor([{"tools": [WEATHER]}])}, "r",
                       Sink())
