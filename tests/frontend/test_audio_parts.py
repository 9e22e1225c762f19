"""Audio parts through the shim: input_audio / audio_url (chat) and input_audio (Responses) become
the llm's ``audio`` elements and ``{"type": "audio"}`` placeholders; budgets and refusals name the part."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.backend.triton import llm_inputs
from openai_frontend.settings import Settings
from tests.fakes import TINY_MEDIA, FakeBackend
from tests.frontend.conftest import MODEL, data_url
from tests.videos import ClipSpec, make_audio_only, make_video
from video_pipeline import contract as C
from video_pipeline.media.model_media import MediaSettings


@dataclass
class AudioBackend(FakeBackend):
    """A fake whose served model has a 16 kHz feature extractor."""

    async def describe_media(self) -> dict[str, Any]:
        described = await super().describe_media()
        described["media"] = MediaSettings(**TINY_MEDIA, audio_sampling_rate=16000).to_dict()
        return described


def wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        t = np.arange(int(seconds * rate)) / rate
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None, :],
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def audio_backend() -> AudioBackend:
    return AudioBackend()


@pytest.fixture
def audio_client(settings: Settings, audio_backend: AudioBackend) -> Iterator[TestClient]:
    with TestClient(create_app(settings, audio_backend), raise_server_exceptions=False) as c:
        yield c


def chat(client: TestClient, *parts: dict, **extra: Any) -> Any:
    return client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "?"}]}], **extra})


def err(r: Any) -> dict[str, Any]:
    return r.json()["error"]


def test_chat_input_audio_becomes_an_llm_audio_element_when_the_model_takes_audio(audio_client, audio_backend) -> None:
    data = wav()
    r = chat(audio_client, {"type": "input_audio", "input_audio": {"data": b64(data), "format": "wav"}})
    assert r.status_code == 200, r.text
    request = audio_backend.requests[-1]
    assert request.audios == [data] and request.audio_parts == ["messages[0].content[0].input_audio"]
    assert request.messages[0]["content"][0] == {"type": "audio"}
    tensors = {t.name(): t for t in llm_inputs(request)}
    assert tensors[C.AUDIO].shape() == [1] and tensors[C.AUDIO].datatype() == "BYTES"


def test_chat_audio_parts_carry_their_tenant_scoped_uuid_and_a_uuid_alone_sends_no_bytes(audio_client,
                                                                                       audio_backend) -> None:
    data = wav()
    r = chat(audio_client, {"type": "input_audio", "input_audio": {"data": b64(data), "format": "wav"}, "uuid": "t1"},
             {"type": "audio_url", "audio_url": None, "uuid": "t1"})
    assert r.status_code == 200, r.text
    request = audio_backend.requests[-1]
    assert request.audios == [data, b""]
    first, second = request.messages[0]["content"][:2]
    assert first[C.MEDIA_UUID].endswith(":t1") and first == second == {"type": "audio", C.MEDIA_UUID: first[C.MEDIA_UUID]}


@pytest.mark.parametrize("shape", ["object", "string"])
def test_chat_audio_url_data_and_file_are_fetched_when_given(audio_client, audio_backend, media_dir, shape) -> None:
    data = make_audio_only("aac", "mp4", 0.5)
    (media_dir / "a.m4a").write_bytes(data)
    for url in (data_url(data, "audio/mp4"), f"file://{media_dir}/a.m4a"):
        part = {"type": "audio_url", "audio_url": {"url": url} if shape == "object" else url}
        r = chat(audio_client, part)
        assert r.status_code == 200, r.text
        assert audio_backend.requests[-1].audios == [data]


def test_responses_input_audio_becomes_an_llm_audio_element_when_given(audio_client, audio_backend) -> None:
    data = wav()
    r = audio_client.post("/v1/responses", json={"model": MODEL, "input": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": b64(data), "format": "wav"}},
        {"type": "input_text", "text": "what is it?"}]}]})
    assert r.status_code == 200, r.text
    assert audio_backend.requests[-1].audios == [data]
    assert audio_backend.requests[-1].audio_parts == ["input[0].content[0].input_audio"]


def test_chat_answers_400_naming_the_part_when_the_model_takes_no_audio(client) -> None:
    r = chat(client, {"type": "text", "text": "hi"}, {"type": "input_audio", "input_audio": {"data": b64(wav()),
                                                                                             "format": "wav"}})
    assert r.status_code == 400
    assert err(r)["param"] == "messages[0].content[1].input_audio" and "takes no audio" in err(r)["message"]


def test_chat_answers_400_when_use_audio_in_video_is_asked_of_a_model_without_audio(client) -> None:
    clip = make_video(ClipSpec(audio="aac"))
    r = chat(client, {"type": "video_url", "video_url": {"url": data_url(clip)}},
             mm_processor_kwargs={"use_audio_in_video": True})
    assert r.status_code == 400 and "use_audio_in_video" in err(r)["message"]
    assert err(r)["param"] == "messages[0].content[0].video_url"


def test_chat_marks_video_parts_when_use_audio_in_video_is_true(audio_client, audio_backend) -> None:
    clip = make_video(ClipSpec(audio="aac"))
    r = chat(audio_client, {"type": "video_url", "video_url": {"url": data_url(clip)}},
             mm_processor_kwargs={"use_audio_in_video": True, "max_pixels": 3136})
    assert r.status_code == 200, r.text
    part = audio_backend.requests[-1].messages[0]["content"][0]
    assert part == {"type": "video", C.USE_AUDIO_IN_VIDEO: True}
    assert "use_audio_in_video" not in audio_backend.requests[-1].video_options[0]


@pytest.mark.parametrize(("part", "status", "needle"), [
    ({"type": "input_audio", "input_audio": {"data": b64(b"<html>not audio at all</html>" * 20), "format": "wav"}},
     415, "not audio"),
    ({"type": "input_audio", "input_audio": {"data": "@@@not base64@@@", "format": "wav"}}, 400, "base64"),
    ({"type": "input_audio", "input_audio": {"data": b64(b"x"), "format": "midi"}}, 400, "format"),
    ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, 400, "empty"),
    ({"type": "input_audio", "input_audio": {"format": "wav"}}, 400, "data"),
    ({"type": "audio_url", "audio_url": {"url": data_url(make_video(ClipSpec()), "video/mp4")}}, 415,
     "no audio track"),
    ({"type": "audio_url", "audio_url": {"url": data_url(b"x", "text/plain")}}, 415, "MIME"),
    ({"type": "audio_url", "audio_url": {"url": "gopher://127.0.0.1/x"}}, 400, "scheme"),
    ({"type": "audio_url", "audio_url": {"url": "http://169.254.169.254/latest/meta-data/"}}, 403, "metadata"),
    ({"type": "audio_url", "audio_url": {"url": "file:///etc/passwd"}}, 403, "outside"),
    ({"type": "audio_url", "audio_url": {"url": "file-doesnotexist"}}, 404, "no such file"),
    ({"type": "audio_url", "audio_url": {}}, 400, "url"),
    ({"type": "audio_url", "audio_url": {"url": ""}}, 400, "audio_url"),
    ({"type": "audio_url", "audio_url": {"url": "x"}, "uuid": ""}, 400, "uuid"),
    ({"type": "input_audio", "input_audio": {"data": b64(wav()), "format": "wav"}, "uuid": ""}, 400, "uuid"),
    ({"type": "input_audio"}, 400, "required"),
    ({"type": "audio_url", "audio_url": None}, 400, "required"),
])
def test_chat_answers_4xx_naming_the_part_when_the_audio_is_bad(audio_client, part, status, needle) -> None:
    r = chat(audio_client, part)
    assert r.status_code == status, r.text
    assert needle.lower() in err(r)["message"].lower()
    assert (err(r)["param"] or "").startswith("messages[0].content[0]")


def test_chat_answers_413_when_the_audio_lasts_longer_than_the_budget(settings, audio_backend) -> None:
    with TestClient(create_app(settings.with_(max_audio_duration_s=1.0), audio_backend),
                    raise_server_exceptions=False) as c:
        r = chat(c, {"type": "input_audio", "input_audio": {"data": b64(wav(2.0)), "format": "wav"}})
    assert r.status_code == 413 and "VLT_MAX_AUDIO_DURATION_S" in err(r)["message"]
    assert err(r)["param"] == "messages[0].content[0].input_audio"


def test_chat_answers_413_when_the_audio_has_more_bytes_than_the_budget(settings, audio_backend) -> None:
    with TestClient(create_app(settings.with_(max_audio_bytes=1000), audio_backend),
                    raise_server_exceptions=False) as c:
        r = chat(c, {"type": "input_audio", "input_audio": {"data": b64(wav(1.0)), "format": "wav"}})
    assert r.status_code == 413 and "VLT_MAX_AUDIO_BYTES" in err(r)["message"]


def test_chat_answers_400_when_the_request_has_more_audio_parts_than_allowed(settings, audio_backend) -> None:
    part = {"type": "input_audio", "input_audio": {"data": b64(wav(0.1)), "format": "wav"}}
    with TestClient(create_app(settings.with_(max_audios=2), audio_backend), raise_server_exceptions=False) as c:
        r = chat(c, part, part, part)
    assert r.status_code == 400 and "VLT_MAX_AUDIOS" in err(r)["message"]


def test_chat_answers_400_when_audio_parts_meet_use_audio_in_video(audio_client) -> None:
    clip = make_video(ClipSpec(audio="aac"))
    r = chat(audio_client, {"type": "video_url", "video_url": {"url": data_url(clip)}},
             {"type": "input_audio", "input_audio": {"data": b64(wav()), "format": "wav"}},
             mm_processor_kwargs={"use_audio_in_video": True})
    assert r.status_code == 400 and "use_audio_in_video" in err(r)["message"]


def test_chat_answers_400_when_use_audio_in_video_is_not_a_bool(audio_client) -> None:
    r = chat(audio_client, mm_processor_kwargs={"use_audio_in_video": "yes"})
    assert r.status_code == 400 and err(r)["param"] == "mm_processor_kwargs.use_audio_in_video"


def test_responses_answers_400_when_input_audio_gives_two_sources(audio_client) -> None:
    r = audio_client.post("/v1/responses", json={"model": MODEL, "input": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": b64(wav()), "format": "wav"}, "file_id": "file-x"}]}]})
    assert r.status_code == 400 and "exactly one" in err(r)["message"]


def test_chat_names_the_audio_part_when_llm_refuses_its_audio(audio_client, audio_backend) -> None:
    from openai_frontend.backend.base import MediaFailed
    from video_pipeline.errors import MediaTooLarge

    audio_backend.generate_error = MediaFailed(MediaTooLarge("the audio lasts more than 600 s; the limit is 600 s",
                                                            kind="audio", index=1))
    part = {"type": "input_audio", "input_audio": {"data": b64(wav(0.1)), "format": "wav"}}
    r = chat(audio_client, part, part)
    assert r.status_code == 413, r.text
    assert err(r)["param"] == "messages[0].content[1].input_audio"
