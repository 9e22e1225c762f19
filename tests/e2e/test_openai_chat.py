"""The OpenAI shim end to end: the real OpenAI SDK -> shim -> tritonserver -> vLLM (tiny Qwen2-VL).

Media come from a local HTTP server, data: URLs and file:// paths; raw requests
use the exact shapes of the vLLM and LMDeploy documentation examples.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time

import httpx
import openai
import pytest

from tests.e2e.test_llm import _inputs, stream, text_of
from tests.videos import ClipSpec, make_frame, make_video

pytestmark = pytest.mark.e2e

QUESTION = "What happens in the video?"
# 8 frames of 160x120 under a 112*112 budget -> 84x112 -> 4 temporal patches x 12 = 48 video tokens
SMALL = {"media_io_kwargs": {"video": {"num_frames": 8}}, "mm_processor_kwargs": {"max_pixels": 112 * 112}}
VIDEO_TOKENS = 48


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10))


@pytest.fixture(scope="module")
def other_clip() -> bytes:
    return make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10, rotation=180))


def data_url(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png(index: int = 3) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(make_frame(index, 96, 128)).save(buf, format="PNG")
    return buf.getvalue()


def video_part(url: str, **extra: object) -> dict:
    return {"type": "video_url", "video_url": {"url": url}, **extra}


def ask(*parts: dict) -> list[dict]:
    return [{"role": "user", "content": [*parts, {"type": "text", "text": QUESTION}]}]


def test_sdk_chat_answers_with_video_usage_when_given_a_video_over_http(shim, http_media, clip) -> None:
    url = http_media.put("clip.mp4", clip)
    r = shim.client().chat.completions.create(model="tiny-qwen2-vl", messages=ask(video_part(url)), max_tokens=12,
                                              temperature=0, extra_body=SMALL)
    assert r.object == "chat.completion" and r.model == "tiny-qwen2-vl"
    (choice,) = r.choices
    assert choice.finish_reason == "length" and choice.message.role == "assistant" and choice.message.content
    assert r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens_details.video_tokens == VIDEO_TOKENS
    assert r.usage.prompt_tokens > VIDEO_TOKENS
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_sdk_chat_gives_the_same_tokens_as_the_video_llm_ensemble_when_asked_the_same(shim, clip) -> None:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    direct = stream(shim.triton.grpc_url, "video_llm", _inputs(
        video=[clip], video_options=[json.dumps({"num_frames": 8, "max_pixels": 112 * 112}).encode()],
        messages=json.dumps(messages), sampling_parameters=json.dumps({"max_tokens": 12, "temperature": 0})))
    r = shim.client().chat.completions.create(model="tiny-qwen2-vl", messages=ask(video_part(data_url(clip))),
                                              max_completion_tokens=12, temperature=0, extra_body=SMALL)
    assert r.choices[0].message.content == text_of(direct) != ""


def test_sdk_chat_streams_chunks_and_usage_when_stream_and_include_usage_are_set(shim, clip) -> None:
    chunks = list(shim.client().chat.completions.create(
        model="tiny-qwen2-vl", messages=ask(video_part(data_url(clip))), max_tokens=10, temperature=0,
        stream=True, stream_options={"include_usage": True}, extra_body=SMALL))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert chunks[-1].usage.prompt_tokens_details.video_tokens == VIDEO_TOKENS
    assert all(c.usage is None for c in chunks[:-1])


def test_sdk_chat_reads_several_videos_and_an_image_across_messages_when_mixed(shim, http_media, clip,
                                                                               other_clip) -> None:
    (shim.media_dir / "local.mp4").write_bytes(other_clip)
    messages = [
        {"role": "system", "content": "You describe videos."},
        {"role": "user", "content": [video_part(http_media.put("a.mp4", clip)),
                                     {"type": "image_url", "image_url": {"url": data_url(png(), "image/png")}},
                                     {"type": "text", "text": "Describe these."}]},
        {"role": "assistant", "content": "A clip and a picture."},
        {"role": "user", "content": [video_part((shim.media_dir / "local.mp4").as_uri(), start=1, end=3),
                                     {"type": "text", "text": "And this one?"}]},
    ]
    r = shim.client().chat.completions.create(model="tiny-qwen2-vl", messages=messages, max_tokens=8,
                                              temperature=0, extra_body=SMALL)
    assert r.choices[0].message.content
    assert r.usage.prompt_tokens_details.video_tokens == 2 * VIDEO_TOKENS


def test_sdk_chat_accepts_a_jpeg_frame_list_when_given_data_video_jpeg(shim) -> None:
    from PIL import Image

    frames = []
    for i in range(6):
        buf = io.BytesIO()
        Image.fromarray(make_frame(i, 120, 160)).save(buf, format="JPEG")
        frames.append(base64.b64encode(buf.getvalue()).decode())
    url = "data:video/jpeg;base64," + ",".join(frames)
    r = shim.client().chat.completions.create(
        model="tiny-qwen2-vl", messages=ask(video_part(url)), max_tokens=6, temperature=0,
        extra_body={"media_io_kwargs": {"video": {"fps": 2}}, "mm_processor_kwargs": {"max_pixels": 112 * 112}})
    assert r.choices[0].message.content
    # 6 frames -> 3 temporal patches x (3 x 4 merged patches of 84x112) = 36 video tokens
    assert r.usage.prompt_tokens_details.video_tokens == 36


def test_sdk_chat_answers_text_only_requests_without_video_tokens(shim) -> None:
    r = shim.client().chat.completions.create(model="tiny-qwen2-vl", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=4, temperature=0)
    assert r.choices[0].message.content and r.usage.prompt_tokens_details.video_tokens == 0


# --- raw requests in the documentation's exact shapes ----------------------------------------------------


def _docs_examples(urls: dict[str, str]) -> dict[str, dict]:
    """Bodies shaped like vLLM's and LMDeploy's documented video examples (smaller token budgets)."""
    return {
        "vllm-single-video": {
            "model": "tiny-qwen2-vl",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What's in this video?"},
                {"type": "video_url", "video_url": {"url": urls["a"]}},
            ]}],
            "max_completion_tokens": 8,
            "media_io_kwargs": {"video": {"num_frames": 8}},
        },
        "lmdeploy-multiple-videos": {
            "model": "tiny-qwen2-vl",
            "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": urls["a"]}},
                {"type": "video_url", "video_url": {"url": urls["b"]}},
                {"type": "text", "text": "Compare these two videos. What are the similarities and differences?"},
            ]}],
            "temperature": 0.8, "top_p": 0.8, "max_completion_tokens": 8,
            "media_io_kwargs": {"video": {"num_frames": 4}},
        },
        "lmdeploy-mixed-image-and-video": {
            "model": "tiny-qwen2-vl",
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": urls["image"]}},
                {"type": "video_url", "video_url": {"url": urls["a"]}},
                {"type": "text", "text": "Describe both the image and the video."},
            ]}],
            "temperature": 0.8, "top_p": 0.8, "max_completion_tokens": 8,
            "media_io_kwargs": {"video": {"num_frames": 4}},
        },
        "lmdeploy-processor-and-io-kwargs": {
            "model": "tiny-qwen2-vl",
            "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": urls["a"]}},
                {"type": "text", "text": "Describe this video."},
            ]}],
            "max_completion_tokens": 8,
            "mm_processor_kwargs": {"image": {"min_pixels": 128 * 32 * 32, "max_pixels": 256 * 32 * 32},
                                    "video": {"min_pixels": 4 * 32 * 32, "max_pixels": 256 * 32 * 32}},
            "media_io_kwargs": {"video": {"num_frames": 16, "fps": 2}},
        },
        "vllm-processor-fps": {
            "model": "tiny-qwen2-vl",
            "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": urls["a"]}},
                {"type": "text", "text": "How many jars?"},
            ]}],
            "max_tokens": 8, "temperature": 1.0, "top_p": 0.95, "presence_penalty": 1.5, "top_k": 20,
            "mm_processor_kwargs": {"fps": 2, "do_sample_frames": True},
        },
    }


@pytest.mark.parametrize("example", ["vllm-single-video", "lmdeploy-multiple-videos", "lmdeploy-mixed-image-and-video",
                                     "lmdeploy-processor-and-io-kwargs", "vllm-processor-fps"])
def test_raw_request_in_the_docs_shape_is_answered_when_posted_like_curl(shim, http_media, clip, other_clip,
                                                                         example) -> None:
    urls = {"a": http_media.put("doc_a.mp4", clip), "b": http_media.put("doc_b.mp4", other_clip),
            "image": http_media.put("doc.png", png())}
    body = _docs_examples(urls)[example]
    r = httpx.post(f"{shim.base_url}/v1/chat/completions", json=body, headers={"Content-Type": "application/json"},
                   timeout=300)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["choices"][0]["message"]["content"]
    assert answer["usage"]["completion_tokens"] <= 8
    assert answer["usage"]["prompt_tokens_details"]["video_tokens"] > 0


# --- errors ---------------------------------------------------------------------------------------------


def test_sdk_chat_raises_bad_request_with_the_decoder_message_when_the_video_is_garbage(shim) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        shim.client().chat.completions.create(model="tiny-qwen2-vl",
                                              messages=ask(video_part(data_url(b"\x00" * 1000))), max_tokens=4)
    err = info.value.body
    assert err["param"] == "messages[0].content[0].video_url"
    assert "video" in err["message"].lower() and "Traceback" not in err["message"]


@pytest.mark.parametrize(("make", "extra", "status", "needle"), [
    (lambda clip: clip, {"media_io_kwargs": {"video": {"num_frames": 5000}}}, 413, "2048"),
    (lambda clip: png(), {}, 415, "still image"),
])
def test_sdk_chat_maps_the_media_models_refusals_to_4xx_when_media_break_a_budget_or_are_no_video(
        shim, clip, make, extra, status, needle) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        shim.client().chat.completions.create(model="tiny-qwen2-vl", messages=ask(video_part(data_url(make(clip)))),
                                              max_tokens=4, extra_body=extra)
    assert info.value.status_code == status
    assert needle in info.value.body["message"] and info.value.body["param"] == "messages[0].content[0].video_url"


def test_sdk_chat_raises_bad_request_when_the_video_url_is_unreachable(shim, http_media) -> None:
    # Another loopback port would be refused (403) before any connection: only http_media is allowed.
    with pytest.raises(openai.BadRequestError) as info:
        shim.client().chat.completions.create(
            model="tiny-qwen2-vl", messages=ask(video_part(http_media.url("gone.mp4"))), max_tokens=4)
    assert "could not fetch" in info.value.body["message"]


def test_sdk_chat_raises_not_found_when_the_model_is_unknown(shim) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        shim.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.body["code"] == "model_not_found"


def test_sdk_chat_raises_bad_request_with_vllms_message_when_n_is_two_and_greedy(shim) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        shim.client().chat.completions.create(model="tiny-qwen2-vl", messages=[{"role": "user", "content": "Hi"}],
                                              n=2, temperature=0, max_tokens=4)
    assert "greedy" in info.value.body["message"].lower() or "n must be 1" in info.value.body["message"]


def test_sdk_chat_returns_n_choices_when_n_is_two_and_sampling(shim) -> None:
    r = shim.client().chat.completions.create(model="tiny-qwen2-vl", messages=[{"role": "user", "content": "Hi"}],
                                              n=2, temperature=1.0, seed=7, max_tokens=4)
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert r.usage.completion_tokens == 8


# --- cancellation, models, health, metrics ------------------------------------------------------------


def test_client_disconnect_mid_stream_aborts_generation_in_the_engine(shim, caplog) -> None:
    """The shim cancels the gRPC call and sends an explicit abort every time (asserted from its
    log). tritonserver 2.51 misses a few stream cancellations (~1 in 6); the explicit abort covers
    those. The engine's abort (by either route) is awaited over a few attempts."""
    caplog.set_level(logging.INFO, logger="openai_frontend")
    aborted = False
    for attempt in range(5):
        # The engine knows the request by the shim's X-Request-Id (here the client's own) plus a unique suffix.
        header_id = f"disconnect-{attempt}-{time.monotonic_ns()}"
        stream_ = shim.client().chat.completions.create(
            model="tiny-qwen2-vl", messages=[{"role": "user", "content": "Talk for a long time."}], max_tokens=3000,
            temperature=0, stream=True, extra_body={"ignore_eos": True}, extra_headers={"X-Request-Id": header_id})
        got = 0
        for chunk in stream_:
            got += bool(chunk.choices and chunk.choices[0].delta.content)
            if got >= 3:
                break
        stream_.close()
        deadline = time.monotonic() + 30  # generous: CI machines are small and may be loaded
        pattern = re.compile(rf"request ({re.escape(header_id)}\.[0-9a-f]+) ended early; cancelling it in tritonserver")
        while (found := pattern.search(caplog.text)) is None:
            assert time.monotonic() < deadline, f"the shim did not cancel {header_id}:\n{caplog.text[-3000:]}"
            time.sleep(0.05)
        request_id = found[1]
        deadline = time.monotonic() + 15
        while not aborted and time.monotonic() < deadline:
            log = shim.triton.log_tail(2000)
            # Either the stream cancel reached the engine, or the shim's explicit abort did.
            aborted = (f"request {request_id} cancelled by the client: aborted in the engine" in log
                       or f"abort request for {request_id}: 1 running request(s) stopped" in log)
            time.sleep(0.1)
        if aborted:
            break
    assert aborted, "the engine never aborted a request whose client left"
    # and it keeps serving
    r = shim.client().chat.completions.create(model="tiny-qwen2-vl", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3


def _counters(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics").text
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith("vlt_") and not line.startswith("#")}


def test_models_health_and_metrics_reflect_the_running_server(shim, clip) -> None:
    models = list(shim.client().models.list())
    assert [m.id for m in models] == ["tiny-qwen2-vl"]
    # our extension: the served model's media settings, as the media models read them
    media = models[0].model_extra["media"]
    assert (media["media"]["family"], media["media"]["patch_factor"], media["engine"]["max_model_len"]) == (
        "qwen2_vl", 28, 16384)
    assert httpx.get(f"{shim.base_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{shim.base_url}/health/ready").json() == {"status": "ready"}
    before = _counters(shim.base_url)
    shim.client().chat.completions.create(model="tiny-qwen2-vl", messages=ask(video_part(data_url(clip))),
                                          max_tokens=2, temperature=0, extra_body=SMALL)
    after = _counters(shim.base_url)

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert (grew("vlt_videos_total"), grew("vlt_video_frames_total"), grew("vlt_video_tokens_total")) == (
        1, 8, VIDEO_TOKENS)
    assert grew('vlt_requests_total{endpoint="/v1/chat/completions",status="200"}') == 1
    assert grew('vlt_request_duration_seconds_count{endpoint="/v1/chat/completions"}') == 1


# --- the Files API: upload with the SDK, then use the id as media -------------------------------------


def test_sdk_files_round_trip_and_chat_and_responses_answer_when_given_a_file_id(shim, clip) -> None:
    client = shim.client()
    created = client.files.create(file=("clip.mp4", clip, "video/mp4"), purpose="vision")
    assert created.id.startswith("file-") and created.bytes == len(clip) and created.filename == "clip.mp4"
    assert client.files.retrieve(created.id).id == created.id
    assert created.id in [f.id for f in client.files.list(purpose="vision")]
    assert client.files.content(created.id).read() == clip

    chat = client.chat.completions.create(
        model="tiny-qwen2-vl", messages=ask(video_part(created.id)), max_tokens=4, temperature=0,
        extra_body=SMALL)
    assert chat.usage.prompt_tokens > VIDEO_TOKENS
    same = client.chat.completions.create(
        model="tiny-qwen2-vl", messages=ask(video_part(f"file-id://{created.id}")), max_tokens=4, temperature=0,
        extra_body=SMALL)
    assert same.choices[0].message.content == chat.choices[0].message.content

    response = client.responses.create(model="tiny-qwen2-vl", max_output_tokens=4, temperature=0, extra_body=SMALL,
                                       input=[{"role": "user", "content": [
                                           {"type": "input_video", "file_id": created.id},
                                           {"type": "input_text", "text": QUESTION}]}])
    assert response.usage.input_tokens > VIDEO_TOKENS

    assert client.files.delete(created.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="tiny-qwen2-vl", messages=ask(video_part(created.id)), max_tokens=4)


def test_file_id_reaches_the_decoder_by_path_and_answers_as_its_bytes_would(shim, clip, monkeypatch) -> None:
    backend = shim.app.state.service.backend
    sent: list[tuple[list[int], list[dict]]] = []
    real_generate = backend.generate

    def generate(request):  # the real call, recorded: what crossed gRPC to llm, which decodes inside tritonserver
        sent.append(([len(v) for v in request.videos], request.video_options))
        return real_generate(request)

    monkeypatch.setattr(backend, "generate", generate)
    client = shim.client()
    file_id = client.files.create(file=("clip.mp4", clip, "video/mp4"), purpose="vision").id
    by_id = client.chat.completions.create(model="tiny-qwen2-vl", messages=ask(video_part(file_id)), max_tokens=4,
                                           temperature=0, extra_body={**SMALL, "media_io_kwargs": {"video": {
                                               "num_frames": 6}}})
    inline = client.chat.completions.create(model="tiny-qwen2-vl", messages=ask(video_part(data_url(clip))),
                                            max_tokens=4, temperature=0, extra_body={**SMALL, "media_io_kwargs": {
                                                "video": {"num_frames": 6}}})
    assert sent[0][0] == [0] and sent[0][1][0]["path"].startswith(shim.settings.triton_files_dir)
    assert sent[1][0] == [len(clip)] and "path" not in sent[1][1][0]
    assert by_id.choices[0].message.content == inline.choices[0].message.content
    assert by_id.usage.prompt_tokens == inline.usage.prompt_tokens


def test_triton_decoder_refuses_a_path_outside_its_media_root_when_a_client_names_one(shim) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    inputs = [grpcclient.InferInput("video", [1], "BYTES"), grpcclient.InferInput("video_options", [1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([b""], dtype=np.object_))
    inputs[1].set_data_from_numpy(np.array([json.dumps({"path": "/etc/passwd"}).encode()], dtype=np.object_))
    client = grpcclient.InferenceServerClient(shim.triton.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="outside this decoder's media_root"):
            client.infer("video_decoder", inputs)
    finally:
        client.close()


def test_multipart_chat_answers_like_json_when_the_video_is_a_file_part(shim, clip) -> None:
    payload = {"model": "tiny-qwen2-vl", "messages": ask(video_part("form://clip")), "max_tokens": 4,
               "temperature": 0, **SMALL}
    r = httpx.post(f"{shim.base_url}/v1/chat/completions", data={"payload": json.dumps(payload)},
                   files={"clip": ("clip.mp4", clip, "video/mp4")}, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] > VIDEO_TOKENS
