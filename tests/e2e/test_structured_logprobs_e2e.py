"""Structured outputs, logprobs and logit_bias end to end: the real OpenAI SDK -> shim -> tritonserver -> vLLM.

The tiny model's weights are random, so only vLLM's grammar can make its output valid JSON, match a
regex or pick a choice: these tests pass only when the constraint reaches the engine.
"""

from __future__ import annotations

import json
import re
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.videos import ClipSpec, make_video

pytestmark = pytest.mark.e2e

MODEL = "tiny-qwen2-vl"
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["ok", "label"],
          "properties": {"ok": {"type": "boolean"}, "label": {"type": "string", "enum": ["cat", "dog"]}}}
ASK = [{"role": "user", "content": "Describe it as JSON."}]
LETTER_A = 97  # the tiny model's byte-level vocabulary: id 97 is the byte "a"
SMALL = {"media_io_kwargs": {"video": {"num_frames": 8}}, "mm_processor_kwargs": {"max_pixels": 112 * 112}}


class Event(BaseModel):
    ok: bool
    label: Literal["cat", "dog"]


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10))


def test_sdk_chat_answers_json_valid_for_the_schema_when_response_format_is_json_schema(shim) -> None:
    r = shim.client().chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=200, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "event", "schema": SCHEMA, "strict": True}})
    (choice,) = r.choices
    assert choice.finish_reason == "stop", choice.message.content  # the grammar ended it, not max_tokens
    jsonschema.validate(json.loads(choice.message.content), SCHEMA)


def test_sdk_chat_parse_gives_the_pydantic_object_when_asked_about_a_video(shim, http_media, clip) -> None:
    url = http_media.put("structured.mp4", clip)
    r = shim.client().chat.completions.parse(
        model=MODEL, max_completion_tokens=200, temperature=0, response_format=Event, extra_body=SMALL,
        messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                               {"type": "text", "text": "What happens? Answer as JSON."}]}])
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Event) and parsed.label in ("cat", "dog")
    assert r.usage.prompt_tokens_details.video_tokens == 48


def test_sdk_chat_streams_json_valid_for_the_schema_when_streaming(shim) -> None:
    stream = shim.client().chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=200, temperature=0, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "event", "schema": SCHEMA}})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), SCHEMA)


@pytest.mark.parametrize(("structured", "check"), [
    ({"regex": "[a-c]{3}-[0-9]{2}"}, lambda text: re.fullmatch(r"[a-c]{3}-[0-9]{2}", text)),
    ({"choice": ["alpha", "beta", "gamma"]}, lambda text: text in ("alpha", "beta", "gamma")),
    ({"json_object": True}, lambda text: text.lstrip().startswith("{")),
])
def test_sdk_chat_obeys_vllms_structured_outputs_when_sent_in_extra_body(shim, structured, check) -> None:
    r = shim.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=40, temperature=0,
                                              extra_body={"structured_outputs": structured})
    assert check(r.choices[0].message.content), r.choices[0].message.content


def test_sdk_chat_answers_400_naming_response_format_when_vllm_cannot_compile_the_schema(shim) -> None:
    client = shim.client()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=5,
            response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": {
                "type": "object", "properties": {"a": {"type": "nonsense"}}}}})
    error = info.value.body
    assert info.value.status_code == 400 and error["param"] == "response_format", error
    assert error["message"].startswith("response_format: ") and "nonsense" in error["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, stream=True,
                                       extra_body={"structured_outputs": {"regex": "(unclosed"}})
    assert info.value.body["param"] == "structured_outputs"
    # the engine is unharmed
    assert client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2).choices[0].message.content


def test_sdk_responses_answers_json_valid_for_the_schema_when_text_format_is_json_schema(shim) -> None:
    client = shim.client()
    r = client.responses.create(model=MODEL, input="Describe it as JSON.", max_output_tokens=200, temperature=0,
                                text={"format": {"type": "json_schema", "name": "event", "schema": SCHEMA,
                                                 "strict": True}})
    assert r.status == "completed", r.output_text
    jsonschema.validate(json.loads(r.output_text), SCHEMA)
    parsed = client.responses.parse(model=MODEL, input="Describe it as JSON.", max_output_tokens=200,
                                    temperature=0, text_format=Event)
    assert isinstance(parsed.output_parsed, Event)


def test_sdk_chat_answers_logprobs_of_every_token_when_asked(shim) -> None:
    r = shim.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=6, temperature=0,
                                              logprobs=True, top_logprobs=3)
    (choice,) = r.choices
    content = choice.logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    assert "".join(t.token for t in content) == choice.message.content
    for token in content:
        assert token.logprob <= 0 and token.bytes == list(token.token.encode())
        assert len(token.top_logprobs) == 3
        assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs), reverse=True)
        # greedy: the sampled token is the most likely one
        assert (token.top_logprobs[0].token, token.top_logprobs[0].logprob) == (token.token, token.logprob)


def test_sdk_chat_stream_chunks_carry_their_tokens_logprobs_when_asked(shim) -> None:
    stream = shim.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, temperature=0,
                                                   logprobs=True, top_logprobs=2, stream=True,
                                                   stream_options={"include_usage": True})
    text, tokens, usage = "", [], None
    for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices or not chunk.choices[0].delta.content:
            continue
        entries = chunk.choices[0].logprobs.content
        assert "".join(e.token for e in entries) == chunk.choices[0].delta.content
        assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries)
        text += chunk.choices[0].delta.content
        tokens += entries
    assert len(tokens) == usage.completion_tokens == 5 and "".join(t.token for t in tokens) == text


def test_sdk_responses_answers_output_text_logprobs_when_included(shim) -> None:
    r = shim.client().responses.create(model=MODEL, input="Say something.", max_output_tokens=4, temperature=0,
                                       include=["message.output_text.logprobs"], top_logprobs=2)
    part = r.output[0].content[0]
    assert len(part.logprobs) == r.usage.output_tokens == 4
    assert "".join(t.token for t in part.logprobs) == part.text
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in part.logprobs)


def test_sdk_chat_makes_greedy_output_that_token_when_its_logit_bias_is_100(shim) -> None:
    r = shim.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, temperature=0,
                                              logit_bias={str(LETTER_A): 100})
    assert r.choices[0].message.content == "a" * 4
    with pytest.raises(openai.BadRequestError) as info:  # outside the vocabulary: vLLM's refusal, named
        shim.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, logit_bias={"999999": 5})
    assert info.value.body["param"] == "logit_bias" and "vocab" in info.value.body["message"]


def test_sdk_chat_answers_400_naming_top_logprobs_when_more_are_asked_than_the_engine_gives(shim) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        shim.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, logprobs=True,
                                              top_logprobs=25)
    assert info.value.body["param"] == "top_logprobs", info.value.body
