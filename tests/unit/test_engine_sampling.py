"""Sampling parameters: names and types checked here, ranges by vLLM, all as InvalidInput."""

from __future__ import annotations

from typing import Any

import pytest

from video_pipeline.engines.sampling import parse_sampling, to_sampling_params
from video_pipeline.errors import InvalidInput


def test_parse_sampling_coerces_string_values_when_sent_by_vllm_backend_clients() -> None:
    values = parse_sampling(
        {"temperature": "0.5", "top_p": "0.9", "max_tokens": "12", "ignore_eos": "true", "seed": 3.0}
    )
    assert values == {"temperature": 0.5, "top_p": 0.9, "max_tokens": 12, "ignore_eos": True, "seed": 3}


def test_parse_sampling_reads_json_text_when_given_a_string() -> None:
    assert parse_sampling('{"max_tokens": 4, "stop": "END"}') == {"max_tokens": 4, "stop": ["END"]}
    assert parse_sampling(b"") == {}
    assert parse_sampling(None) == {}


def test_parse_sampling_drops_nulls_when_a_client_sends_unset_fields() -> None:
    assert parse_sampling({"temperature": None, "max_tokens": None, "n": 2}) == {"n": 2}


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"temprature": 1.0}, "unknown sampling parameter"),
        ({"max_tokens": 1.5}, "max_tokens must be an integer"),
        ({"max_tokens": True}, "max_tokens must be an integer"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"temperature": float("nan")}, "finite"),
        ({"ignore_eos": 1}, "ignore_eos must be true or false"),
        ({"stop": [1, 2]}, "stop must be a string or a list of strings"),
        ({"stop_token_ids": 5}, "stop_token_ids must be a list"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_parse_sampling_raises_invalid_input_when_a_value_is_wrong(raw: Any, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_sampling(raw)


# The rest builds vLLM's SamplingParams: imports vLLM (a few seconds), starts nothing.


@pytest.fixture(scope="module")
def vllm_sampling() -> Any:
    return pytest.importorskip("vllm.sampling_params")


def test_to_sampling_params_streams_deltas_without_a_token_cap_when_unset(vllm_sampling: Any) -> None:
    params = to_sampling_params({}, stream=True)
    assert params.output_kind == vllm_sampling.RequestOutputKind.DELTA
    assert params.max_tokens is None  # vLLM fills in the room left in the context


def test_to_sampling_params_returns_final_only_when_not_streaming(vllm_sampling: Any) -> None:
    params = to_sampling_params({"max_tokens": 5, "n": 2, "temperature": 0.5}, stream=False)
    assert params.output_kind == vllm_sampling.RequestOutputKind.FINAL_ONLY
    assert (params.max_tokens, params.n, params.temperature) == (5, 2, 0.5)


def test_to_sampling_params_lets_the_request_override_model_defaults_when_both_set(
    vllm_sampling: Any,
) -> None:
    defaults = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "unrelated": 1}
    params = to_sampling_params({"temperature": 0.2}, defaults=defaults)
    assert (params.temperature, params.top_p, params.top_k) == (0.2, 0.8, 20)


@pytest.mark.parametrize(
    "values",
    [
        {"temperature": -1.0},
        {"top_p": 0.0},
        {"n": 0},
        {"max_tokens": 0},
        {"min_p": 2.0},
        {"stop": [""]},
        {"n": 2, "temperature": 0.0},  # greedy cannot give two different choices
    ],
)
def test_to_sampling_params_raises_invalid_input_when_vllm_rejects_a_range(
    vllm_sampling: Any, values: dict
) -> None:
    with pytest.raises(InvalidInput, match="invalid sampling parameters"):
        to_sampling_params(values)
