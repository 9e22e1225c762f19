"""POST /v1/chat/completions on a fake backend: what a request becomes, and what the client sees."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, data_url, frame_list_url, jpeg, png, sse_data
from video_pipeline.media import frame_list

VIDEO_A, VIDEO_B = b"\x00\x00\x00\x18ftypmp42-a", b"\x00\x00\x00\x18ftypmp42-b"
PNG = png()  # a real one: the shim reads image headers


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"model": MODEL, **body})


def user(*parts):
    return [{"role": "user", "content": list(parts)}]


def video(url, **extra):
    return {"type": "video_url", "video_url": {"url": url}, **extra}


def test_chat_maps_a_text_only_request_to_messages_and_sampling_when_given_openai_parameters(client, backend) -> None:
    r = chat(client, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
             max_tokens=5, max_completion_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=["\n"], n=2,
             user="u1", top_k=4)
    assert r.status_code == 200, r.text
    req = backend.requests[0]
    assert req.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    # max_completion_tokens wins over the deprecated max_tokens; user is not a sampling parameter
    assert req.sampling == {"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["\n"], "n": 2,
                            "top_k": 4}
    assert req.stream is False and req.frames is None and req.infos == [] and req.images == []
    assert backend.media_calls == []


def test_chat_answers_openai_completion_object_with_usage_when_not_streaming(client, backend) -> None:
    r = chat(client, messages=user({"type": "text", "text": "What happens?"}, video(data_url(VIDEO_A))), n=2)
    body = r.json()
    assert r.status_code == 200
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL and isinstance(body["created"], int)
    assert body["choices"] == [
        {"index": i, "message": {"role": "assistant", "content": "Hello world!", "refusal": None},
         "logprobs": None, "finish_reason": "stop"} for i in range(2)
    ]
    # 4 frames -> 2 temporal patches x 6 tokens; completion tokens summed over the 2 choices
    assert body["usage"] == {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26,
                             "prompt_tokens_details": {"video_tokens": 12}}


def test_chat_sends_videos_to_the_media_model_in_order_when_several_messages_carry_them(client, backend) -> None:
    messages = [
        {"role": "user", "content": [video(data_url(VIDEO_A)), {"type": "text", "text": "and"},
                                     {"type": "image_url", "image_url": {"url": data_url(PNG, "image/png")}}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [video(data_url(VIDEO_B, "video/webm")), {"type": "text", "text": "compare"}]},
    ]
    assert chat(client, messages=messages).status_code == 200
    (videos, options), = backend.media_calls
    assert videos == [VIDEO_A, VIDEO_B] and options == [{}, {}]
    req = backend.requests[0]
    assert req.messages == [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "and"}, {"type": "image"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "compare"}]},
    ]
    assert req.images == [PNG]
    # the containers went to llm as they are (decoded inside tritonserver); its plan came back
    assert req.videos == [VIDEO_A, VIDEO_B] and req.frames is None
    assert [i["num_frames"] for i in req.infos] == [4, 4]


def test_chat_maps_media_kwargs_and_part_windows_to_video_options_when_given_vllm_style(client, backend) -> None:
    r = chat(client, messages=user(video(data_url(VIDEO_A), start=1.5),
                                   {"type": "video_url", "video_url": {"url": data_url(VIDEO_B), "start": 2, "end": 5}},
                                   {"type": "text", "text": "?"}),
             media_io_kwargs={"video": {"num_frames": 6, "fps": 2}},
             mm_processor_kwargs={"min_pixels": 3136, "max_pixels": 12544, "do_sample_frames": True})
    assert r.status_code == 200, r.text
    _, options = backend.media_calls[0]
    common = {"num_frames": 6, "fps": 2, "min_pixels": 3136, "max_pixels": 12544}
    assert options == [{**common, "start": 1.5}, {**common, "start": 2.0, "end": 5.0}]


def test_chat_takes_lmdeploy_per_modality_processor_kwargs_when_nested(client, backend) -> None:
    r = chat(client, messages=user(video(data_url(VIDEO_A))),
             mm_processor_kwargs={"image": {"min_pixels": 4096, "max_pixels": 8192},
                                  "video": {"min_pixels": 4 * 32 * 32, "max_pixels": 256 * 32 * 32}},
             media_io_kwargs={"video": {"num_frames": 16, "fps": 2}})
    assert r.status_code == 200, r.text
    assert backend.media_calls[0][1] == [{"min_pixels": 4096, "max_pixels": 262144, "num_frames": 16, "fps": 2}]


def test_chat_combines_media_io_and_processor_sampling_when_each_names_different_keys(client, backend) -> None:
    # Nothing is dropped: fps from one object and num_frames from the other both apply (fps capped at num_frames).
    r = chat(client, messages=user(video(data_url(VIDEO_A))), mm_processor_kwargs={"fps": 1,
             "size": {"shortest_edge": 3136, "longest_edge": 50176}}, media_io_kwargs={"video": {"num_frames": 8}})
    assert r.status_code == 200, r.text
    assert backend.media_calls[0][1] == [{"fps": 1, "num_frames": 8, "min_pixels": 3136, "max_pixels": 50176}]


@pytest.mark.parametrize(("proc", "io", "param"), [
    ({"num_frames": 3}, {"num_frames": 8}, "media_io_kwargs.video.num_frames"),
    ({"fps": 1}, {"fps": 2}, "media_io_kwargs.video.fps"),
    ({"min_pixels": 3136, "size": {"shortest_edge": 6272}}, {}, "mm_processor_kwargs.size.shortest_edge"),
])
def test_chat_refuses_one_setting_given_twice_when_the_values_differ(client, backend, proc, io, param) -> None:
    r = chat(client, messages=user(video(data_url(VIDEO_A))), mm_processor_kwargs=proc,
             media_io_kwargs={"video": io})
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert r.json()["error"]["code"] == "conflicting_parameters" and not backend.media_calls
    same = chat(client, messages=user(video(data_url(VIDEO_A))), mm_processor_kwargs={"fps": 2},
                media_io_kwargs={"video": {"fps": 2}})
    assert same.status_code == 200, same.text  # the same value twice is no conflict


def test_chat_sends_a_jpeg_frame_list_for_video_decoder_to_decode_when_given_data_video_jpeg(client, backend) -> None:
    r = chat(client, messages=user(video(frame_list_url(5)), {"type": "text", "text": "?"}),
             media_io_kwargs={"video": {"fps": 2}})
    assert r.status_code == 200, r.text
    (videos, options), = backend.media_calls  # the shim decodes nothing: the stills go to llm encoded
    assert frame_list.split(videos[0]) == [jpeg(i * 20) for i in range(5)]
    assert options == [{"fps": 2, "frame_list": True}]
    req = backend.requests[0]
    (info,) = req.infos
    # 64x48 under the tiny model's bounds (>= 3136 px, multiples of 28): sized like any video
    assert req.frames is None and req.videos == videos
    assert info["num_frames"] == 5 and info["fps"] == 2.0 and info["frames_indices"] == [0, 1, 2, 3, 4]
    assert info["timestamps"] == [0.0, 0.5, 1.0, 1.5, 2.0] and info["video_backend"] == "jpeg_sequence"
    assert info["height"] % 28 == 0 and info["width"] % 28 == 0


def test_chat_samples_a_frame_list_uniformly_when_num_frames_is_given(client, backend) -> None:
    r = chat(client, messages=user(video(frame_list_url(9))), media_io_kwargs={"video": {"num_frames": 3}})
    assert r.status_code == 200, r.text
    assert backend.requests[0].infos[0]["frames_indices"] == [0, 4, 8]


def test_chat_packs_frame_lists_and_containers_in_part_order_when_mixed(client, backend) -> None:
    backend.frames_through_shim = True  # the older path: video_media's frames come back through the shim
    r = chat(client, messages=user(video(frame_list_url(3, (128, 96))), video(data_url(VIDEO_A))),
             media_io_kwargs={"video": {"fps": 1}})
    assert r.status_code == 200, r.text
    (videos, options), = backend.media_calls
    assert videos[1] == VIDEO_A and options == [{"fps": 1, "frame_list": True}, {"fps": 1}]
    req = backend.requests[0]
    assert [i["num_frames"] for i in req.infos] == [3, 4]
    first, second = req.infos
    assert req.frames.shape[0] == 7
    assert req.frames.shape[1] == max(first["height"], 56) and req.frames.shape[2] == max(first["width"], 84)
    # the container video's frames (value 1 from the fake: the second video of the call) sit after the list's
    assert np.all(req.frames[3:, :56, :84] == 1)
    assert second["height"] == 56


def test_chat_streams_openai_chunks_then_done_when_stream_is_true(client, backend) -> None:
    r = chat(client, messages=user({"type": "text", "text": "Hi"}), stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    payloads = sse_data(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and all("usage" not in c for c in chunks)
    deltas = [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]
    assert deltas == [({"role": "assistant", "content": ""}, None), ({"content": "Hello"}, None),
                      ({"content": " world"}, None), ({"content": "!"}, None), ({}, "stop")]
    assert backend.requests[0].stream is True


def test_chat_ends_the_stream_with_a_usage_chunk_when_include_usage_is_set(client, backend) -> None:
    r = chat(client, messages=user(video(data_url(VIDEO_A))), stream=True, stream_options={"include_usage": True})
    chunks = [json.loads(p) for p in sse_data(r.text)[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23,
                                   "prompt_tokens_details": {"video_tokens": 12}}


def test_chat_streams_every_choice_when_n_is_two(client, backend) -> None:
    r = chat(client, messages=user({"type": "text", "text": "Hi"}), stream=True, n=2, temperature=1.0)
    chunks = [json.loads(p) for p in sse_data(r.text)[:-1]]
    for i in range(2):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(c["delta"].get("content", "") for c in mine) == "Hello world!"
        assert mine[-1]["finish_reason"] == "stop"


def test_chat_puts_the_error_in_the_stream_then_done_when_generation_fails_midway(settings) -> None:
    from fastapi.testclient import TestClient

    from openai_frontend.app import create_app
    from video_pipeline.errors import EngineUnavailable

    backend = FakeBackend(generate_error=EngineUnavailable("the inference engine is not healthy"), error_after=2)
    with TestClient(create_app(settings, backend)) as client:
        r = chat(client, messages=user({"type": "text", "text": "Hi"}), stream=True)
    payloads = sse_data(r.text)
    assert r.status_code == 200 and payloads[-1] == "[DONE]"
    assert json.loads(payloads[-2]) == {"error": {"message": "the inference engine is not healthy",
                                                  "type": "server_error", "param": None, "code": "unavailable"}}
    assert backend.closed_early == 1
