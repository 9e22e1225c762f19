"""The Files API on a fake backend: uploads, listing, content, deletion, and file ids as media.

Every test runs on each store (:data:`tests.stores.STORES`): the embedded one, S3, PostgreSQL, both.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.settings import Settings
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, jpeg
from tests.stores import STORES, store_settings, stored_blobs, vanish_blobs
from tests.videos import ClipSpec, make_video


@pytest.fixture(params=STORES)
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return store_settings(request.param, settings, request)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))


def upload(client, data: bytes, *, name: str = "clip.mp4", mime: str = "video/mp4", purpose: str | None = "vision",
           headers: dict | None = None, **fields: str):
    form = {"purpose": purpose, **fields} if purpose is not None else dict(fields)
    return client.post("/v1/files", files={"file": (name, data, mime)}, data=form, headers=headers or {})


def staging_is_empty(settings) -> bool:
    return not any((Path(settings.files_dir) / "tmp").iterdir())


def error_of(r) -> dict:
    return r.json()["error"]


# --- upload, list, retrieve, content, delete ------------------------------------------------------


def test_files_upload_returns_openai_file_object_when_given_a_video(client, clip) -> None:
    r = upload(client, clip)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("file-") and len(body["id"]) == len("file-") + 32
    assert body | {"id": "x", "created_at": 0} == {
        "id": "x", "object": "file", "bytes": len(clip), "created_at": 0, "expires_at": None,
        "filename": "clip.mp4", "purpose": "vision", "status": "processed", "status_details": None}
    assert client.get(f"/v1/files/{body['id']}").json() == body


def test_files_content_returns_the_bytes_and_honours_range_when_asked(client, clip) -> None:
    file_id = upload(client, clip).json()["id"]
    r = client.get(f"/v1/files/{file_id}/content")
    assert r.status_code == 200 and r.content == clip and r.headers["content-type"] == "video/mp4"
    r = client.get(f"/v1/files/{file_id}/content", headers={"Range": "bytes=10-29"})
    assert r.status_code == 206 and r.content == clip[10:30]
    assert r.headers["content-range"] == f"bytes 10-29/{len(clip)}"


def test_files_content_streams_whole_when_the_blob_is_deleted_after_the_lookup(tmp_path, clip) -> None:
    from fastapi import FastAPI

    from openai_frontend.routers.files import stored_file_response

    blob = tmp_path / "blob"
    blob.write_bytes(clip)
    app = FastAPI()

    @app.get("/blob")
    async def read_blob():
        response = await stored_file_response(blob, "video/mp4", "clip.mp4")
        blob.unlink()  # as an eviction or a DELETE between the lookup and the first byte would
        return response

    with TestClient(app) as c:
        whole = c.get("/blob")
        assert whole.status_code == 200 and whole.content == clip
        blob.write_bytes(clip)
        ranged = c.get("/blob", headers={"Range": "bytes=5-9"})
        assert ranged.status_code == 206 and ranged.content == clip[5:10]
    assert asyncio.run(stored_file_response(blob, "video/mp4", "clip.mp4")) is None  # gone: the route answers 404


def test_files_content_is_404_when_the_blob_vanished_before_the_lookup(client, clip, settings) -> None:
    file_id = upload(client, clip).json()["id"]
    vanish_blobs(settings)
    r = client.get(f"/v1/files/{file_id}/content")
    assert r.status_code == 404 and file_id in r.json()["error"]["message"]


def test_files_list_pages_with_after_limit_order_and_purpose_filter(client, clip) -> None:
    ids = [upload(client, clip, purpose=p).json()["id"] for p in ("vision", "user_data", "vision", "vision")]
    page = client.get("/v1/files", params={"limit": 2}).json()
    assert [f["id"] for f in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = client.get("/v1/files", params={"limit": 2, "after": page["last_id"]}).json()
    assert [f["id"] for f in rest["data"]] == ids[::-1][2:] and rest["has_more"] is False
    asc = client.get("/v1/files", params={"order": "asc", "purpose": "vision"}).json()
    assert [f["id"] for f in asc["data"]] == [ids[0], ids[2], ids[3]]
    assert asc["object"] == "list" and asc["first_id"] == ids[0] and asc["last_id"] == ids[3]


def test_files_delete_forgets_the_id_but_keeps_shared_bytes_for_other_ids(client, settings, clip) -> None:
    a, b = (upload(client, clip).json()["id"] for _ in range(2))
    assert a != b
    assert len(stored_blobs(settings)) == 1
    assert client.delete(f"/v1/files/{a}").json() == {"id": a, "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{a}").status_code == 404
    assert client.get(f"/v1/files/{b}/content").content == clip
    client.delete(f"/v1/files/{b}")
    assert stored_blobs(settings) == []


@pytest.mark.parametrize("path", ["/v1/files/file-0123", "/v1/files/file-0123/content", "/v1/files/nope"])
def test_files_answer_404_in_openai_shape_when_the_id_is_unknown(client, path) -> None:
    r = client.get(path)
    assert r.status_code == 404 and error_of(r)["code"] == "file_not_found"
    assert client.delete("/v1/files/file-0123").status_code == 404


def test_files_accepts_expires_after_and_reports_expires_at(client, clip) -> None:
    r = upload(client, clip, **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"})
    body = r.json()
    assert body["expires_at"] == body["created_at"] + 3600


def test_files_accept_raw_multipart_like_curl_dash_f(client, clip, tmp_path) -> None:
    boundary = "------------------------d74496d66958873e"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + clip + f"\r\n--{boundary}--\r\n".encode()
    r = client.post("/v1/files", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert r.json()["purpose"] == "user_data" and r.json()["bytes"] == len(clip)


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_files_accept_a_real_curl_upload(files_server, clip, tmp_path) -> None:
    (tmp_path / "clip.mp4").write_bytes(clip)
    out = subprocess.run(["curl", "-sS", "-F", "purpose=vision", "-F", f"file=@{tmp_path / 'clip.mp4'}",
                          f"{files_server}/v1/files"], capture_output=True, check=True, timeout=60)
    assert b'"object":"file"' in out.stdout and f'"bytes":{len(clip)}'.encode() in out.stdout


# --- bad uploads: a clear 4xx, nothing left behind -------------------------------------------------

HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 200


@pytest.mark.parametrize(("data", "name", "mime", "fields", "status", "param", "needle"), [
    (b"", "clip.mp4", "video/mp4", {"purpose": "vision"}, 400, "file", "empty"),
    (None, "clip.mp4", "video/mp4", {"purpose": "wrong"}, 400, "purpose", "not one of"),
    (None, "clip.mp4", "video/mp4", {}, 400, "purpose", "required"),
    (HTML, "clip.mp4", "video/mp4", {"purpose": "vision"}, 415, "file", "not a video"),
    (ELF, "clip.mp4", "video/mp4", {"purpose": "vision"}, 415, "file", "not a video"),
    (b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100, "x.mp4", "video/mp4", {"purpose": "vision"}, 415, "file",
     "not a readable video"),
    (None, "clip.mp4", "text/html", {"purpose": "vision"}, 415, "file", "text/html"),
    (None, "../../etc/passwd", "video/mp4", {"purpose": "vision"}, 400, "file", "plain name"),
    (None, "..\\evil.mp4", "video/mp4", {"purpose": "vision"}, 400, "file", "plain name"),
    (None, "..", "video/mp4", {"purpose": "vision"}, 400, "file", "plain name"),
    (None, "x.mp4", "video/mp4", {"purpose": "vision", "expires_after[anchor]": "created_at",
                                  "expires_after[seconds]": "5"}, 400, "expires_after.seconds", "3600"),
])
def test_files_answer_4xx_and_leave_nothing_when_the_upload_is_bad(client, settings, clip, data, name, mime,
                                                                      fields, status, param, needle) -> None:
    r = client.post("/v1/files", files={"file": (name, clip if data is None else data, mime)}, data=fields)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert err["param"] == param and needle in err["message"] and err["type"] == "invalid_request_error"
    assert staging_is_empty(settings)
    assert stored_blobs(settings) == []
    assert client.get("/v1/files").json()["data"] == []


def test_files_answer_400_when_the_file_part_is_missing_or_not_multipart(client, settings) -> None:
    r = client.post("/v1/files", data={"purpose": "vision"}, files={"video": ("a.mp4", b"x", "video/mp4")})
    assert r.status_code == 400 and error_of(r)["param"] == "file" and error_of(r)["message"] == "file: required"
    r = client.post("/v1/files", data={"purpose": "vision"})
    assert r.status_code == 400 and "multipart/form-data" in error_of(r)["message"]
    r = client.post("/v1/files", json={"purpose": "vision"})
    assert r.status_code == 400 and "multipart/form-data" in error_of(r)["message"]
    assert staging_is_empty(settings)


def test_files_answer_413_while_streaming_when_the_upload_passes_the_cap(settings, clip) -> None:
    small = settings.with_(max_upload_bytes=len(clip) - 1)
    with TestClient(create_app(small, FakeBackend()), raise_server_exceptions=False) as client:
        r = upload(client, clip)
        assert r.status_code == 413 and error_of(r)["code"] == "file_too_large"
        big = upload(client, clip + b"\x00" * (200 * 1024))  # refused on Content-Length, before reading
        assert big.status_code == 413
    assert staging_is_empty(small)


# --- file ids as media -------------------------------------------------------------------------------


def chat(client, part: dict, headers: dict | None = None):
    return client.post("/v1/chat/completions", headers=headers or {}, json={
        "model": MODEL, "messages": [{"role": "user", "content": [part, {"type": "text", "text": "Hi"}]}]})


@pytest.mark.parametrize("form", ["{id}", "file-id://{id}"])
def test_chat_sends_the_stored_bytes_when_video_url_names_a_file_id(client, backend, clip, form) -> None:
    file_id = upload(client, clip).json()["id"]
    r = chat(client, {"type": "video_url", "video_url": {"url": form.format(id=file_id)}})
    assert r.status_code == 200, r.text
    assert backend.media_calls[0][0] == [clip]


def test_chat_sends_the_stored_image_when_image_url_names_a_file_id(client, backend) -> None:
    image = jpeg(100)
    file_id = upload(client, image, name="a.jpg", mime="image/jpeg").json()["id"]
    r = chat(client, {"type": "image_url", "image_url": {"url": file_id}})
    assert r.status_code == 200, r.text
    assert backend.requests[0].images == [image]


def test_chat_answers_415_when_a_file_id_of_an_image_is_given_as_video(client) -> None:
    file_id = upload(client, jpeg(100), name="a.jpg", mime="image/jpeg").json()["id"]
    r = chat(client, {"type": "video_url", "video_url": {"url": file_id}})
    assert r.status_code == 415 and error_of(r)["param"] == "messages[0].content[0].video_url"


@pytest.mark.parametrize("kind", ["input_video", "input_file"])
def test_responses_sends_the_stored_bytes_when_a_part_names_a_file_id(client, backend, clip, kind) -> None:
    file_id = upload(client, clip).json()["id"]
    r = client.post("/v1/responses", json={"model": MODEL, "input": [
        {"role": "user", "content": [{"type": kind, "file_id": file_id}, {"type": "input_text", "text": "Hi"}]}]})
    assert r.status_code == 200, r.text
    assert backend.media_calls[0][0] == [clip]


def test_responses_sends_the_stored_image_when_input_image_names_a_file_id(client, backend) -> None:
    image = jpeg(60)
    file_id = upload(client, image, name="a.jpg", mime="image/jpeg").json()["id"]
    r = client.post("/v1/responses", json={"model": MODEL, "input": [
        {"role": "user", "content": [{"type": "input_image", "file_id": file_id}]}]})
    assert r.status_code == 200, r.text
    assert backend.requests[0].images == [image]


def test_chat_answers_404_when_the_file_id_was_deleted(client, clip) -> None:
    file_id = upload(client, clip).json()["id"]
    client.delete(f"/v1/files/{file_id}")
    r = chat(client, {"type": "video_url", "video_url": {"url": file_id}})
    assert r.status_code == 404 and error_of(r)["code"] == "file_not_found"


# --- tenants -----------------------------------------------------------------------------------------


def test_files_of_another_scope_answer_404_everywhere_when_a_scope_header_is_set(settings, clip) -> None:
    scoped = settings.with_(files_scope_header="X-Tenant")
    backend = FakeBackend()
    with TestClient(create_app(scoped, backend), raise_server_exceptions=False) as client:
        a, b = {"X-Tenant": "a"}, {"X-Tenant": "b"}
        file_id = upload(client, clip, headers=a).json()["id"]
        assert client.get(f"/v1/files/{file_id}", headers=a).status_code == 200
        for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
            assert client.get(path, headers=b).status_code == 404
        assert client.get("/v1/files", headers=b).json()["data"] == []
        assert client.delete(f"/v1/files/{file_id}", headers=b).status_code == 404
        assert chat(client, {"type": "video_url", "video_url": {"url": file_id}}, headers=b).status_code == 404
        r = client.post("/v1/responses", headers=b, json={"model": MODEL, "input": [
            {"role": "user", "content": [{"type": "input_video", "file_id": file_id}]}]})
        assert r.status_code == 404
        assert chat(client, {"type": "video_url", "video_url": {"url": file_id}}, headers=a).status_code == 200


def test_data_url_still_works_beside_file_ids(client, backend, clip) -> None:
    url = f"data:video/mp4;base64,{base64.b64encode(clip).decode()}"
    assert chat(client, {"type": "video_url", "video_url": {"url": url}}).status_code == 200


def test_files_answer_400_and_leave_nothing_when_the_body_stops_mid_file(client, settings, clip) -> None:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nvision\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode() + clip[:1000]
    r = client.post("/v1/files", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_multipart", r.text
    assert staging_is_empty(settings) and client.get("/v1/files").json()["data"] == []


# --- multipart chat: the JSON in a payload field, media as file parts -----------------------------------


def multipart_chat(client, parts: list[dict], files: dict, **extra):
    payload = {"model": MODEL, "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "Hi"}]}],
               **extra}
    return client.post("/v1/chat/completions", data={"payload": json.dumps(payload)}, files=files)


def test_multipart_chat_sends_the_file_parts_when_content_names_them_by_field(client, backend, settings,
                                                                             clip) -> None:
    image = jpeg(90)
    r = multipart_chat(client, [{"type": "video_url", "video_url": {"url": "form://clip"}},
                                {"type": "image_url", "image_url": {"url": "form://still"}}],
                       {"clip": ("c.mp4", clip, "video/mp4"), "still": ("s.jpg", image, "image/jpeg")})
    assert r.status_code == 200, r.text
    assert backend.media_calls[0][0] == [clip] and backend.requests[0].images == [image]
    assert staging_is_empty(settings)


@pytest.mark.parametrize(("url", "files", "status", "needle"), [
    ("form://other", {"clip": ("c.mp4", b"x", "video/mp4")}, 400, "no file part named 'other'"),
    ("form://clip", {"clip": ("c.mp4", HTML, "video/mp4")}, 415, "not a video"),
])
def test_multipart_chat_answers_4xx_and_leaves_nothing_when_a_part_is_bad(client, settings, url, files, status,
                                                                          needle) -> None:
    r = multipart_chat(client, [{"type": "video_url", "video_url": {"url": url}}], files)
    assert r.status_code == status, r.text
    assert needle in error_of(r)["message"] and error_of(r)["param"] == "messages[0].content[0].video_url"
    assert staging_is_empty(settings)


def test_multipart_chat_answers_400_when_the_payload_field_is_missing_or_not_json(client, settings, clip) -> None:
    r = client.post("/v1/chat/completions", files={"clip": ("c.mp4", clip, "video/mp4")})
    assert r.status_code == 400 and error_of(r)["param"] == "payload"
    r = client.post("/v1/chat/completions", data={"payload": "{nope"}, files={"clip": ("c.mp4", clip, "video/mp4")})
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_json"
    assert staging_is_empty(settings)


def test_multipart_chat_takes_the_payload_as_a_file_part_like_curl_at_file(client, backend, settings,
                                                                           clip) -> None:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "form://clip"}}]}]}
    r = client.post("/v1/chat/completions", files={"payload": ("req.json", json.dumps(payload), "application/json"),
                                                   "clip": ("c.mp4", clip, "video/mp4")})
    assert r.status_code == 200, r.text
    assert backend.media_calls[0][0] == [clip] and staging_is_empty(settings)


def test_files_survive_a_restart_when_a_new_app_opens_the_same_directory(settings, clip) -> None:
    with TestClient(create_app(settings, FakeBackend())) as first:
        file_id = upload(first, clip).json()["id"]
    backend = FakeBackend()
    with TestClient(create_app(settings, backend)) as again:
        assert again.get(f"/v1/files/{file_id}/content").content == clip
        assert chat(again, {"type": "video_url", "video_url": {"url": file_id}}).status_code == 200
    assert backend.media_calls[0][0] == [clip]
