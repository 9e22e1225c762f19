"""vLLM's request features in the llm model: structured_outputs, logprobs, logit_bias, allowed_token_ids and
bad_words as sampling keys (parsed here, built into SamplingParams, errors naming the key), the engine's
per-token logprobs, and the llm response that carries them (streamed, and joined per choice)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from video_pipeline import contract as C
from video_pipeline.engines.background import BackgroundEngine
from video_pipeline.engines.sampling import parse_sampling, to_sampling_params
from video_pipeline.engines.types import GenerationDelta, GenerationRequest, TokenLogprob
from video_pipeline.engines.vllm_engine import generation_failed, token_logprobs
from video_pipeline.errors import InvalidInput, PipelineError
from video_pipeline.llm_handler import LlmHandler
from video_pipeline.steps import json_tensor

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


# --- parsing -------------------------------------------------------------------------------------------


def test_parse_sampling_keeps_structured_outputs_as_vllm_names_them_when_one_constraint_is_given() -> None:
    assert parse_sampling({"structured_outputs": {"json": SCHEMA}}) == {"structured_outputs": {"json": SCHEMA}}
    assert parse_sampling({"structured_outputs": {"regex": "[a-z]+", "disable_any_whitespace": True}}) == {
        "structured_outputs": {"regex": "[a-z]+", "disable_any_whitespace": True}}
    assert parse_sampling({"structured_outputs": {"choice": ["a", "b"], "grammar": None}}) == {
        "structured_outputs": {"choice": ["a", "b"]}}
    assert parse_sampling('{"structured_outputs": {"json_object": true}}') == {
        "structured_outputs": {"json_object": True}}


def test_parse_sampling_reads_the_other_features_when_given() -> None:
    values = parse_sampling({"logprobs": "3", "logit_bias": {"97": 100, 5: "-2.5"}, "allowed_token_ids": [1, "2"],
                             "bad_words": ["x y"]})
    assert values == {"logprobs": 3, "logit_bias": {97: 100.0, 5: -2.5}, "allowed_token_ids": [1, 2],
                      "bad_words": ["x y"]}


@pytest.mark.parametrize(("raw", "match"), [
    ({"structured_outputs": []}, r"^structured_outputs: must be an object"),
    ({"structured_outputs": {}}, r"^structured_outputs: give exactly one of json, regex"),
    ({"structured_outputs": {"json": SCHEMA, "regex": "a"}}, r"^structured_outputs: give exactly one .*\(got json, regex\)"),
    ({"structured_outputs": {"jsn": SCHEMA}}, r"^structured_outputs: unknown field\(s\) jsn"),
    ({"structured_outputs": {"json": 5}}, r"^structured_outputs\.json: must be a JSON schema"),
    ({"structured_outputs": {"regex": 5}}, r"^structured_outputs\.regex: must be a string"),
    ({"structured_outputs": {"choice": "a"}}, r"^structured_outputs\.choice: must be a list of strings"),
    ({"structured_outputs": {"json_object": False}}, r"^structured_outputs\.json_object: must be true"),
    ({"structured_outputs": {"regex": "a", "disable_any_whitespace": "yes"}},
     r"^structured_outputs\.disable_any_whitespace: must be true or false"),
    ({"logit_bias": [1]}, r"^logit_bias: must be an object"),
    ({"logit_bias": {"a": 1}}, r"^logit_bias: keys must be token ids"),
    ({"logit_bias": {"-1": 1}}, r"^logit_bias: keys must be token ids"),
    ({"logit_bias": {"5": 101}}, r"^logit_bias: the bias of token 5 must be between -100 and 100"),
    ({"logit_bias": {"5": "big"}}, r"^logit_bias: the bias of token 5 must be a number"),
    ({"logprobs": True}, r"logprobs must be an integer"),
    ({"bad_words": "x"}, r"^bad_words: must be a list of strings"),
])
def test_parse_sampling_refuses_naming_the_key_first_when_a_feature_is_malformed(raw: Any, match: str) -> None:
    with pytest.raises(InvalidInput, match=match) as info:
        parse_sampling(raw)
    # named as data too: the key (or the structured_outputs field) the message starts with, and OpenAI's code
    assert info.value.param is not None and info.value.code is not None
    if match.startswith("^"):
        assert str(info.value).startswith(f"{info.value.param}: ")


@pytest.mark.parametrize(("raw", "param", "code"), [
    ({"structured_outputs": {"json": 5}}, "structured_outputs.json", "invalid_type"),
    ({"structured_outputs": {"json_object": False}}, "structured_outputs.json_object", "invalid_value"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs", "invalid_value"),
    ({"logit_bias": {"a": 1}}, "logit_bias", "invalid_value"),
    ({"logprobs": "many"}, "logprobs", "invalid_type"),
])
def test_parse_sampling_names_the_field_as_data_when_a_feature_is_malformed(raw: Any, param: str, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_sampling(raw)
    assert (info.value.param, info.value.code) == (param, code)


# --- SamplingParams (imports vLLM, starts nothing) ---------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_sampling() -> Any:
    return pytest.importorskip("vllm.sampling_params")


def test_to_sampling_params_builds_vllms_structured_outputs_when_a_constraint_is_given(vllm_sampling: Any) -> None:
    params = to_sampling_params(parse_sampling({"structured_outputs": {"json": SCHEMA, "disable_any_whitespace": True},
                                                "logprobs": 2, "logit_bias": {"7": 50}}))
    so = params.structured_outputs
    assert isinstance(so, vllm_sampling.StructuredOutputsParams)
    assert (so.json, so.disable_any_whitespace, so.regex) == (SCHEMA, True, None)
    assert params.logprobs == 2 and params.logit_bias == {7: 50.0}
    choice = to_sampling_params(parse_sampling({"structured_outputs": {"choice": ["yes", "no"]}}))
    assert choice.structured_outputs.choice == ["yes", "no"]


def test_to_sampling_params_names_the_key_when_vllm_refuses_a_feature(vllm_sampling: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^logprobs: logprobs must be non-negative or -1, got -2\.$"):
        to_sampling_params({"logprobs": -2})
    with pytest.raises(InvalidInput, match=r"^structured_outputs: You can only use one kind"):
        to_sampling_params({"structured_outputs": {"json": SCHEMA, "regex": "a"}})  # past our parser: vLLM's check
    with pytest.raises(InvalidInput, match="bad_words"):
        to_sampling_params({"bad_words": [""]})


# --- the engine's logprobs -------------------------------------------------------------------------------


@dataclass
class Lp:  # vLLM's Logprob, as CompletionOutput.logprobs holds it
    logprob: float
    rank: int | None
    decoded_token: str | None


class Tokenizer:
    def decode(self, ids: list[int]) -> str:
        return f"<{ids[0]}>"


def test_token_logprobs_gives_the_top_ranks_and_the_sampled_token_when_vllm_answers_a_position() -> None:
    positions = [
        {5: Lp(-0.1, 1, "a"), 6: Lp(-2.0, 2, "b"), 7: Lp(-3.0, 3, None)},  # sampled = rank 1
        {9: Lp(-7.0, 40, "z"), 1: Lp(-0.5, 1, "x"), 2: Lp(-1.5, 2, "y")},  # sampled (first) ranks 40
        {3: Lp(float("-inf"), 1, "q")},
    ]
    out = token_logprobs([5, 9, 3], positions, 2, Tokenizer())
    assert out[0] == TokenLogprob(5, "a", -0.1, ((5, "a", -0.1), (6, "b", -2.0)))
    assert out[1] == TokenLogprob(9, "z", -7.0, ((1, "x", -0.5), (2, "y", -1.5)))
    assert out[2].logprob == -9999.0  # vLLM's floor: -inf is no JSON number
    assert token_logprobs([7], [positions[0]], 3, Tokenizer())[0].top[2] == (7, "<7>", -3.0)
    assert token_logprobs([5], [positions[0]], 0, Tokenizer())[0].top == ()
    assert token_logprobs([4], None, 1, Tokenizer()) == (TokenLogprob(4, "<4>", -9999.0, ()),)


def test_generation_failed_names_the_constraint_when_vllm_ended_a_structured_choice_with_an_error() -> None:
    class Params:
        structured_outputs = object()

    error = generation_failed(Params())
    assert isinstance(error, InvalidInput) and str(error).startswith("structured_outputs: ")
    assert (error.param, error.code) == ("structured_outputs", "invalid_value")
    assert type(generation_failed(object())) is PipelineError


# --- the llm response ------------------------------------------------------------------------------------


class LogprobEngine:
    """Three tokens, one delta each, every delta carrying its token's logprob when the request asks."""

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationDelta, None]:
        asked = "logprobs" in request.sampling
        for i in range(3):
            await asyncio.sleep(0)
            entry = (TokenLogprob(10 + i, f"t{i}", -float(i), ((10 + i, f"t{i}", -float(i)),)),) if asked else None
            yield GenerationDelta(index=0, text=f"t{i}", token_ids=(10 + i,),
                                  finish_reason="length" if i == 2 else None, stop_reason=None, prompt_tokens=4,
                                  completion_tokens=i + 1, video_tokens=0, image_tokens=0, logprobs=entry)

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self) -> None: ...

    def shutdown(self) -> None: ...


class Sink:
    def __init__(self) -> None:
        self.sent: list[dict[str, np.ndarray]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def send(self, outputs: dict[str, np.ndarray]) -> None:
        self.sent.append(outputs)

    def finish(self, outputs: dict[str, np.ndarray] | None = None) -> None:
        self.done.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done.set()

    def is_cancelled(self) -> bool:
        return False


@pytest.fixture
def handler() -> Iterator[LlmHandler]:
    h = LlmHandler(BackgroundEngine(LogprobEngine))
    yield h
    h.shutdown()


def answer(handler: LlmHandler, stream: bool, sampling: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    sink = Sink()
    handler.submit({C.MESSAGES: json_tensor([[{"role": "user", "content": "hi"}]]),
                    C.SAMPLING_PARAMETERS: json_tensor([sampling]), C.STREAM: np.array([stream])}, "r1", sink)
    assert sink.done.wait(10) and sink.error is None, sink.error
    return sink.sent


def logprobs_of(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return json.loads(outputs[C.LOGPROBS].reshape(-1)[0])


def test_llm_streams_each_deltas_logprobs_when_the_request_asks_for_them(handler: LlmHandler) -> None:
    sent = answer(handler, True, {"logprobs": 1})
    assert [logprobs_of(o) for o in sent] == [
        [{"id": 10 + i, "token": f"t{i}", "logprob": -float(i), "top": [{"id": 10 + i, "token": f"t{i}",
                                                                         "logprob": -float(i)}]}] for i in range(3)]


def test_llm_joins_the_logprobs_with_the_text_when_not_streaming(handler: LlmHandler) -> None:
    (whole,) = answer(handler, False, {"logprobs": 1})
    assert whole[C.TEXT_OUTPUT][0] == b"t0t1t2"
    assert [e["token"] for e in logprobs_of(whole)] == ["t0", "t1", "t2"]


def test_llm_sends_no_logprobs_tensor_when_the_request_asks_for_none(handler: LlmHandler) -> None:
    assert all(C.LOGPROBS not in o for o in answer(handler, True, {}) + answer(handler, False, {}))
