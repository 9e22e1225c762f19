"""Errors exactly OpenAI-shaped end to end (issues 22 and 18.3): the real OpenAI SDK -> shim -> tritonserver ->
llm -> vLLM. Every refusal carries its ``param`` and OpenAI's ``code`` as data from the layer that found it (the
engine's sampling checks, the llm model's context check after tokenizing, the decoder naming its video), through
the error document of video_pipeline.contract; transient media-host failures are retried."""

from __future__ import annotations

import json
import threading

import openai
import pytest

from tests.conftest import ROOT
from tests.e2e.test_llm import _inputs, stream
from tests.e2e.test_openai_chat import ask, data_url, video_part
from tests.videos import ClipSpec, make_video
from video_pipeline import contract as C

pytestmark = pytest.mark.e2e

MODEL = "tiny-qwen2-vl"
CONTEXT = 16384  # max_model_len of model_repository/llm/1/model.json
SMALL = {"media_io_kwargs": {"video": {"num_frames": 4}}, "mm_processor_kwargs": {"max_pixels": 56 * 56}}
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=160, height=120, fps=10, num_frames=20, gop=10))


def refused(shim, status: int = 400, **body: object) -> dict:
    """The error body of a chat request the server must refuse with ``status``, streamed and not."""
    errors = []
    for streamed in (False, True):
        with pytest.raises(openai.APIStatusError) as info:
            answer = shim.client().chat.completions.create(model=MODEL, stream=streamed, **body)
            if streamed:
                list(answer)
        assert info.value.status_code == status, info.value.body
        errors.append(info.value.body)
    assert errors[0] == errors[1]
    return errors[0]


@pytest.mark.parametrize(("body", "param", "code", "needle"), [
    ({"temperature": 5}, "temperature", "decimal_above_max_value", "temperature must be in [0, 2]"),
    ({"max_tokens": -1}, "max_tokens", "integer_below_min_value", "max_tokens must be at least 1"),
    ({"max_tokens": CONTEXT + 1000}, "max_tokens", "context_length_exceeded",
     f"maximum context length is {CONTEXT} tokens"),
    ({"temperature": "hot"}, "temperature", "invalid_type", "temperature"),
    ({"max_tokens": 1.5}, "max_tokens", "invalid_type", "max_tokens"),
])
def test_sdk_chat_refusal_names_the_parameter_and_openais_code_when_a_sampling_value_is_wrong(
        shim, body, param, code, needle) -> None:
    err = refused(shim, messages=HI, **body)
    assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error"), err
    assert needle in err["message"]


def test_sdk_chat_is_context_length_exceeded_naming_the_messages_when_the_text_prompt_is_over_the_context(
        shim) -> None:
    long = " ".join(["word"] * (CONTEXT + 2000))
    err = refused(shim, messages=[{"role": "user", "content": long}], max_tokens=4)
    assert (err["param"], err["code"]) == ("messages", "context_length_exceeded"), err
    assert f"maximum context length is {CONTEXT} tokens" in err["message"]


def test_sdk_chat_is_context_length_exceeded_naming_max_tokens_when_prompt_and_completion_overflow(shim) -> None:
    prompt = " ".join(["word"] * 3000)
    err = refused(shim, messages=[{"role": "user", "content": prompt}], max_tokens=CONTEXT - 1000)
    assert (err["param"], err["code"]) == ("max_tokens", "context_length_exceeded"), err
    assert f"{CONTEXT - 1000} in the completion" in err["message"]


def test_sdk_chat_names_the_bad_video_when_one_of_several_fails_in_the_decoder(shim, clip) -> None:
    broken = (ROOT / "tests" / "data" / "broken" / "truncated_half.mp4").read_bytes()
    err = refused(shim, messages=ask(video_part(data_url(clip)), video_part(data_url(broken))), max_tokens=2,
                  extra_body=SMALL)
    where = "messages[0].content[1].video_url"
    assert err["param"] == where and err["message"].startswith(f"{where}: "), err
    assert "video 1:" not in err["message"] and C.ERROR_MARK not in err["message"]
    assert err["code"] == "invalid_request"


def test_sdk_chat_names_the_audio_part_and_its_code_when_the_model_takes_no_audio(shim) -> None:
    from tests import bad_media

    audio = {"type": "input_audio", "input_audio": {"data": data_url(bad_media.wav_tone()).split(",", 1)[1],
                                                    "format": "wav"}}
    err = refused(shim, messages=[{"role": "user", "content": [{"type": "text", "text": "?"}, audio]}],
                  max_tokens=2)
    assert (err["param"], err["code"]) == ("messages[0].content[1].input_audio", "unsupported_modality"), err


def test_triton_clients_read_the_engines_refusal_as_text_then_its_document(triton) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        stream(triton.grpc_url, C.LLM.name, _inputs(messages=json.dumps(HI),
                                                    sampling_parameters=json.dumps({"temperature": 5})))
    message = caught.value.message()
    assert message.startswith("invalid sampling parameters: temperature must be in [0, 2]")
    doc = C.parse_error(message)
    assert doc is not None and (doc.error, doc.status, doc.param, doc.code) == (
        "InvalidInput", 400, "temperature", "decimal_above_max_value")


# --- transient failures of media hosts ------------------------------------------------------------------


def flaky(http_media, name: str, failures: int, body: bytes, status: int = 503) -> tuple[str, list[int]]:
    seen = [0]
    lock = threading.Lock()

    def answer(request) -> None:
        with lock:
            seen[0] += 1
            failing = seen[0] <= failures
        data = b"try again" if failing else body
        request.send_response(status if failing else 200)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    return http_media.route(name, answer), seen


def test_sdk_chat_succeeds_when_the_media_host_answers_503_once(shim, http_media, clip) -> None:
    url, seen = flaky(http_media, "once-503.mp4", failures=1, body=clip)
    answer = shim.client().chat.completions.create(model=MODEL, messages=ask(video_part(url)), max_tokens=2,
                                                   temperature=0, extra_body=SMALL)
    assert answer.choices[0].message.content and seen[0] == 2
    assert answer.usage.prompt_tokens_details.video_tokens > 0  # type: ignore[union-attr]


def test_sdk_chat_answers_400_naming_the_url_when_the_media_host_stays_unavailable(shim, http_media, clip) -> None:
    url, seen = flaky(http_media, "always-503.mp4", failures=10**6, body=clip)
    err = refused(shim, messages=ask(video_part(url)), max_tokens=2, extra_body=SMALL)
    assert (err["param"], err["code"]) == ("messages[0].content[0].video_url", "media_fetch_failed"), err
    retries = shim.settings.fetch_retries
    assert url in err["message"] and f"HTTP 503 (tried {retries + 1} times)" in err["message"]
    assert seen[0] == 2 * (retries + 1)  # the streamed request and the other one
