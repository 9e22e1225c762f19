"""Sampling refusals name their parameter and carry OpenAI's code as data, from our checks and vLLM's."""

from __future__ import annotations

from typing import Any

import pytest

from video_pipeline import contract as C
from video_pipeline.engines.sampling import bound_code, parse_sampling, to_sampling_params
from video_pipeline.engines.vllm_engine import check_context
from video_pipeline.errors import InvalidInput


@pytest.mark.parametrize(("raw", "param", "code"), [
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"max_tokens": 1.5}, "max_tokens", "invalid_type"),
    ({"max_tokens": True}, "max_tokens", "invalid_type"),
    ({"ignore_eos": 1}, "ignore_eos", "invalid_type"),
    ({"stop": [1, 2]}, "stop", "invalid_type"),
    ({"stop_token_ids": 5}, "stop_token_ids", "invalid_type"),
    ({"temperature": float("nan")}, "temperature", "invalid_value"),
    ({"temprature": 1.0}, "temprature", "unknown_parameter"),
])
def test_parse_sampling_names_the_parameter_and_openais_code_when_a_value_is_wrong(raw, param, code) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_sampling(raw)
    assert (caught.value.param, caught.value.code) == (param, code)


@pytest.mark.parametrize(("key", "value", "code"), [
    ("temperature", 5.0, "decimal_above_max_value"),
    ("temperature", -1.0, "decimal_below_min_value"),
    ("max_tokens", -1, "integer_below_min_value"),
    ("n", 0, "integer_below_min_value"),
    ("top_p", 0.0, "invalid_value"),  # inside OpenAI's bounds; vLLM's own range refused it
    ("top_k", -5, "invalid_value"),
    ("stop", [""], "invalid_value"),
])
def test_bound_code_gives_openais_code_when_a_value_is_outside_its_documented_bounds(key, value, code) -> None:
    assert bound_code(key, value) == code


@pytest.fixture(scope="module")
def vllm_sampling() -> Any:
    return pytest.importorskip("vllm.sampling_params")


@pytest.mark.parametrize(("values", "param", "code"), [
    ({"temperature": 5.0}, "temperature", "decimal_above_max_value"),
    ({"max_tokens": -1}, "max_tokens", "integer_below_min_value"),
    ({"presence_penalty": 3.0}, "presence_penalty", "decimal_above_max_value"),  # vLLM gives no parameter
    ({"n": 2, "temperature": 0.0}, "n", "invalid_value"),
    ({"min_tokens": 9, "max_tokens": 4}, "min_tokens", "invalid_value"),
])
def test_to_sampling_params_names_the_parameter_when_vllm_refuses_a_value(vllm_sampling, values, param,
                                                                          code) -> None:
    with pytest.raises(InvalidInput, match="invalid sampling parameters") as caught:
        to_sampling_params(values)
    assert (caught.value.param, caught.value.code) == (param, code)
    assert "(parameter=" not in str(caught.value)  # vLLM's tail: the parameter is data now


def test_check_context_refuses_a_prompt_that_leaves_no_room_naming_the_messages() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_context(4096, None, 4096, C.MESSAGES)
    assert (caught.value.param, caught.value.code) == ("messages", "context_length_exceeded")
    assert "maximum context length is 4096 tokens" in str(caught.value) and "4096 tokens" in str(caught.value)


def test_check_context_refuses_max_tokens_that_do_not_fit_beside_the_prompt() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_context(100, 4000, 4096, C.TEXT_INPUT)
    assert (caught.value.param, caught.value.code) == ("max_tokens", "context_length_exceeded")
    assert "you requested 4100 tokens (100 in the prompt, 4000 in the completion)" in str(caught.value)
    check_context(96, 4000, 4096, C.MESSAGES)  # exactly full: fine
    check_context(4000, None, 4096, C.MESSAGES)  # no max_tokens asked: vLLM generates what fits
