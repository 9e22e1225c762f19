"""An audio model served by this repository (issue 17.3): a copy of the model repository whose llm serves the tiny
offline Qwen2-Audio (video_pipeline.engines.tiny_audio). Every media model loads on it (the ``qwen2_audio``
family: audio only), and the OpenAI SDK's audio parts, in the exact JSON of vLLM's and OpenAI's docs, are
answered through shim -> tritonserver -> llm -> vLLM CPU engine with the tokens transformers' own
processor + generate give for the same audio (greedy, the same prompt).

Video and image parts to this model are 400s naming the part; an audio part's ``uuid`` names audio sent before."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.built_once import built_once
from tests.conftest import MODEL_REPOSITORY, ROOT, HttpMedia, Shim
from tests.servers import serving

pytestmark = pytest.mark.e2e

MODEL = "tiny-qwen2-audio"
MODELS = ["video_decoder", "video_preprocessor", "video_media", "llm"]
TOKENS = 8
ASK = {"model": MODEL, "max_tokens": TOKENS, "temperature": 0, "extra_body": {"ignore_eos": True}}
QUESTION = "What is this sound?"


@pytest.fixture(scope="module")
def audio_model() -> Path:
    from video_pipeline.engines import tiny_audio

    return built_once(ROOT / ".tiny" / "qwen2_audio", tiny_audio.build)


@pytest.fixture(scope="module")
def audio_shim(audio_model: Path, http_media: HttpMedia, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shim]:
    from openai_frontend.app import create_app
    from openai_frontend.backend.triton import TritonBackend
    from openai_frontend.settings import Settings
    from video_pipeline.launch import TritonServer, free_port

    repo = tmp_path_factory.mktemp("audio_repo")
    for name in MODELS:
        shutil.copytree(MODEL_REPOSITORY / name, repo / name)
    engine = json.loads((MODEL_REPOSITORY / "llm" / "1" / "model.json").read_text())
    engine.update(model=str(audio_model.resolve()), served_model_name=MODEL, max_model_len=4096,
                  max_num_batched_tokens=4096, kv_cache_memory_bytes=64 << 20, max_num_seqs=4,
                  limit_mm_per_prompt={"audio": 2})
    (repo / "llm" / "1" / "model.json").write_text(json.dumps(engine))
    server = TritonServer(repo, MODELS, log_path=tmp_path_factory.mktemp("audio_triton") / "tritonserver.log",
                          ready_timeout_s=600)
    server.start()
    try:
        settings = Settings(model_repository=str(repo), port=free_port(),
                            allowed_media_networks=f"127.0.0.1:{http_media.port}",
                            files_dir=str(tmp_path_factory.mktemp("audio_files")))
        app = create_app(settings, TritonBackend(server.grpc_url, timeout_s=120))
        with serving(app, settings.port, "audio-shim") as url:
            yield Shim(url, settings, repo, server, app)
    finally:
        server.stop()


def _tone(freq: float) -> bytes:
    import io
    from fractions import Fraction

    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=22050)
        stream.layout = "mono"
        t = np.arange(int(1.2 * 22050)) / 22050
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)[None, :],
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 22050, 0, Fraction(1, 22050)
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="module")
def hf_answers(audio_model: Path) -> dict[float, dict[str, Any]]:
    """transformers' greedy answer and prompt length for each test tone, from the prompt our llm model renders."""
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from video_pipeline.engines.prompt import render_prompt
    from video_pipeline.engines.types import AudioInput, GenerationRequest
    from video_pipeline.media.audio import decode_audio

    processor = AutoProcessor.from_pretrained(audio_model)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(audio_model, dtype=torch.float32).eval()
    rate = processor.feature_extractor.sampling_rate
    out = {}
    for freq in (440.0, 1500.0):
        samples = decode_audio(_tone(freq), rate).samples
        messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": QUESTION}]}]
        text = render_prompt(GenerationRequest(request_id="hf", messages=messages, audios=[AudioInput(samples, rate)]),
                             processor.tokenizer, processor.chat_template)
        inputs = processor(text=text, audio=[samples], sampling_rate=rate, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
        prompt = inputs["input_ids"].shape[1]
        out[freq] = {"prompt_tokens": prompt,
                     "text": _complete(processor.tokenizer.decode(ids[0, prompt:], skip_special_tokens=True))}
    return out


def _complete(text: str) -> str:
    """The text without a trailing replacement character: vLLM's incremental detokenizer holds back the
    bytes of a character the last token only began, where transformers' decode writes U+FFFD."""
    return text.rstrip("\ufffd")


def _input_audio(data: bytes, **extra: Any) -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}, **extra}


def _chat(shim: Shim, part: dict[str, Any]) -> Any:
    return shim.client().chat.completions.create(
        messages=[{"role": "user", "content": [part, {"type": "text", "text": QUESTION}]}], **ASK)


def test_sdk_input_audio_answers_as_transformers_does_when_the_repository_serves_an_audio_model(
        audio_shim, hf_answers) -> None:
    for freq, hf in hf_answers.items():
        answer = _chat(audio_shim, _input_audio(_tone(freq)))
        assert answer.usage.prompt_tokens == hf["prompt_tokens"]
        assert _complete(answer.choices[0].message.content) == hf["text"], freq
    assert hf_answers[440.0]["text"] != hf_answers[1500.0]["text"]  # the sound reaches the logits


def test_sdk_audio_url_over_http_and_streamed_answers_as_input_audio(audio_shim, http_media, hf_answers) -> None:
    url = http_media.put("tone-440.wav", _tone(440.0))
    client = audio_shim.client()
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        messages=[{"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": url}},
                                               {"type": "text", "text": QUESTION}]}], stream=True, **ASK)
        if c.choices)
    assert _complete(text) == hf_answers[440.0]["text"]


def test_sdk_responses_input_audio_answers_as_chat(audio_shim, hf_answers) -> None:
    r = audio_shim.client().responses.create(model=MODEL, max_output_tokens=TOKENS, temperature=0,
                                             extra_body={"ignore_eos": True}, input=[{"role": "user", "content": [
                                                 _input_audio(_tone(1500.0)), {"type": "input_text", "text": QUESTION}]}])
    assert _complete(r.output_text) == hf_answers[1500.0]["text"]


def test_sdk_audio_part_named_by_its_uuid_alone_is_served_after_it_was_sent_once(audio_shim, hf_answers) -> None:
    first = _chat(audio_shim, _input_audio(_tone(1500.0), uuid="tone-b"))
    again = _chat(audio_shim, {"type": "audio_url", "audio_url": None, "uuid": "tone-b"})
    assert _complete(again.choices[0].message.content) == _complete(first.choices[0].message.content) \
        == hf_answers[1500.0]["text"]
    with pytest.raises(openai.BadRequestError) as caught:
        _chat(audio_shim, {"type": "input_audio", "uuid": "never-sent"})
    assert caught.value.body["param"] == "messages[0].content[0].input_audio"  # type: ignore[index]
    assert "never-sent" in caught.value.body["message"]  # type: ignore[index]


def test_sdk_video_and_image_parts_to_an_audio_model_are_400s_naming_the_part(audio_shim) -> None:
    import io

    from PIL import Image

    from tests.videos import ClipSpec, make_video

    clip = make_video(ClipSpec(width=64, height=48, fps=5, num_frames=5, gop=5))
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(png, format="PNG")
    parts = [{"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(clip).decode()}},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                        + base64.b64encode(png.getvalue()).decode()}}]
    for part in parts:
        with pytest.raises(openai.BadRequestError) as caught:
            _chat(audio_shim, part)
        body = caught.value.body
        assert body["code"] == "unsupported_modality" and "takes no video or images" in body["message"], body
        assert body["param"] == f"messages[0].content[0].{part['type']}", body  # type: ignore[index]
    assert _chat(audio_shim, _input_audio(_tone(440.0))).choices[0].message.content  # still serving


def test_models_endpoint_shows_the_audio_family_and_its_sampling_rate(audio_shim) -> None:
    import httpx

    models = httpx.get(f"{audio_shim.base_url}/v1/models", timeout=30).json()["data"]
    media = models[0]["media"]["media"]  # the effective media settings (beside "engine")
    assert models[0]["id"] == MODEL and media["family"] == "qwen2_audio" and media["audio_sampling_rate"] == 16000
