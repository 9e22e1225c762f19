"""Property-based fuzzing of request parsing (hypothesis): whatever the body, the shim answers
200 or a 4xx in OpenAI's error shape — never a 5xx, never a traceback.

Bodies are built the way the schemas read them (known fields with plausible and arbitrary
values, messages of every content-part type with media URLs of every kind), and some are
then cut or corrupted as bytes. The app runs on the fake backend with its real media client
on a fake DNS where every host is internal, so nothing leaves the machine.

The suite runs a bounded number of examples (deterministic, ~20 s); ``make fuzz`` runs many
more, randomly: ``VLT_FUZZ_EXAMPLES`` sets the count, ``VLT_FUZZ_RANDOM=1`` drops the fixed seed.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openai_frontend.app import create_app
from openai_frontend.media.fetch import media_client
from tests.fakes import FakeBackend, FakeDns
from tests.frontend.conftest import MODEL, frame_list_url, jpeg, png

EXAMPLES = int(os.environ.get("VLT_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("VLT_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


MP4_HEAD = b"\x00\x00\x00\x18ftypmp42" + bytes(32)
URLS = [
    f"data:video/mp4;base64,{_b64(MP4_HEAD)}", f"data:image/png;base64,{_b64(png())}",
    f"data:image/jpeg;base64,{_b64(jpeg(7))}", "data:video/mp4;base64,@@@", "data:video/mp4;base64,",
    "data:image/png;base64,AAAA", f"data:text/html;base64,{_b64(b'<html>')}", "data:,", "data:video/mp4,raw",
    frame_list_url(2), "data:video/jpeg;base64,,,", "data:video/jpeg;base64," + ",".join(["AAAA"] * 3),
    "http://127.0.0.1/v.mp4", "http://[::1]:8080/v.mp4", "http://169.254.169.254/latest/meta-data/",
    "http://media.test/v.mp4", "https://media.test:99999/v.mp4", "http://10.0.0.1/", "http://user:pw@media.test/",
    "http://", "https://[", "ftp://media.test/a.mp4", "gopher://x", "file:///etc/passwd", "file://host/x",
    "/etc/passwd", "../../etc/passwd", "clip.mp4", "file-abc", "file-id://../../x", "form://x", "", " ", "\x00",
    "C:\\video.mp4", "http://media.test/" + "a" * 9000,
    # vLLM's file-id scheme: well formed, empty, a path, a query
    "vllm-file://file-abc", "vllm-file://", "vllm-file://file-a/../../x", "vllm-file://file-a?x=1", "vllm-file:///x",
    # audio: a WAV header alone, a lying MIME type, an unknown audio/* type
    f"data:audio/wav;base64,{_b64(b'RIFF' + bytes(4) + b'WAVEfmt ' + bytes(24))}", f"data:audio/mpeg;base64,{_b64(png())}",
    "data:audio/x-made-up;base64,AAAA",
]

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
                | st.sampled_from(URLS))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
url = st.sampled_from(URLS) | st.text(max_size=40) | json_values
number = st.integers(min_value=-5, max_value=5000) | st.floats(allow_nan=True) | json_values


def _part(types: list[str]) -> st.SearchStrategy:
    window = st.fixed_dictionaries({}, optional={"start": number, "end": number})
    video_url = url | st.builds(lambda u, w: {"url": u, **w}, url, window)
    # vLLM's media uuid: with media, or alone (its cache-hit shape, the media field null or absent)
    uuid = st.sampled_from(["clip-1", "", "u" * 300]) | st.text(max_size=20) | json_values
    shapes = {
        "text": st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=50) | json_values}),
        "image_url": st.fixed_dictionaries({"type": st.just("image_url"),
                                            "image_url": url | st.none() | st.fixed_dictionaries({"url": url})},
                                           optional={"detail": st.sampled_from(["auto", "low", "x"]),
                                                     "uuid": uuid}),
        "video_url": st.builds(lambda t, v, w, u: {"type": t, "video_url": v, **w, **u}, st.just("video_url"),
                               video_url | st.none(), window, st.fixed_dictionaries({}, optional={"uuid": uuid})),
        "uuid_only": st.fixed_dictionaries({"type": st.sampled_from(["image_url", "video_url"]), "uuid": uuid}),
        "input_text": st.fixed_dictionaries({"type": st.just("input_text"), "text": st.text(max_size=50)}),
        "output_text": st.fixed_dictionaries({"type": st.just("output_text"), "text": st.text(max_size=20)}),
        "input_image": st.fixed_dictionaries({"type": st.just("input_image")},
                                             optional={"image_url": url, "file_id": url, "uuid": uuid}),
        "input_video": st.fixed_dictionaries({"type": st.just("input_video")},
                                             optional={"video_url": video_url, "file_id": url, "start": number,
                                                       "uuid": uuid}),
        # OpenAI's input_audio (chat and Responses) and vLLM's audio_url
        "input_audio": st.fixed_dictionaries({"type": st.just("input_audio")}, optional={
            "input_audio": st.fixed_dictionaries({}, optional={
                "data": st.sampled_from(["", "@@@", "AAAA", _b64(b"RIFF" + bytes(40)), _b64(png())]) | json_values,
                "format": st.sampled_from(["wav", "mp3", "flac", "midi", "WAV", ""]) | json_values}) | json_values,
            "audio_url": url, "file_id": url}),
        "audio_url": st.fixed_dictionaries({"type": st.just("audio_url"),
                                            "audio_url": url | st.none() | st.fixed_dictionaries({"url": url})},
                                           optional={"uuid": uuid}),
        # vLLM's image_embeds: a base64 tensor, or an object of them and numeric arrays (image_grid_thw)
        "image_embeds": st.fixed_dictionaries({"type": st.just("image_embeds")}, optional={
            "image_embeds": st.sampled_from(["", "@@@", "AAAA", _b64(b"\x93NUMPY" + bytes(20)), _b64(png())])
            | st.fixed_dictionaries({}, optional={"image_embeds": url, "image_grid_thw": json_values}) | json_values,
            "uuid": uuid}),
        "input_file": st.fixed_dictionaries({"type": st.just("input_file")},
                                            optional={"file_id": url, "file_data": url, "file_url": url,
                                                      "filename": url}),
    }
    return st.sampled_from(types).flatmap(lambda t: shapes[t]) | json_values


def _messages(types: list[str]) -> st.SearchStrategy:
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "developer", "robot"]) | json_values,
         "content": st.text(max_size=40) | st.lists(_part(types), max_size=5) | json_values},
        optional={"name": json_values, "type": st.just("message")})
    return st.lists(message | json_values, max_size=4) | json_values


MEDIA_KWARGS = st.fixed_dictionaries({}, optional={
    "media_io_kwargs": st.fixed_dictionaries({}, optional={"video": st.fixed_dictionaries(
        {}, optional={"num_frames": number, "fps": number, "max_frames": number})}) | json_values,
    "mm_processor_kwargs": st.fixed_dictionaries({}, optional={
        "min_pixels": number, "max_pixels": number, "fps": number, "size": json_values,
        "video": json_values, "image": json_values, "use_audio_in_video": json_values}) | json_values,
})
SAMPLING = st.fixed_dictionaries({}, optional={
    k: number for k in ("temperature", "top_p", "seed", "top_k", "min_p", "min_tokens", "presence_penalty",
                        "frequency_penalty", "repetition_penalty")
} | {"stop": json_values, "stop_token_ids": json_values, "ignore_eos": json_values, "stream": st.booleans(),
     "stream_options": json_values, "n": number, "user": json_values, "metadata": json_values,
     "unknown_field": json_values})

CHAT = st.builds(lambda base, extra, media, sampling: {**base, **extra, **media, **sampling},
                 st.fixed_dictionaries({"model": st.just(MODEL) | json_values,
                                        "messages": _messages(["text", "image_url", "video_url", "uuid_only",
                                                               "input_text", "input_audio", "audio_url",
                                                               "image_embeds"])}),
                 st.fixed_dictionaries({}, optional={"max_tokens": number, "max_completion_tokens": number,
                                                     "logprobs": json_values, "response_format": json_values}),
                 MEDIA_KWARGS, SAMPLING)
RESPONSES = st.builds(lambda base, extra, media, sampling: {**base, **extra, **media, **sampling},
                      st.fixed_dictionaries({"model": st.just(MODEL) | json_values,
                                             "input": st.text(max_size=30) | _messages(
                                                 ["input_text", "output_text", "input_image", "input_video",
                                                  "input_file", "video_url", "input_audio"])}),
                      st.fixed_dictionaries({}, optional={
                          "instructions": json_values, "max_output_tokens": number, "text": json_values,
                          "tools": json_values, "tool_choice": json_values, "reasoning": json_values,
                          "truncation": json_values, "include": json_values, "previous_response_id": json_values}),
                      MEDIA_KWARGS, SAMPLING)


def _encode(body: object) -> bytes:
    return json.dumps(body, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def raw_bodies(draw: st.DrawFn, structured: st.SearchStrategy) -> bytes:
    """A structured body as JSON bytes; now and then cut short, corrupted, or something else entirely."""
    data = _encode(draw(structured))
    how = draw(st.sampled_from(["as is"] * 6 + ["cut", "flip", "insert", "other"]))
    if how == "cut" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    if how == "insert":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(max_size=8)) + data[i:]
    if how == "other":
        return draw(st.binary(max_size=64) | st.builds(_encode, json_values))
    return data


@pytest.fixture
def fuzz_client(settings) -> Iterator[TestClient]:
    # Every media host is internal (refused) and only one name may be fetched at all: no network.
    s = settings.with_(allowed_media_domains="media.test", fetch_total_timeout_s=5.0)
    dns = FakeDns({"media.test": [["10.0.0.1"]]})
    with TestClient(create_app(s, FakeBackend(), http=media_client(s, resolver=dns)),
                    raise_server_exceptions=False) as client:
        yield client


def _check(client: TestClient, path: str, body: bytes, content_type: str = "application/json") -> None:
    r = client.post(path, content=body, headers={"content-type": content_type})
    assert r.status_code < 500, (r.status_code, r.text[:500], body[:500])
    if r.status_code >= 400:
        err = r.json()
        assert set(err) == {"error"} and set(err["error"]) == {"message", "type", "param", "code"}, r.text[:500]
        assert isinstance(err["error"]["message"], str) and err["error"]["message"]


@FUZZ
@given(body=raw_bodies(CHAT))
def test_chat_answers_200_or_a_4xx_whatever_the_body(fuzz_client, body) -> None:
    _check(fuzz_client, "/v1/chat/completions", body)


@FUZZ
@given(body=raw_bodies(RESPONSES))
def test_responses_answers_200_or_a_4xx_whatever_the_body(fuzz_client, body) -> None:
    _check(fuzz_client, "/v1/responses", body)


@settings(FUZZ, max_examples=max(20, EXAMPLES // 5))
@given(payload=raw_bodies(CHAT), field=st.sampled_from(["payload", "clip", "file"]))
def test_multipart_chat_answers_200_or_a_4xx_whatever_the_payload(fuzz_client, payload, field) -> None:
    boundary = "fuzzboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n").encode() + payload + (
        f"\r\n--{boundary}--\r\n").encode()
    _check(fuzz_client, "/v1/chat/completions", body, f"multipart/form-data; boundary={boundary}")
