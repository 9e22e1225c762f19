"""Per-request budgets in the shim: each refusal names the limit, the actual value and the setting,
and comes before the work it protects (no download, no decode, no generation)."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from tests.bad_media import png_header
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, data_url, frame_list_url, jpeg
from tests.videos import ClipSpec, make_video

CLIP = ClipSpec(width=160, height=120, fps=10, num_frames=40)  # 4 s


def chat(client: TestClient, *parts: dict, **body: object):
    return client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "?"}]}], **body})


def video(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.fixture
def make(settings):
    made = []

    def build(**changes: object) -> tuple[TestClient, FakeBackend]:
        backend = FakeBackend()
        client = TestClient(create_app(settings.with_(**changes), backend), raise_server_exceptions=False)
        made.append(client.__enter__())
        return client, backend

    yield build
    for client in made:
        client.__exit__(None, None, None)


def test_chat_answers_413_before_downloading_when_a_video_asks_for_too_many_frames(make) -> None:
    client, backend = make(max_video_frames=64)
    # The URL would be refused (403) if it were fetched: the budget is checked first.
    r = chat(client, video("http://127.0.0.1:9/v.mp4"), media_io_kwargs={"video": {"num_frames": 100}})
    assert r.status_code == 413, r.text
    err = error_of(r)
    assert "up to 100 frames" in err["message"] and "the limit is 64" in err["message"]
    assert "VLT_MAX_VIDEO_FRAMES" in err["message"] and err["param"] == "messages[0].content[0].video_url"


def test_chat_answers_400_before_downloading_when_video_options_are_invalid(make) -> None:
    client, _ = make()
    r = chat(client, video("http://127.0.0.1:9/v.mp4"), media_io_kwargs={"video": {"fps": -2}})
    assert r.status_code == 400 and "fps" in error_of(r)["message"]


@pytest.mark.parametrize(("changes", "status", "needles"), [
    ({"max_video_duration_s": 2.0}, 413, ["the video lasts 4.0 s", "the limit is 2 s", "VLT_MAX_VIDEO_DURATION_S"]),
    ({"max_frame_pixels": 160 * 120 - 1}, 413, ["160x120 = 19200 pixels", "the limit is 19199", "VLT_MAX_FRAME_PIXELS"]),
    ({"max_context_tokens": 50}, 400, ["the videos need about", "context of 50 tokens"]),
])
def test_chat_refuses_a_video_by_its_header_before_decoding_when_it_breaks_a_budget(make, changes, status,
                                                                                   needles) -> None:
    client, backend = make(**changes)
    r = chat(client, video(data_url(make_video(CLIP))))
    assert r.status_code == status, r.text
    assert all(n in error_of(r)["message"] for n in needles), error_of(r)["message"]
    assert backend.media_calls == []


def test_chat_estimates_the_tokens_of_the_options_asked_when_checking_the_context(make) -> None:
    client, backend = make(max_context_tokens=100)
    # 8 frames of 84x112 (the tiny model's bounds): 4 temporal patches x 12 = 48 tokens: fits
    r = chat(client, video(data_url(make_video(CLIP))), media_io_kwargs={"video": {"num_frames": 8}},
             mm_processor_kwargs={"max_pixels": 112 * 112})
    assert r.status_code == 200, r.text
    assert len(backend.media_calls) == 1


def test_chat_checks_the_exact_video_tokens_after_decoding_when_no_header_allowed_an_estimate(make) -> None:
    client, backend = make(max_context_tokens=5)
    r = chat(client, video(data_url(b"\x00\x00\x00\x18ftypmp42" + bytes(64))))  # no header: decoded, then counted
    assert r.status_code == 400 and error_of(r)["code"] == "context_length_exceeded"
    assert "the videos need 12 tokens" in error_of(r)["message"]
    # llm decoded the video and answered its plan; the shim then stopped it before any text
    assert len(backend.media_calls) == 1 and backend.closed_early == 1 and backend.finished == 0


def test_chat_reads_the_context_from_the_llm_engine_args_when_not_set(settings, tmp_path) -> None:
    from openai_frontend.budgets import context_tokens

    (tmp_path / "llm" / "1").mkdir(parents=True)
    (tmp_path / "llm" / "1" / "model.json").write_text('{"model": "m", "max_model_len": 4096}')
    assert context_tokens(settings.with_(model_repository=str(tmp_path))) == 4096
    assert context_tokens(settings.with_(model_repository=str(tmp_path), max_context_tokens=99)) == 99
    assert context_tokens(settings.with_(model_repository=str(tmp_path / "none"))) is None


def test_chat_takes_the_context_from_the_media_models_describe_when_not_set(make) -> None:
    client, backend = make()
    backend.engine = {"max_model_len": 40, "limit_mm_per_prompt": {"video": 4, "image": 4}}
    r = chat(client, video(data_url(make_video(CLIP))))
    assert r.status_code == 400, r.text
    assert "context of 40 tokens" in error_of(r)["message"] and error_of(r)["code"] == "context_length_exceeded"
    assert backend.media_calls == []


@pytest.mark.parametrize(("limits", "needle"), [
    ({"video": 1}, "takes at most 1 (limit_mm_per_prompt.video of the llm's model.json)"),
    ({"video": {"count": 1}}, "takes at most 1 (limit_mm_per_prompt.video of the llm's model.json)"),
    ({"video": 9}, None),
])
def test_chat_refuses_more_videos_than_the_engine_takes_when_its_limit_is_below_ours(make, limits, needle) -> None:
    client, backend = make()
    backend.engine = {"max_model_len": 16384, "limit_mm_per_prompt": limits}
    clip = data_url(make_video(CLIP))
    r = chat(client, video(clip), video(clip))
    if needle is None:  # the engine takes more than our own cap (4): two are fine
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400 and needle in error_of(r)["message"], r.text
    assert backend.media_calls == []


def test_models_show_the_effective_media_settings_when_the_media_models_describe_them(make) -> None:
    client, _ = make()
    card = client.get("/v1/models").json()["data"][0]
    media = card["media"]["media"]
    assert (media["family"], media["patch_factor"], media["video_max_pixels"]) == ("qwen2_vl", 28, 50176)
    assert card["media"]["engine"]["max_model_len"] == 16384
    assert client.get(f"/v1/models/{MODEL}").json()["media"] == card["media"]


@pytest.mark.parametrize(("data", "mime", "status", "needle"), [
    (png_header(60000, 60000), "image/png", 413, "Image size (3600000000 pixels)"),
    (png_header(6000, 6000), "image/png", 413, "6000x6000 = 36000000 pixels"),
    (png_header(9000, 9000), "image/png", 413, "VLT_MAX_FRAME_PIXELS"),
    (b"<html><body>404</body></html>", "image/png", 415, "no image format we know"),
    (make_video(CLIP), "image/png", 415, "a video (video/mp4)"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image/png", 400, "not a decodable image"),
    (b"", "image/png", 415, "no image format"),
])
def test_chat_refuses_an_image_by_its_header_when_it_is_no_image_or_too_large(make, data, mime, status,
                                                                             needle) -> None:
    client, backend = make()
    r = chat(client, image(data_url(data, mime)))
    assert r.status_code == status, r.text
    assert needle in error_of(r)["message"]
    assert backend.requests == []


def test_chat_takes_an_image_whose_mime_type_lies_about_the_format_when_it_is_an_image(make) -> None:
    client, backend = make()
    r = chat(client, image(data_url(jpeg(50), "image/png")))
    assert r.status_code == 200, r.text
    assert backend.requests[0].images == [jpeg(50)]


def test_chat_refuses_a_frame_list_by_its_stills_headers_when_they_break_a_budget(make) -> None:
    client, _ = make(max_frame_pixels=1000)
    r = chat(client, video(frame_list_url(3)))  # 64x48 stills
    assert r.status_code == 413 and "frame 0 of the frame list is 64x48" in error_of(r)["message"]
    client, _ = make(max_decoded_bytes=64 * 48 * 3 * 2)
    r = chat(client, video(frame_list_url(3)))
    assert r.status_code == 413, r.text
    assert "decoding the frame list takes 27648 bytes" in error_of(r)["message"]
    assert "VLT_MAX_DECODED_BYTES" in error_of(r)["message"]


def test_chat_refuses_a_frame_list_still_with_a_bomb_header_before_decoding_it(make) -> None:
    client, _ = make()
    bomb = base64.b64encode(png_header(60000, 60000)).decode()
    r = chat(client, video(f"data:video/jpeg;base64,{base64.b64encode(jpeg(1)).decode()},{bomb}"))
    assert r.status_code == 413 and "frame 1" in error_of(r)["message"]


@pytest.mark.parametrize(("mime", "status"), [
    ("video/mp4", 200), ("video/quicktime", 200), ("video/webm", 200), ("video/x-matroska", 200),
    ("video/x-unknown", 415), ("application/octet-stream", 415), ("text/html", 415), ("image/png", 415),
])
def test_chat_takes_a_video_data_url_only_with_a_video_mime_type_it_knows(make, mime, status) -> None:
    client, _ = make()
    r = chat(client, video(data_url(b"\x00\x00\x00\x18ftypmp42" + bytes(16), mime)))
    assert r.status_code == status, r.text


def test_chat_answers_413_before_decoding_base64_when_a_data_url_is_too_large(make) -> None:
    client, _ = make(max_media_bytes=3000)
    r = chat(client, video("data:video/mp4;base64," + "A" * 8000 + "@@@"))  # not even valid base64
    assert r.status_code == 413 and "about 6000 bytes" in error_of(r)["message"]


def test_chat_answers_413_when_inline_media_together_pass_the_request_cap(make) -> None:
    client, backend = make(max_request_media_bytes=5000)
    blob = data_url(b"\x00\x00\x00\x18ftypmp42" + bytes(3000))
    r = chat(client, video(blob), video(blob))
    assert r.status_code == 413 and "VLT_MAX_REQUEST_MEDIA_BYTES" in error_of(r)["message"]
    assert backend.media_calls == []
