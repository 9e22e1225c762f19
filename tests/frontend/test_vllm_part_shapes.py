"""vLLM's request shapes on the fake backend: ``uuid`` on media parts (and alone, the cache-hit
shape), ``vllm-file://<id>`` wherever a file id goes, and their bad inputs as 4xx naming the part."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.media.urls import scoped_uuid
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, data_url, png
from tests.videos import ClipSpec, make_video
from video_pipeline import contract as C

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(32)
CLIP = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
SCOPE = "X-Tenant"


def chat(client, *parts, headers=None, **body):
    content = [*parts, {"type": "text", "text": "?"}]
    return client.post("/v1/chat/completions", headers=headers or {},
                       json={"model": MODEL, "messages": [{"role": "user", "content": content}], **body})


@pytest.fixture
def scoped(settings, backend):
    s = settings.with_(files_scope_header=SCOPE)
    with TestClient(create_app(s, backend), raise_server_exceptions=False) as c:
        yield c


def upload(client, data: bytes, mime: str = "video/mp4", headers=None) -> str:
    r = client.post("/v1/files", files={"file": ("clip.mp4" if mime.startswith("video") else "a.png", data, mime)},
                    data={"purpose": "vision"}, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_video_part_with_uuid_sends_the_tenant_scoped_uuid_in_its_options_when_media_is_given(client, backend):
    part = {"type": "video_url", "video_url": {"url": data_url(VIDEO)}, "uuid": "clip-1"}
    r = chat(client, part)
    assert r.status_code == 200, r.text
    (req,) = backend.requests
    assert req.videos == [VIDEO] and req.video_options[0][C.MEDIA_UUID] == scoped_uuid("", "clip-1", "x")


def test_video_part_with_uuid_and_no_media_sends_an_empty_element_when_the_caches_hold_it(client, backend):
    for part in ({"type": "video_url", "uuid": "clip-1"}, {"type": "video_url", "video_url": None, "uuid": "clip-1"}):
        r = chat(client, part)
        assert r.status_code == 200, r.text
        req = backend.requests[-1]
        assert req.videos == [b""] and req.video_options == [{C.MEDIA_UUID: scoped_uuid("", "clip-1", "x")}]


def test_image_part_with_uuid_carries_it_in_llm_messages_when_given_alone_or_with_media(client, backend):
    r = chat(client, {"type": "image_url", "image_url": {"url": data_url(png(), "image/png")}, "uuid": "img-1"},
             {"type": "image_url", "image_url": None, "uuid": "img-1"})
    assert r.status_code == 200, r.text
    (req,) = backend.requests
    assert req.images[0] and req.images[1] == b""
    parts = [p for p in req.messages[0]["content"] if p["type"] == "image"]
    assert [p[C.MEDIA_UUID] for p in parts] == [scoped_uuid("", "img-1", "x")] * 2


def test_uuid_is_namespaced_by_tenant_when_the_files_scope_header_is_set(scoped, backend):
    for tenant in ("a", "b"):
        r = chat(scoped, {"type": "video_url", "uuid": "same"}, headers={SCOPE: tenant})
        assert r.status_code == 200, r.text
    a, b = (req.video_options[0][C.MEDIA_UUID] for req in backend.requests)
    assert a != b and a.endswith(":same") and b.endswith(":same")


@pytest.mark.parametrize(("part", "param"), [
    ({"type": "video_url"}, "messages[0].content[0].video_url"),
    ({"type": "image_url", "image_url": None}, "messages[0].content[0].image_url"),
    ({"type": "video_url", "video_url": {"url": "x"}, "uuid": ""}, "messages[0].content[0].uuid"),
    ({"type": "video_url", "uuid": "u" * 300}, "messages[0].content[0].video_url"),
    ({"type": "video_url", "video_url": {"url": "vllm-file://"}}, "messages[0].content[0].video_url"),
    ({"type": "video_url", "video_url": {"url": "vllm-file://file-a/../b"}}, "messages[0].content[0].video_url"),
    ({"type": "image_url", "image_url": {"url": "vllm-file://file-a?x=1"}}, "messages[0].content[0].image_url"),
])
def test_bad_uuid_and_vllm_file_parts_are_400s_naming_the_part(client, part, param):
    r = chat(client, part)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_vllm_file_url_reads_the_uploaded_file_like_a_file_id_when_the_tenant_owns_it(scoped, backend):
    file_id = upload(scoped, CLIP, headers={SCOPE: "a"})
    r = chat(scoped, {"type": "video_url", "video_url": {"url": f"vllm-file://{file_id}"}}, headers={SCOPE: "a"})
    assert r.status_code == 200, r.text
    assert backend.requests[-1].videos in ([CLIP], [b""])
    r = chat(scoped, {"type": "video_url", "video_url": {"url": f"vllm-file://{file_id}"}}, headers={SCOPE: "b"})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["param"] == "messages[0].content[0].video_url"


def test_vllm_file_image_url_reads_an_uploaded_image(client, backend):
    file_id = upload(client, png(), "image/png")
    r = chat(client, {"type": "image_url", "image_url": {"url": f"vllm-file://{file_id}"}})
    assert r.status_code == 200, r.text
    assert backend.requests[-1].images == [png()]


def responses(client, *parts, headers=None):
    return client.post("/v1/responses", headers=headers or {},
                       json={"model": MODEL, "input": [{"role": "user", "content": [*parts,
                                                                                  {"type": "input_text",
                                                                                   "text": "?"}]}]})


def test_responses_take_uuid_on_input_video_and_input_image_and_vllm_file_ids(client, backend):
    file_id = upload(client, CLIP)
    r = responses(client, {"type": "input_video", "uuid": "v"}, {"type": "input_image", "uuid": "i"},
                  {"type": "input_file", "file_id": f"vllm-file://{file_id}"},
                  {"type": "input_file", "file_url": f"vllm-file://{file_id}"})
    assert r.status_code == 200, r.text
    req = backend.requests[-1]
    assert req.video_options[0] == {C.MEDIA_UUID: scoped_uuid("", "v", "x")} and req.images == [b""]
    assert len(req.videos) == 3


@pytest.mark.parametrize("part", [
    {"type": "input_file", "file_url": "vllm-file://nope"},
    {"type": "input_file", "file_id": "vllm-file://"},
    {"type": "input_video"},
])
def test_responses_bad_vllm_file_and_missing_media_are_4xx_naming_the_part(client, part):
    r = responses(client, part)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["param"].startswith("input[0].content[0]")


def test_fake_backend_is_untouched_by_a_uuid_only_request(settings):
    # the uuid-only part skips every fetch: no URL, no file store
    backend = FakeBackend()
    with TestClient(create_app(settings, backend)) as c:
        assert chat(c, {"type": "video_url", "uuid": "u"}).status_code == 200
