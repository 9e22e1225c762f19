"""Structured outputs, logprobs and logit_bias on a fake backend: what the OpenAI (and vLLM) request shapes
become in the llm model's sampling parameters, the 400s that name the client's parameter, and the logprobs
in OpenAI's answer shapes (completion, chunks, Responses parts and events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from openai_frontend.backend.base import Delta, LlmRequest
from openai_frontend.backend.triton import delta_from
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, sse_data
from video_pipeline import contract as C
from video_pipeline.errors import InvalidInput
from video_pipeline.steps import json_tensor

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
          "additionalProperties": False}
HI = [{"role": "user", "content": "Hi"}]


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"model": MODEL, "messages": HI, **body})


def respond(client, **body):
    return client.post("/v1/responses", json={"model": MODEL, "input": "Hi", **body})


def error_of(r) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    return r.json()["error"]


# --- what a request becomes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("response_format", "structured"), [
    ({"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}, {"json": SCHEMA}),
    ({"type": "json_object"}, {"json_object": True}),
])
def test_chat_maps_response_format_to_vllms_structured_outputs_when_json_is_asked(client, backend, response_format,
                                                                                 structured) -> None:
    r = chat(client, response_format=response_format)
    assert r.status_code == 200, r.text
    assert backend.requests[0].sampling["structured_outputs"] == structured


def test_chat_sends_no_constraint_when_response_format_is_text(client, backend) -> None:
    assert chat(client, response_format={"type": "text"}).status_code == 200
    assert "structured_outputs" not in backend.requests[0].sampling


@pytest.mark.parametrize("structured", [{"regex": "[a-c]{3}"}, {"choice": ["yes", "no"]}, {"grammar": "root ::= \"a\""},
                                        {"json": SCHEMA, "disable_any_whitespace": True}, {"json_object": True}])
def test_chat_passes_vllms_structured_outputs_through_when_given_in_the_body(client, backend, structured) -> None:
    assert chat(client, structured_outputs=structured).status_code == 200
    assert backend.requests[0].sampling["structured_outputs"] == structured


def test_chat_sets_response_format_over_structured_outputs_as_vllm_merges_them_when_both_are_given(client,
                                                                                                  backend) -> None:
    r = chat(client, structured_outputs={"json": {"type": "string"}, "disable_any_whitespace": True},
             response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}})
    assert r.status_code == 200, r.text
    assert backend.requests[0].sampling["structured_outputs"] == {"json": SCHEMA, "disable_any_whitespace": True}
    # a second constraint beside the format's is the llm model's to refuse (tests/unit/test_sampling_features.py)
    assert chat(client, structured_outputs={"regex": "a"}, response_format={"type": "json_object"}).status_code == 200
    assert backend.requests[1].sampling["structured_outputs"] == {"regex": "a", "json_object": True}


@pytest.mark.parametrize(("response_format", "param"), [
    ({"type": "xml"}, "response_format.type"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "a"}}, "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "a", "schema": 5}}, "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "extra": 1}},
     "response_format.json_schema.extra"),
    ({"type": "json_object", "schema": SCHEMA}, "response_format.schema"),
    ({"json_schema": {}}, "response_format.type"),
])
def test_chat_answers_400_naming_the_field_when_response_format_is_malformed(client, backend, response_format,
                                                                            param) -> None:
    assert error_of(chat(client, response_format=response_format))["param"] == param
    assert backend.requests == []


def test_chat_maps_logprobs_and_logit_bias_to_the_llms_keys_when_asked(client, backend) -> None:
    r = chat(client, logprobs=True, top_logprobs=3, logit_bias={"97": 100, "5": -20.5}, allowed_token_ids=[1, 2],
             bad_words=["no"])
    assert r.status_code == 200, r.text
    sampling = backend.requests[0].sampling
    assert (sampling["logprobs"], sampling["logit_bias"]) == (3, {"97": 100, "5": -20.5})
    assert (sampling["allowed_token_ids"], sampling["bad_words"]) == ([1, 2], ["no"])
    assert chat(client, logprobs=True).status_code == 200
    assert backend.requests[1].sampling["logprobs"] == 0  # only the sampled token's
    assert chat(client, logprobs=False, top_logprobs=0).status_code == 200
    assert "logprobs" not in backend.requests[2].sampling


@pytest.mark.parametrize(("body", "param"), [
    ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true
    ({"logprobs": True, "top_logprobs": -3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": "many"}, "top_logprobs"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 150}}, "logit_bias"),
    ({"logit_bias": {"5": "x"}}, "logit_bias.5"),
    ({"logit_bias": [5]}, "logit_bias"),
    ({"structured_outputs": "regex"}, "structured_outputs"),
])
def test_chat_answers_400_naming_the_parameter_when_a_feature_is_malformed(client, backend, body, param) -> None:
    assert error_of(chat(client, **body))["param"] == param
    assert backend.requests == []


def test_responses_maps_text_format_to_structured_outputs_when_json_is_asked(client, backend) -> None:
    fmt = {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}
    r = respond(client, text={"format": fmt})
    assert r.status_code == 200, r.text
    assert backend.requests[0].sampling["structured_outputs"] == {"json": SCHEMA}
    assert r.json()["text"] == {"format": fmt}  # echoed, as OpenAI does
    assert respond(client, text={"format": {"type": "json_object"}}).status_code == 200
    assert backend.requests[1].sampling["structured_outputs"] == {"json_object": True}
    assert respond(client, structured_outputs={"choice": ["a", "b"]}).status_code == 200
    assert backend.requests[2].sampling["structured_outputs"] == {"choice": ["a", "b"]}


@pytest.mark.parametrize(("body", "param"), [
    ({"text": {"format": {"type": "json_schema", "name": "a"}}}, "text.format.schema"),
    ({"text": {"format": {"type": "json_schema", "schema": SCHEMA}}}, "text.format.name"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"text": {"format": {"type": "json_object"}}, "structured_outputs": {"regex": "a"}}, "structured_outputs"),
    ({"include": ["message.output_text.logprobs", "file_search_call.results"]}, "include"),
    ({"include": ["message.output_text.logprobs"], "top_logprobs": -5}, "top_logprobs"),
])
def test_responses_answers_400_naming_the_parameter_when_a_feature_is_malformed(client, backend, body,
                                                                               param) -> None:
    assert error_of(respond(client, **body))["param"] == param
    assert backend.requests == []


def test_responses_asks_for_logprobs_only_when_included_as_vllm_does(client, backend) -> None:
    assert respond(client, include=["message.output_text.logprobs"], top_logprobs=2).status_code == 200
    assert respond(client, top_logprobs=2).status_code == 200
    assert backend.requests[0].sampling["logprobs"] == 2
    assert "logprobs" not in backend.requests[1].sampling


# --- errors of the engine, named as the client sent them ------------------------------------------------


@pytest.mark.parametrize(("endpoint", "body", "param"), [
    ("chat", {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}},
     "response_format"),
    ("chat", {"structured_outputs": {"regex": "("}}, "structured_outputs"),
    ("responses", {"text": {"format": {"type": "json_schema", "name": "a", "schema": SCHEMA}}}, "text.format"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_engine_refusal_of_a_constraint_answers_400_naming_the_clients_parameter_when_it_cannot_compile(
        client, backend, endpoint, body, param, stream) -> None:
    backend.generate_error = InvalidInput("structured_outputs: Grammar error: Invalid type: nonsense",
                                          param="structured_outputs", code="invalid_value")
    r = (chat if endpoint == "chat" else respond)(client, stream=stream, **body)
    err = error_of(r)
    assert err == {"message": f"{param}: Grammar error: Invalid type: nonsense", "type": "invalid_request_error",
                   "param": param, "code": "invalid_value"}


def test_engine_refusal_of_logprobs_names_top_logprobs_when_more_are_asked_than_the_engine_gives(client,
                                                                                                backend) -> None:
    backend.generate_error = InvalidInput("logprobs: Requested sample logprobs of 25, which is greater than max "
                                          "allowed: 20", param="logprobs", code="invalid_value")
    err = error_of(chat(client, logprobs=True, top_logprobs=25))
    assert err["param"] == "top_logprobs" and err["message"].startswith("top_logprobs: Requested sample logprobs")


def test_engine_refusal_of_logit_bias_names_logit_bias_when_a_token_is_outside_the_vocabulary(client,
                                                                                            backend) -> None:
    backend.generate_error = InvalidInput("logit_bias: token_id(s) [99999] in logit_bias contain out-of-vocab token "
                                          "ids. Vocabulary size: 512", param="logit_bias", code="invalid_value")
    err = error_of(chat(client, logit_bias={"99999": 1}))
    assert err["param"] == "logit_bias" and "out-of-vocab" in err["message"]


# --- logprobs in the answers --------------------------------------------------------------------------


def entry(token: str, logprob: float, top: int) -> dict[str, Any]:
    alts = [{"id": 1, "token": token, "logprob": logprob}, {"id": 2, "token": "é", "logprob": logprob - 1}]
    return {"id": 1, "token": token, "logprob": logprob, "top": alts[:top]}


class LogprobBackend(FakeBackend):
    """FakeBackend whose deltas carry one logprobs entry per chunk (all of them when not streaming) when the
    request asks for logprobs, for each of its ``n`` choices."""

    async def generate(self, request: LlmRequest) -> AsyncIterator[Delta]:
        if "logprobs" not in request.sampling or self.generate_error is not None:
            async for delta in super().generate(request):
                yield delta
            return
        self.requests.append(request)
        top = int(request.sampling["logprobs"])
        entries = [entry(t, -0.5 * (k + 1), top) for k, t in enumerate(self.chunks)]
        for index in range(request.n):
            if not request.stream:
                yield Delta("".join(self.chunks), index, "stop", 20, len(self.chunks), logprobs=entries)
                continue
            for k, text in enumerate(self.chunks):
                yield Delta(text, index, "stop" if k == len(self.chunks) - 1 else None, 20, k + 1,
                            logprobs=[entries[k]])


@pytest.fixture
def backend() -> FakeBackend:
    return LogprobBackend()


def openai_entry(token: str, logprob: float, top: int) -> dict[str, Any]:
    alts = [{"token": token, "logprob": logprob, "bytes": list(token.encode())},
            {"token": "é", "logprob": logprob - 1, "bytes": [195, 169]}]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alts[:top]}


def test_delta_from_reads_the_llms_logprobs_when_the_response_carries_them() -> None:
    outputs = {C.TEXT_OUTPUT: np.array([b"hi"], object), C.LOGPROBS: json_tensor([[entry("hi", -0.25, 1)]])}
    assert delta_from(outputs).logprobs == [entry("hi", -0.25, 1)]
    del outputs[C.LOGPROBS]
    assert delta_from(outputs).logprobs is None


def test_chat_answers_openais_logprobs_content_when_asked(client) -> None:
    body = chat(client, logprobs=True, top_logprobs=2).json()
    assert body["choices"][0]["logprobs"] == {
        "content": [openai_entry(t, -0.5 * (k + 1), 2) for k, t in enumerate(["Hello", " world", "!"])],
        "refusal": None}


def test_chat_stream_chunks_carry_their_own_tokens_logprobs_when_asked(client) -> None:
    r = chat(client, logprobs=True, top_logprobs=1, stream=True)
    chunks = [json.loads(c) for c in sse_data(r.text) if c != "[DONE]"]
    content = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert [c["logprobs"]["content"] for c in content] == [
        [openai_entry(t, -0.5 * (k + 1), 1)] for k, t in enumerate(["Hello", " world", "!"])]
    role, finish = chunks[0]["choices"][0], chunks[-1]["choices"][0]
    assert role["logprobs"] is None and finish["finish_reason"] == "stop" and finish["logprobs"] is None


def test_chat_answers_null_logprobs_when_not_asked(client) -> None:
    assert chat(client).json()["choices"][0]["logprobs"] is None


def test_responses_answers_output_text_logprobs_when_included(client) -> None:
    body = respond(client, include=["message.output_text.logprobs"], top_logprobs=1).json()
    (part,) = body["output"][0]["content"]
    assert part["text"] == "Hello world!" and body["top_logprobs"] == 1
    assert part["logprobs"] == [openai_entry(t, -0.5 * (k + 1), 1) for k, t in enumerate(["Hello", " world", "!"])]


def test_responses_stream_delta_events_carry_their_own_tokens_logprobs_when_included(client) -> None:
    r = respond(client, include=["message.output_text.logprobs"], top_logprobs=1, stream=True)
    events = [json.loads(line[len("data: "):]) for line in r.text.splitlines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert [d["logprobs"] for d in deltas] == [
        [{"token": t, "logprob": -0.5 * (k + 1), "top_logprobs": [{"token": t, "logprob": -0.5 * (k + 1)}]}]
        for k, t in enumerate(["Hello", " world", "!"])]
    (done,) = [e for e in events if e["type"] == "response.output_text.done"]
    assert [x["token"] for x in done["logprobs"]] == ["Hello", " world", "!"]
    (completed,) = [e for e in events if e["type"] == "response.completed"]
    assert len(completed["response"]["output"][0]["content"][0]["logprobs"]) == 3


# --- /v1/completions: logprobs and logit_bias ---------------------------------------------------------


def complete(client, **body):
    return client.post("/v1/completions", json={"model": MODEL, "prompt": "Once", **body})


def legacy(top: int, tokens: tuple[str, ...] = ("Hello", " world", "!"), first: int = 0,
           offset: int = 0) -> dict[str, Any]:
    """The legacy logprobs of LogprobBackend's tokens (the ``first``-th on), the first at ``offset``."""
    lps = [-0.5 * (first + k + 1) for k in range(len(tokens))]
    starts = [offset + sum(len(t) for t in tokens[:k]) for k in range(len(tokens))]
    tops = [{t: lp, "é": lp - 1} if top >= 2 else {t: lp} for t, lp in zip(tokens, lps, strict=True)]
    return {"tokens": list(tokens), "token_logprobs": lps, "top_logprobs": tops, "text_offset": starts}


def test_completions_send_logprobs_and_logit_bias_as_the_llms_keys_when_asked(client, backend) -> None:
    r = complete(client, logprobs=2, logit_bias={"5": 1, "7": -100})
    assert r.status_code == 200, r.text
    assert backend.requests[0].sampling == {"max_tokens": 16, "logprobs": 2, "logit_bias": {"5": 1.0, "7": -100.0}}


@pytest.mark.parametrize("top", [0, 1, 2])
def test_completions_answer_legacy_logprobs_of_every_token_when_logprobs_is_given(client, top) -> None:
    (choice,) = complete(client, logprobs=top).json()["choices"]
    assert choice["text"] == "Hello world!" and choice["logprobs"] == legacy(top)


def test_completions_answer_null_logprobs_when_not_asked(client) -> None:
    assert complete(client).json()["choices"][0]["logprobs"] is None


def test_completions_answer_each_prompts_choices_their_own_logprobs_when_several_prompts_and_n(client) -> None:
    choices = complete(client, prompt=["a", "b"], n=2, logprobs=1).json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3] and all(c["logprobs"] == legacy(1) for c in choices)


def test_completions_stream_chunks_carry_their_own_tokens_logprobs_offset_in_the_whole_text(client) -> None:
    r = complete(client, prompt=["a", "b"], logprobs=2, stream=True)
    chunks = [json.loads(c) for c in sse_data(r.text) if c != "[DONE]"]
    tokens = ("Hello", " world", "!")
    for index in (0, 1):  # each prompt's choice counts its own text
        texts = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index]
        assert [c["logprobs"] for c in texts] == [legacy(2, (t,), k, sum(len(x) for x in tokens[:k]))
                                                  for k, t in enumerate(tokens)]
        assert "".join(c["text"] for c in texts) == "Hello world!" and texts[-1]["finish_reason"] == "stop"


@pytest.mark.parametrize(("body", "param"), [
    ({"logprobs": -2}, "logprobs"),
    ({"logprobs": 1.5}, "logprobs"),
    ({"logprobs": 1, "echo": True}, "echo"),
    ({"logit_bias": {"a": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
])
def test_completions_answer_400_naming_the_field_when_logprobs_or_logit_bias_is_malformed(client, backend, body,
                                                                                           param) -> None:
    assert error_of(complete(client, **body))["param"] == param
    assert backend.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_completions_engine_refusal_of_logprobs_names_logprobs_when_more_are_asked_than_the_engine_gives(
        client, backend, stream) -> None:
    backend.generate_error = InvalidInput("logprobs: Requested sample logprobs of 25, which is greater than max "
                                          "allowed: 20", param="logprobs", code="invalid_value")
    err = error_of(complete(client, logprobs=25, stream=stream))
    assert err == {"message": "logprobs: Requested sample logprobs of 25, which is greater than max allowed: 20",
                   "type": "invalid_request_error", "param": "logprobs", "code": "invalid_value"}
