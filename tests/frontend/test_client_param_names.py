"""The llm model's refusals name the client's parameter for the endpoint used: its ``param`` (a sampling key
or an llm input, as data in the error document) becomes the field the client sent, in ``param`` and in the
message (Responses ``max_output_tokens`` and ``input``, chat ``max_completion_tokens``, completions
``prompt``), with OpenAI's ``code`` kept. The errors are the engine's own (its context check; vLLM's
SamplingParams refusing a value, which imports vLLM and starts nothing), sent across Triton as the llm model
sends them."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.errors import OpenAIError
from openai_frontend.sampling import Sampling, named_error
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL
from video_pipeline import contract as C
from video_pipeline.engines.sampling import parse_sampling, to_sampling_params
from video_pipeline.engines.vllm_engine import check_context
from video_pipeline.errors import InvalidInput, MediaTooLarge, PipelineError, from_doc

CONTEXT = 16384
BIG = 10**9


def crossed(exc: PipelineError) -> PipelineError:
    """``exc`` as the shim reads it back from the llm model's Triton error (its document, parsed)."""
    doc = C.parse_error(exc.to_doc().encode())
    assert doc is not None
    return from_doc(doc)


def context_error(where: str, max_tokens: int | None) -> PipelineError:
    with pytest.raises(InvalidInput) as info:
        check_context(20 if max_tokens else CONTEXT + 5, max_tokens, CONTEXT, where)
    return crossed(info.value)


def vllm_refusal(values: dict[str, Any]) -> PipelineError:
    """vLLM's refusal of the sampling ``values``, as the llm model's engine raises it."""
    pytest.importorskip("vllm.sampling_params")
    with pytest.raises(InvalidInput) as info:
        to_sampling_params(parse_sampling(values))
    return crossed(info.value)


def refusal(settings, error: PipelineError, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The error body the shim answers when the llm model refuses with ``error``, the same streamed and not."""
    answers = []
    for stream in (False, True):
        with TestClient(create_app(settings, FakeBackend(generate_error=error))) as client:
            r = client.post(path, json={"model": MODEL, **body, "stream": stream})
        assert r.status_code == 400, r.text
        answers.append(r.json()["error"])
    assert answers[0] == answers[1]
    return answers[0]


RESPONSES = ("/v1/responses", {"input": "Hi"})
CHAT = ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})
COMPLETIONS = ("/v1/completions", {"prompt": "Hi"})


def test_responses_refusal_of_max_tokens_names_max_output_tokens_when_the_value_is_below_one(settings) -> None:
    error = vllm_refusal({"max_tokens": -1})
    err = refusal(settings, error, RESPONSES[0], {**RESPONSES[1], "max_output_tokens": -1})
    assert err == {"message": "invalid sampling parameters: max_output_tokens must be at least 1, got -1.",
                   "type": "invalid_request_error", "param": "max_output_tokens", "code": "integer_below_min_value"}


def test_responses_context_refusal_names_max_output_tokens_and_input_when_the_completion_does_not_fit(
        settings) -> None:
    err = refusal(settings, context_error(C.MESSAGES, BIG), RESPONSES[0], {**RESPONSES[1], "max_output_tokens": BIG})
    assert (err["param"], err["code"]) == ("max_output_tokens", "context_length_exceeded")
    assert f"(20 in the input, {BIG} in the completion)" in err["message"], err
    assert "messages" not in err["message"] and "max_tokens" not in err["message"]


def test_responses_context_refusal_names_input_when_the_conversation_is_over_the_context(settings) -> None:
    err = refusal(settings, context_error(C.MESSAGES, None), *RESPONSES)
    assert (err["param"], err["code"]) == ("input", "context_length_exceeded")
    assert "your input resulted in" in err["message"] and "reduce the length of the input." in err["message"], err


@pytest.mark.parametrize(("fields", "param"), [({"max_completion_tokens": BIG}, "max_completion_tokens"),
                                                ({"max_tokens": 5, "max_completion_tokens": BIG},
                                                 "max_completion_tokens"),
                                                ({"max_tokens": BIG}, "max_tokens")])
def test_chat_context_refusal_names_the_max_tokens_field_the_client_set_when_the_completion_does_not_fit(
        settings, fields, param) -> None:
    err = refusal(settings, context_error(C.MESSAGES, BIG), CHAT[0], {**CHAT[1], **fields})
    assert (err["param"], err["code"]) == (param, "context_length_exceeded")
    assert "(20 in the messages" in err["message"]  # chat's conversation is its messages


@pytest.mark.parametrize(("path", "body"), [RESPONSES, CHAT, COMPLETIONS])
@pytest.mark.parametrize(("key", "value", "text", "code"), [
    ("temperature", 5, "temperature must be in [0, 2], got 5.0.", "decimal_above_max_value"),
    ("top_p", 0, "top_p must be in (0, 1], got 0.0.", "invalid_value"),
    ("presence_penalty", -3, "presence_penalty must be in [-2, 2], got -3.0.", "decimal_below_min_value"),
    ("frequency_penalty", 3, "frequency_penalty must be in [-2, 2], got 3.0.", "decimal_above_max_value"),
    ("stop", [""], "stop cannot contain an empty string.", "invalid_value"),
])
def test_refusal_of_a_sampling_key_keeps_its_name_and_code_when_the_client_sent_it_so(
        settings, path, body, key, value, text, code) -> None:
    err = refusal(settings, vllm_refusal({key: value}), path, {**body, key: value})
    assert (err["param"], err["code"], err["message"]) == (key, code, f"invalid sampling parameters: {text}")


def test_completions_refusal_of_n_and_the_prompt_names_them_when_the_llm_model_refuses(settings) -> None:
    err = refusal(settings, vllm_refusal({"n": 0}), "/v1/completions", {"prompt": "Hi", "n": 0})
    assert (err["param"], err["code"]) == ("n", "integer_below_min_value")
    err = refusal(settings, context_error(C.TEXT_INPUT, None), *COMPLETIONS)
    assert (err["param"], err["code"]) == ("prompt", "context_length_exceeded") and "your prompt" in err["message"]


def test_refusal_type_errors_keep_invalid_type_when_the_llm_model_parses_the_sampling_keys(settings) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_sampling({"max_tokens": "many"})
    err = refusal(settings, crossed(info.value), *RESPONSES)
    assert (err["param"], err["code"]) == ("max_output_tokens", "invalid_type")
    assert err["message"].startswith("max_output_tokens must be an integer"), err


# --- named_error on its own -----------------------------------------------------------------------------


def responses_sampling() -> Sampling:
    return Sampling({"max_tokens": 4, "temperature": 0.5}, {"max_tokens": "max_output_tokens", C.MESSAGES: "input"})


def test_named_error_names_the_field_of_a_structured_constraint_when_the_client_sent_another_parameter() -> None:
    sampling = Sampling()
    sampling.put("structured_outputs", {"regex": 5}, "text.format")
    exc = named_error(InvalidInput("structured_outputs.regex: must be a string", param="structured_outputs.regex",
                                   code="invalid_type"), sampling)
    assert isinstance(exc, OpenAIError)
    assert (exc.message, exc.param, exc.code) == ("text.format (structured_outputs.regex): must be a string",
                                                  "text.format", "invalid_type")
    direct = Sampling({"structured_outputs": {"regex": 5}})  # sent as vLLM's structured_outputs: named as it is
    exc = named_error(InvalidInput("structured_outputs.regex: must be a string", param="structured_outputs.regex",
                                   code="invalid_type"), direct)
    assert (exc.message, exc.param) == ("structured_outputs.regex: must be a string", "structured_outputs.regex")


def test_named_error_renames_only_whole_words_and_not_the_llms_message_indexes_when_it_rewrites_a_message() -> None:
    exc = named_error(InvalidInput("messages[1].content: too long; shorten the messages.", param=C.MESSAGES,
                                   code="invalid_value"), responses_sampling())
    # input[0] is the llm's messages[1] when instructions lead: its index is left alone
    assert (exc.message, exc.param) == ("messages[1].content: too long; shorten the input.", "input")


@pytest.mark.parametrize("error", [InvalidInput("max_tokens is off"), MediaTooLarge("max_tokens", param="max_tokens"),
                                   PipelineError("max_tokens", param="max_tokens")])
def test_named_error_leaves_the_error_as_it_is_when_it_names_no_parameter_or_is_no_400(error) -> None:
    assert named_error(error, responses_sampling()) is error


def test_named_error_sets_invalid_value_when_the_llm_names_a_parameter_without_a_code() -> None:
    exc = named_error(InvalidInput("top_p is off", param="top_p"), Sampling({"top_p": 2.0}))
    assert (exc.param, exc.code) == ("top_p", "invalid_value")
