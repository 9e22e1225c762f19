"""The llm model's tokenize / detokenize requests and its chat_template_kwargs (LlmHandler, no Triton):
counted with the engine's own tokenizer and chat template, as generation renders the prompt."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from video_pipeline import contract as C
from video_pipeline.engines import tiny_model
from video_pipeline.engines.prompt import render_prompt
from video_pipeline.engines.types import GenerationRequest
from video_pipeline.errors import InvalidInput
from video_pipeline.llm_handler import LlmHandler, build_request
from video_pipeline.steps import json_tensor


class TokEngine:
    """What the handler reads off VllmEngine for tokenizing: tokenizer, build_prompt, max_model_len."""

    max_model_len = 4096

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def build_prompt(self, request: GenerationRequest) -> dict[str, Any]:
        return {"prompt": render_prompt(request, self.tokenizer, tiny_model.CHAT_TEMPLATE)}

    def check_health(self, timeout: float | None = None) -> None:
        pass

    def shutdown(self) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.final: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def send(self, outputs: dict[str, np.ndarray]) -> None:
        raise AssertionError("a tokenize request answers once, with its final response")

    def finish(self, outputs: dict[str, np.ndarray] | None = None) -> None:
        self.final = outputs
        self.done.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done.set()

    def is_cancelled(self) -> bool:
        return False


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_model.build_tokenizer()


@pytest.fixture
def handler(tokenizer: Any) -> Iterator[LlmHandler]:
    h = LlmHandler(TokEngine(tokenizer))
    yield h
    h.shutdown()


def answer(handler: LlmHandler, inputs: dict[str, Any]) -> Sink:
    sink = Sink()
    handler.submit(inputs, "tok-1", sink)
    assert sink.done.wait(10)
    return sink


def tokens_of(sink: Sink) -> dict[str, Any]:
    assert sink.error is None, sink.error
    assert set(sink.final) == {C.TOKENS, C.NUM_INPUT_TOKENS}
    doc = json.loads(sink.final[C.TOKENS][0])
    assert int(sink.final[C.NUM_INPUT_TOKENS][0]) == doc["count"] == len(doc["tokens"])
    return doc


MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "Describe the clip."}]}]


def test_tokenize_counts_the_chat_prompt_as_generation_renders_it_when_given_messages(handler, tokenizer) -> None:
    doc = tokens_of(answer(handler, {C.MESSAGES: json_tensor([MESSAGES]), C.TOKENIZE: json_tensor([{}])}))
    rendered = render_prompt(GenerationRequest("r", messages=MESSAGES), tokenizer, tiny_model.CHAT_TEMPLATE)
    assert doc["tokens"] == tokenizer.encode(rendered, add_special_tokens=False)
    assert doc["max_model_len"] == 4096 and "token_strs" not in doc
    assert tokenizer.decode(doc["tokens"]).endswith("<|im_start|>assistant\n")


def test_tokenize_passes_chat_template_kwargs_to_the_template_when_given(handler, tokenizer) -> None:
    plain = tokens_of(answer(handler, {C.MESSAGES: json_tensor([MESSAGES]), C.TOKENIZE: json_tensor([{}])}))
    ended = tokens_of(answer(handler, {C.MESSAGES: json_tensor([MESSAGES]), C.TOKENIZE: json_tensor([{}]),
                                       C.CHAT_TEMPLATE_KWARGS: json_tensor([{"add_generation_prompt": False}])}))
    assert plain["tokens"][:ended["count"]] == ended["tokens"] and ended["count"] < plain["count"]


def test_tokenize_answers_token_strs_and_special_tokens_when_asked_for_a_prompt(handler, tokenizer) -> None:
    doc = tokens_of(answer(handler, {C.TEXT_INPUT: np.array([b"hello world"], dtype=np.object_),
                                     C.TOKENIZE: json_tensor([{"return_token_strs": True}])}))
    assert doc["tokens"] == tokenizer.encode("hello world")
    assert doc["token_strs"] == tokenizer.convert_ids_to_tokens(doc["tokens"])


def test_detokenize_answers_the_text_when_given_token_ids_alone(handler, tokenizer) -> None:
    ids = tokenizer.encode("round trip", add_special_tokens=False)
    sink = answer(handler, {C.TOKEN_IDS: np.array(ids, dtype=np.int64)})
    assert sink.error is None and sink.final[C.TEXT_OUTPUT][0] == b"round trip"
    assert int(sink.final[C.NUM_INPUT_TOKENS][0]) == len(ids)


@pytest.mark.parametrize(("inputs", "says"), [
    ({C.TOKEN_IDS: np.array([10**9], dtype=np.int64)}, "not a token id"),
    ({C.TOKEN_IDS: np.array([-1], dtype=np.int64)}, "not a token id"),
    ({C.TOKEN_IDS: np.array([1], dtype=np.int64), C.TOKENIZE: json_tensor([{}])}, "comes alone"),
    ({C.MESSAGES: json_tensor([MESSAGES]), C.TOKENIZE: json_tensor([{"truncate": 3}])}, "unknown option"),
    ({C.MESSAGES: json_tensor([MESSAGES]), C.TOKENIZE: json_tensor([[1]])}, "JSON object"),
    ({C.MESSAGES: json_tensor([MESSAGES]), C.TOKENIZE: json_tensor([{"add_special_tokens": "y"}])}, "true or false"),
    ({C.MESSAGES: json_tensor([MESSAGES]), C.TOKENIZE: json_tensor([{}]),
      C.IMAGE: np.array([b"png"], dtype=np.object_)}, "text only"),
    ({C.MESSAGES: json_tensor([[{"role": "user", "content": [{"type": "image"}]}]]),
      C.TOKENIZE: json_tensor([{}])}, "image part"),
])
def test_tokenize_answers_invalid_input_naming_the_problem_when_the_request_is_bad(handler, inputs, says) -> None:
    sink = Sink()
    try:
        handler.submit(inputs, "tok-1", sink)
    except InvalidInput as exc:  # refused in submit: the adapter fails the request with it
        sink.fail(exc)
    assert sink.done.wait(10)
    assert isinstance(sink.error, InvalidInput) and says in str(sink.error)


def test_detokenize_names_the_token_id_at_fault_when_one_is_out_of_the_vocabulary(handler) -> None:
    sink = answer(handler, {C.TOKEN_IDS: np.array([1, 10**9], dtype=np.int64)})
    assert isinstance(sink.error, InvalidInput)
    assert sink.error.param == "token_ids[1]" and sink.error.code == "invalid_value"


def test_build_request_carries_chat_template_kwargs_to_the_template_when_given(tokenizer) -> None:
    content = [{"type": "image"}, {"type": "text", "text": "?"}]
    request = build_request({C.MESSAGES: json_tensor([[{"role": "user", "content": content}]]),
                             C.CHAT_TEMPLATE_KWARGS: json_tensor([{"add_vision_id": True, "enable_thinking": False}])},
                            "r", None)
    assert request.chat_template_kwargs == {"add_vision_id": True, "enable_thinking": False}
    request = GenerationRequest("r", messages=request.messages, images=[np.zeros((28, 28, 3), np.uint8)],
                                chat_template_kwargs=request.chat_template_kwargs)
    assert "Picture 1: <|vision_start|>" in render_prompt(request, tokenizer, tiny_model.CHAT_TEMPLATE)


@pytest.mark.parametrize(("kwargs", "says"), [
    ("[1]", "one JSON object"), ('"x"', "one JSON object"), ('{"tokenize": true}', "chat_template_kwargs.tokenize"),
    ('{"chat_template": "x"}', "chat_template_kwargs.chat_template"),
    ('{"add_generation_prompt": 1}', "true or false"),
    ('{"add_generation_prompt": true, "continue_final_message": true}', "cannot both"),
])
def test_build_request_refuses_chat_template_kwargs_when_not_an_object_or_refused(kwargs, says) -> None:
    with pytest.raises(InvalidInput, match=says) as info:
        build_request({C.MESSAGES: json_tensor([MESSAGES]),
                       C.CHAT_TEMPLATE_KWARGS: np.array([kwargs.encode()], dtype=np.object_)}, "r")
    assert info.value.param.startswith(C.CHAT_TEMPLATE_KWARGS) and info.value.code


def test_build_request_refuses_chat_template_kwargs_when_the_prompt_is_raw() -> None:
    with pytest.raises(InvalidInput, match="needs 'messages'"):
        build_request({C.TEXT_INPUT: np.array([b"hi"], dtype=np.object_),
                       C.CHAT_TEMPLATE_KWARGS: json_tensor([{"a": 1}])}, "r")


def test_continue_final_message_leaves_the_last_message_open_when_asked(tokenizer) -> None:
    messages = [*MESSAGES, {"role": "assistant", "content": "It shows"}]
    request = build_request({C.MESSAGES: json_tensor([messages]),
                             C.CHAT_TEMPLATE_KWARGS: json_tensor([{"continue_final_message": True}])}, "r")
    text = render_prompt(request, tokenizer, tiny_model.CHAT_TEMPLATE)
    assert text.endswith("<|im_start|>assistant\nIt shows")
