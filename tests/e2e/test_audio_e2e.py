"""Audio parts on the real stack (OpenAI SDK -> shim -> tritonserver -> llm): the session's tiny
Qwen2-VL has no feature extractor, so every audio part is a 400 naming it, from the shim and from
the llm model itself (its new `audio` input). A full audio answer needs an audio model: see
tests/parity/test_audio_parity.py (tiny Qwen2-Audio on vLLM's CPU engine)."""

from __future__ import annotations

import base64
import json

import openai
import pytest
from tritonclient.utils import InferenceServerException

from tests import bad_media
from tests.e2e.test_llm import _inputs, stream
from video_pipeline import contract as C

pytestmark = pytest.mark.e2e

MODEL = "tiny-qwen2-vl"


def _audio_part() -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(bad_media.wav_tone()).decode(),
                                                   "format": "wav"}}


def test_sdk_chat_answers_400_naming_the_audio_part_when_the_model_takes_no_audio(shim) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        shim.client().chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "text", "text": "listen"}, _audio_part()]}])
    error = caught.value.body
    assert error["param"] == "messages[0].content[1].input_audio"  # type: ignore[index]
    assert "takes no audio" in error["message"]  # type: ignore[index]


def test_sdk_chat_answers_400_when_an_audio_url_goes_to_a_model_without_audio(shim, http_media) -> None:
    url = http_media.put("tone.wav", bad_media.wav_tone())
    with pytest.raises(openai.BadRequestError, match="takes no audio"):
        shim.client().chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "audio_url", "audio_url": {"url": url}}]}])


def test_sdk_responses_answers_400_when_input_audio_goes_to_a_model_without_audio(shim) -> None:
    with pytest.raises(openai.BadRequestError, match="takes no audio"):
        shim.client().responses.create(model=MODEL, max_output_tokens=2, input=[{"role": "user", "content": [
            _audio_part(), {"type": "input_text", "text": "listen"}]}])


def test_llm_refuses_its_audio_input_as_a_media_error_when_the_model_takes_no_audio(triton) -> None:
    messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "?"}]}]
    with pytest.raises(InferenceServerException) as caught:
        stream(triton.grpc_url, C.LLM.name, _inputs(messages=json.dumps(messages), audio=[bad_media.wav_tone()],
                                                    sampling_parameters=json.dumps({"max_tokens": 2})))
    doc = C.parse_error(caught.value.message())
    assert doc is not None and (doc.triton_code, doc.kind, doc.index, doc.message) == (
        "INVALID_ARG", "audio", 0, "audio 0: this model takes no audio (its folder has no feature extractor)")
