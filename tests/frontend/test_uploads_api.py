"""The Uploads API on a fake backend: create, parts, complete, cancel, expiry, tenants, and the SDK's chunked upload.

Every test of the lifecycle runs on each store (:data:`tests.stores.STORES`): the embedded one (SQLite + a
directory), S3, PostgreSQL, both; two replicas share Uploads through PostgreSQL + S3.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.files import store as store_module
from openai_frontend.routers import uploads as uploads_router
from openai_frontend.settings import Settings
from openai_frontend.uploads.store import UPLOAD_TTL_S
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL
from tests.servers import serving
from tests.stores import STORES, store_settings, stored_blobs
from tests.videos import ClipSpec, make_video

MIB = 1024 * 1024
#: For what does not depend on the store (request validation): the embedded one only.
EMBEDDED = pytest.mark.parametrize("settings", ["local"], indirect=True)


@pytest.fixture(params=STORES)
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return store_settings(request.param, settings, request)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))


def create(client, size: int, *, headers: dict | None = None, **fields):
    body = {"bytes": size, "filename": "clip.mp4", "purpose": "vision", "mime_type": "video/mp4", **fields}
    return client.post("/v1/uploads", json=body, headers=headers or {})


def add_part(client, upload_id: str, data: bytes, headers: dict | None = None):
    return client.post(f"/v1/uploads/{upload_id}/parts", files={"data": ("blob", data, "application/octet-stream")},
                       headers=headers or {})


def complete(client, upload_id: str, part_ids: list[str], headers: dict | None = None, **fields):
    return client.post(f"/v1/uploads/{upload_id}/complete", json={"part_ids": part_ids, **fields},
                       headers=headers or {})


def pieces(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i:i + step] for i in range(0, len(data), step)]


def error_of(r) -> dict:
    return r.json()["error"]


def stored_parts(settings: Settings) -> list[str]:
    """Every part the Uploads API keeps (in files_dir/uploads or under the bucket's uploads/)."""
    if settings.files_backend == "s3":
        import boto3

        s3 = boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket,
                                                              Prefix=settings.s3_prefix + "uploads/")
        return [o["Key"] for page in pages for o in page.get("Contents", [])]
    return [str(p) for p in (Path(settings.files_dir) / "uploads").rglob("*") if p.is_file()]


def staging_is_empty(settings: Settings) -> bool:
    return not any((Path(settings.files_dir) / "tmp").iterdir())


# --- the lifecycle ---------------------------------------------------------------------------------


def test_uploads_complete_into_a_file_usable_by_id_when_parts_arrive_out_of_order(client, backend, settings,
                                                                                    clip) -> None:
    r = create(client, len(clip))
    assert r.status_code == 200, r.text
    upload = r.json()
    assert upload["id"].startswith("upload_") and upload | {"id": "x", "created_at": 0, "expires_at": 0} == {
        "id": "x", "object": "upload", "bytes": len(clip), "created_at": 0, "expires_at": 0, "filename": "clip.mp4",
        "purpose": "vision", "status": "pending", "file": None}
    assert upload["expires_at"] == upload["created_at"] + 3600
    chunks = pieces(clip, 3)
    parts = {}
    for i in (2, 0, 1):  # sent in any order; the order is the one complete names
        part = add_part(client, upload["id"], chunks[i])
        assert part.status_code == 200, part.text
        assert part.json()["object"] == "upload.part" and part.json()["upload_id"] == upload["id"]
        assert part.json()["id"].startswith("part_")
        parts[i] = part.json()["id"]
    assert len(stored_parts(settings)) == 3
    r = complete(client, upload["id"], [parts[0], parts[1], parts[2]], md5=hashlib.md5(clip).hexdigest())
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "completed" and done["id"] == upload["id"] and done["bytes"] == len(clip)
    file = done["file"]
    assert file["object"] == "file" and file["bytes"] == len(clip) and file["filename"] == "clip.mp4"
    assert file["purpose"] == "vision" and file["status"] == "processed"
    assert client.get(f"/v1/files/{file['id']}").json() == file
    assert client.get(f"/v1/files/{file['id']}/content").content == clip
    assert client.get(f"/v1/files/{file['id']}/content").headers["content-type"] == "video/mp4"
    assert stored_parts(settings) == [] and staging_is_empty(settings)
    assert stored_blobs(settings) == [hashlib.sha256(clip).hexdigest()]
    chat = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": file["id"]}}, {"type": "text", "text": "Hi"}]}]})
    assert chat.status_code == 200, chat.text
    assert backend.media_calls[0][0] == [clip]


def test_uploads_sdk_upload_file_chunked_lands_in_the_file_store_when_run_over_real_http(settings, clip,
                                                                                          tmp_path) -> None:
    with serving(create_app(settings, FakeBackend()), name="uploads-server") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        done = client.uploads.upload_file_chunked(file=clip, filename="clip.mp4", bytes=len(clip),
                                                  mime_type="video/mp4", purpose="vision", part_size=700)
        assert done.status == "completed" and done.file is not None and done.file.bytes == len(clip)
        assert client.files.content(done.file.id).read() == clip
        path = tmp_path / "on-disk.mp4"
        path.write_bytes(clip)
        again = client.uploads.upload_file_chunked(file=path, mime_type="video/mp4", purpose="user_data",
                                                   part_size=1000, md5=hashlib.md5(clip).hexdigest())
        assert again.file is not None and again.file.filename == "on-disk.mp4" and again.file.id != done.file.id
        assert {f.id for f in client.files.list()} == {done.file.id, again.file.id}
        with pytest.raises(openai.BadRequestError) as refused:
            client.uploads.upload_file_chunked(file=clip, filename="clip.mp4", bytes=len(clip) + 1,
                                               mime_type="video/mp4", purpose="vision", part_size=700)
        assert refused.value.body["param"] == "bytes"


def test_uploads_cancel_answers_cancelled_and_removes_the_parts(client, settings, clip) -> None:
    upload_id = create(client, len(clip)).json()["id"]
    part_id = add_part(client, upload_id, clip[:100]).json()["id"]
    r = client.post(f"/v1/uploads/{upload_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["file"] is None
    assert stored_parts(settings) == []
    for again in (add_part(client, upload_id, clip[100:]), complete(client, upload_id, [part_id]),
                  client.post(f"/v1/uploads/{upload_id}/cancel")):
        assert again.status_code == 400, again.text
        assert error_of(again)["code"] == "upload_cancelled" and error_of(again)["param"] == "upload_id"
        assert "cancelled" in error_of(again)["message"]


def test_uploads_refuse_to_complete_or_take_parts_twice_when_completed(client, clip) -> None:
    upload_id = create(client, len(clip)).json()["id"]
    part_id = add_part(client, upload_id, clip).json()["id"]
    assert complete(client, upload_id, [part_id]).status_code == 200
    for again in (complete(client, upload_id, [part_id]), add_part(client, upload_id, b"x"),
                  client.post(f"/v1/uploads/{upload_id}/cancel")):
        assert again.status_code == 400 and error_of(again)["code"] == "upload_completed"


def test_uploads_expire_after_an_hour_and_the_sweep_removes_their_parts(client, settings, clip) -> None:
    uploads = client.app.state.uploads
    upload_id = create(client, len(clip)).json()["id"]
    part_id = add_part(client, upload_id, clip).json()["id"]
    real = uploads.clock
    uploads.clock = lambda: real() + UPLOAD_TTL_S + 1
    try:
        for r in (add_part(client, upload_id, b"x"), complete(client, upload_id, [part_id]),
                  client.post(f"/v1/uploads/{upload_id}/cancel")):
            assert r.status_code == 400 and error_of(r)["code"] == "upload_expired", r.text
            assert "expired" in error_of(r)["message"]
        assert stored_parts(settings)  # expired for clients at once; the bytes go with the sweep
        assert uploads.sweep() == 1
        assert stored_parts(settings) == []
        assert complete(client, upload_id, [part_id]).status_code == 400
    finally:
        uploads.clock = real
    assert client.get("/v1/files").json()["data"] == []


def test_uploads_of_another_tenant_are_404_and_the_file_lands_in_the_tenant_scope(settings, clip) -> None:
    scoped = settings.with_(files_scope_header="X-Tenant")
    a, b = {"X-Tenant": "a"}, {"X-Tenant": "b"}
    with TestClient(create_app(scoped, FakeBackend()), raise_server_exceptions=False) as client:
        assert create(client, len(clip)).status_code == 400  # the header is required, as for /v1/files
        upload_id = create(client, len(clip), headers=a).json()["id"]
        part_id = add_part(client, upload_id, clip, headers=a).json()["id"]
        for r in (add_part(client, upload_id, clip, headers=b), complete(client, upload_id, [part_id], headers=b),
                  client.post(f"/v1/uploads/{upload_id}/cancel", headers=b)):
            assert r.status_code == 404 and error_of(r)["param"] == "upload_id", r.text
        twice = [("X-Tenant", "b"), ("X-Tenant", "a")]  # never first- or last-wins, as on every scoped route
        for r in (client.post("/v1/uploads", json={}, headers=twice),
                  client.post(f"/v1/uploads/{upload_id}/parts", files={"data": ("b", b"x")}, headers=twice),
                  client.post(f"/v1/uploads/{upload_id}/complete", json={"part_ids": [part_id]}, headers=twice),
                  client.post(f"/v1/uploads/{upload_id}/cancel", headers=twice)):
            assert r.status_code == 400 and error_of(r)["param"] == "X-Tenant", r.text
        file_id = complete(client, upload_id, [part_id], headers=a).json()["file"]["id"]
        assert client.get(f"/v1/files/{file_id}", headers=a).status_code == 200
        assert client.get(f"/v1/files/{file_id}", headers=b).status_code == 404


@EMBEDDED
def test_uploads_answer_404_naming_the_id_when_it_is_unknown(client) -> None:
    for r in (add_part(client, "upload_nope", b"x"), complete(client, "upload_nope", ["part_x"]),
              client.post("/v1/uploads/upload_nope/cancel")):
        assert r.status_code == 404 and error_of(r)["param"] == "upload_id" and "upload_nope" in error_of(r)["message"]


# --- bad input -------------------------------------------------------------------------------------


@EMBEDDED
@pytest.mark.parametrize(("change", "status", "param"), [
    ({"bytes": 0}, 400, "bytes"),
    ({"bytes": "12"}, 400, "bytes"),
    ({"bytes": 9 * 1024**3}, 400, "bytes"),
    ({"purpose": "nope"}, 400, "purpose"),
    ({"mime_type": "application/pdf"}, 400, "mime_type"),
    ({"filename": "../x.mp4"}, 400, "filename"),
    ({"filename": ""}, 400, "filename"),
    ({"expires_after": {"anchor": "created_at", "seconds": 10}}, 400, "expires_after.seconds"),
    ({"expires_after": {"anchor": "last_active_at", "seconds": 3600}}, 400, "expires_after.anchor"),
    ({"colour": "red"}, 400, "colour"),
])
def test_uploads_create_answers_4xx_naming_the_field_when_it_is_bad(client, change, status, param) -> None:
    r = create(client, 100, **change)
    assert r.status_code == status, r.text
    assert error_of(r)["param"] == param and error_of(r)["code"], r.text


@EMBEDDED
def test_uploads_create_answers_413_when_bytes_pass_the_store_quota(settings, clip) -> None:
    with TestClient(create_app(settings.with_(files_quota_bytes=1000), FakeBackend())) as client:
        r = create(client, 1001)
        assert r.status_code == 413 and error_of(r)["param"] == "bytes"


@EMBEDDED
def test_uploads_create_gives_the_file_the_expires_after_it_asks_for(client, clip) -> None:
    upload_id = create(client, len(clip), expires_after={"anchor": "created_at", "seconds": 7200}).json()["id"]
    part_id = add_part(client, upload_id, clip).json()["id"]
    file = complete(client, upload_id, [part_id]).json()["file"]
    assert file["expires_at"] == file["created_at"] + 7200


def test_uploads_part_answers_400_naming_bytes_when_it_passes_the_declared_size(client, settings, clip) -> None:
    upload_id = create(client, 1000).json()["id"]
    assert add_part(client, upload_id, clip[:600]).status_code == 200
    r = add_part(client, upload_id, clip[600:1001])  # one byte too many
    assert r.status_code == 400 and error_of(r)["param"] == "data", r.text
    assert "1000" in error_of(r)["message"] and "bytes" in error_of(r)["message"]
    assert add_part(client, upload_id, clip[600:1000]).status_code == 200
    r = add_part(client, upload_id, b"x")  # full: complete it
    assert r.status_code == 400 and error_of(r)["param"] == "data"
    assert len(stored_parts(settings)) == 2 and staging_is_empty(settings)


def test_uploads_part_answers_413_when_it_is_over_the_part_limit(client, settings, clip, monkeypatch) -> None:
    monkeypatch.setattr(uploads_router, "MAX_PART_BYTES", 500)  # 64 MB in production
    upload_id = create(client, len(clip)).json()["id"]
    r = add_part(client, upload_id, clip[:501])
    assert r.status_code == 413 and error_of(r)["param"] == "data" and error_of(r)["code"] == "part_too_large"
    assert "500" in error_of(r)["message"]
    assert stored_parts(settings) == [] and staging_is_empty(settings)
    big = client.post(f"/v1/uploads/{upload_id}/parts", content=b"x" * 70_000,
                      headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert big.status_code == 413 and error_of(big)["param"] == "data"  # refused by its Content-Length, unread
    assert add_part(client, upload_id, clip[:500]).status_code == 200


@EMBEDDED
@pytest.mark.parametrize(("body", "param"), [
    ({}, "data"),
    ({"data": (None, "not a file")}, "data"),
    ({"data": ("blob", b"", "application/octet-stream")}, "data"),
])
def test_uploads_part_answers_400_when_data_is_missing_empty_or_not_a_file(client, body, param) -> None:
    upload_id = create(client, 100).json()["id"]
    r = client.post(f"/v1/uploads/{upload_id}/parts", files=body or {"other": ("x", b"1")})
    assert r.status_code == 400 and error_of(r)["param"] == param, r.text


def test_uploads_complete_answers_400_naming_part_ids_when_they_are_wrong(client, settings, clip) -> None:
    first = create(client, len(clip)).json()["id"]
    a, b = (add_part(client, first, half).json()["id"] for half in pieces(clip, 2))
    other = create(client, len(clip)).json()["id"]
    theirs = add_part(client, other, clip[:10]).json()["id"]
    cases = [([a, a, b], "part_ids", "duplicate_part", "twice"),
             ([a, "part_unknown"], "part_ids", "invalid_part", "part_unknown"),
             ([a, theirs], "part_ids", "invalid_part", theirs),
             ([], "part_ids", "invalid_value", "part_ids"),
             ([a], "bytes", "upload_size_mismatch", str(len(clip)))]
    for part_ids, param, code, named in cases:
        r = complete(client, first, part_ids)
        assert r.status_code == 400 and error_of(r)["param"] == param and error_of(r)["code"] == code, r.text
        assert named in error_of(r)["message"]
    r = complete(client, first, [a, b])  # nothing was spoilt by the refusals
    assert r.status_code == 200 and client.get(f"/v1/files/{r.json()['file']['id']}/content").content == clip
    assert len(stored_parts(settings)) == 1  # the other Upload's part is still there


def test_uploads_complete_answers_400_on_md5_and_can_be_completed_again(client, settings, clip) -> None:
    upload_id = create(client, len(clip)).json()["id"]
    part_ids = [add_part(client, upload_id, c).json()["id"] for c in pieces(clip, 2)]
    r = complete(client, upload_id, part_ids[::-1])  # the wrong order: not an mp4 at its start
    assert r.status_code == 415 and error_of(r)["param"] == "file", r.text
    r = complete(client, upload_id, part_ids, md5="0" * 32)
    assert r.status_code == 400 and error_of(r)["param"] == "md5" and error_of(r)["code"] == "md5_mismatch"
    assert complete(client, upload_id, part_ids, md5="zz").json()["error"]["param"] == "md5"
    assert staging_is_empty(settings) and client.get("/v1/files").json()["data"] == []
    r = complete(client, upload_id, part_ids, md5=hashlib.md5(clip).hexdigest())
    assert r.status_code == 200 and r.json()["status"] == "completed"


def test_uploads_complete_answers_415_and_stays_pending_when_the_bytes_are_not_media(client, settings) -> None:
    junk = os.urandom(2000)
    upload_id = create(client, len(junk)).json()["id"]
    part_id = add_part(client, upload_id, junk).json()["id"]
    r = complete(client, upload_id, [part_id])
    assert r.status_code == 415 and error_of(r)["code"] == "unsupported_media"
    assert client.post(f"/v1/uploads/{upload_id}/cancel").json()["status"] == "cancelled"
    assert stored_parts(settings) == [] and staging_is_empty(settings)


# --- a full disk -----------------------------------------------------------------------------------


def test_uploads_answer_507_and_keep_serving_when_the_disk_fills_during_a_part_or_complete(client, settings, clip,
                                                                                          monkeypatch) -> None:
    real_write = store_module.Stager.write

    def full(self, data):  # noqa: ANN001, ANN202
        if self.bytes + len(data) > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    upload_id = create(client, len(clip)).json()["id"]
    monkeypatch.setattr(store_module.Stager, "write", full)
    r = add_part(client, upload_id, clip)
    assert r.status_code == 507 and error_of(r)["code"] == "insufficient_storage" and error_of(r)["param"] == "data"
    assert "is full" in error_of(r)["message"] and staging_is_empty(settings) and stored_parts(settings) == []
    monkeypatch.setattr(store_module.Stager, "write", real_write)
    part_ids = [add_part(client, upload_id, c).json()["id"] for c in pieces(clip, 3)]  # each under 1000 bytes
    monkeypatch.setattr(store_module.Stager, "write", full)
    r = complete(client, upload_id, part_ids)
    assert r.status_code == 507 and error_of(r)["code"] == "insufficient_storage", r.text
    assert "parts are kept" in error_of(r)["message"] and staging_is_empty(settings)
    monkeypatch.setattr(store_module.Stager, "write", real_write)
    r = complete(client, upload_id, part_ids)
    assert r.status_code == 200 and client.get(f"/v1/files/{r.json()['file']['id']}/content").content == clip


# --- restarts and replicas -------------------------------------------------------------------------


def test_uploads_survive_a_restart_and_resume_where_they_stopped(settings, clip) -> None:
    first, second = pieces(clip, 2)
    with TestClient(create_app(settings, FakeBackend())) as client:
        upload_id = create(client, len(clip)).json()["id"]
        a = add_part(client, upload_id, first).json()["id"]
    with TestClient(create_app(settings, FakeBackend())) as client:
        b = add_part(client, upload_id, second).json()["id"]
        r = complete(client, upload_id, [a, b])
        assert r.status_code == 200 and client.get(f"/v1/files/{r.json()['file']['id']}/content").content == clip


@EMBEDDED
def test_uploads_recover_at_open_when_a_crash_cut_an_assembly_short(settings, clip) -> None:
    with TestClient(create_app(settings, FakeBackend())) as client:
        upload_id = create(client, len(clip)).json()["id"]
        part_id = add_part(client, upload_id, clip).json()["id"]
        with client.app.state.uploads.db.tx() as tx:  # as a process killed mid-assembly leaves it
            tx.run("UPDATE uploads SET status='completing' WHERE id=?", (upload_id,))
        r = complete(client, upload_id, [part_id])
        assert r.status_code == 400 and error_of(r)["code"] == "upload_completing"
    orphan = Path(settings.files_dir) / "uploads" / "upload_gone"  # parts of an Upload no row knows
    orphan.mkdir()
    (orphan / "part_x").write_bytes(b"x")
    with TestClient(create_app(settings, FakeBackend())) as client:
        assert not orphan.exists()
        r = complete(client, upload_id, [part_id])
        assert r.status_code == 200 and client.get(f"/v1/files/{r.json()['file']['id']}/content").content == clip


def test_uploads_compose_in_the_bucket_only_what_s3_takes_as_parts() -> None:
    from openai_frontend.uploads.parts import S3_MIN_PART, composable

    assert composable([S3_MIN_PART, S3_MIN_PART, 1])
    assert not composable([S3_MIN_PART - 1, S3_MIN_PART])  # a part but the last under 5 MiB
    assert not composable([S3_MIN_PART] * 10_001) and not composable([])


@pytest.mark.parametrize("settings", ["postgres+s3"], indirect=True)
def test_uploads_are_shared_by_replicas_when_on_postgres_and_s3(settings, clip) -> None:
    b_settings = settings.with_(files_dir=settings.files_dir + "-b")  # nothing shared on disk: only the stores
    chunks = pieces(clip, 3)
    with TestClient(create_app(settings, FakeBackend())) as a, TestClient(create_app(b_settings, FakeBackend())) as b:
        upload_id = create(a, len(clip)).json()["id"]
        part_ids = [add_part(client, upload_id, c).json()["id"] for client, c in zip((a, b, a), chunks, strict=True)]
        r = complete(b, upload_id, part_ids)
        assert r.status_code == 200, r.text
        assert a.get(f"/v1/files/{r.json()['file']['id']}/content").content == clip
        assert complete(a, upload_id, part_ids).json()["error"]["code"] == "upload_completed"
        assert stored_parts(settings) == []


@pytest.mark.parametrize("settings", ["s3", "postgres+s3"], indirect=True)
def test_uploads_compose_the_blob_in_the_bucket_when_the_parts_are_big_enough(settings, clip, monkeypatch) -> None:
    from openai_frontend.storage.s3 import S3Objects

    big = clip + os.urandom(11 * MIB)  # an mp4, then more than two of S3's 5 MiB minimum parts
    sent: list[str] = []
    real_upload = S3Objects.upload

    def upload(self, path, name):  # noqa: ANN001, ANN202
        sent.append(name)
        return real_upload(self, path, name)

    monkeypatch.setattr(S3Objects, "upload", upload)
    with TestClient(create_app(settings, FakeBackend())) as client:
        upload_id = create(client, len(big)).json()["id"]
        part_ids = [add_part(client, upload_id, c).json()["id"] for c in (big[:5 * MIB], big[5 * MIB:10 * MIB],
                                                                           big[10 * MIB:])]
        r = complete(client, upload_id, part_ids)
        assert r.status_code == 200, r.text
        assert not [n for n in sent if n.startswith("blobs/")], sent  # composed in the bucket, not sent again
        assert stored_blobs(settings) == [hashlib.sha256(big).hexdigest()]
        content = client.get(f"/v1/files/{r.json()['file']['id']}/content", headers={"Range": "bytes=-64"})
        assert content.status_code == 206 and content.content == big[-64:]


# --- memory ----------------------------------------------------------------------------------------


@EMBEDDED
def test_uploads_stream_parts_and_the_assembly_through_disk_with_flat_memory(settings) -> None:
    import struct
    import uuid

    import httpx

    from tests.memory import PeakRss

    head = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
    part_bytes, parts = 32 * MIB, 3
    total = part_bytes * parts
    # A valid MP4 of `total` bytes: the clip, then one `free` box of zeros over the rest.
    first = head + struct.pack(">I4s", total - len(head), b"free")

    def part_body(boundary: str, index: int):
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="blob"\r\n'
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        left = part_bytes
        if index == 0:
            yield first
            left -= len(first)
        while left > 0:
            n = min(left, MIB)
            yield bytes(n)
            left -= n
        yield f"\r\n--{boundary}--\r\n".encode()

    with serving(create_app(settings, FakeBackend()), name="uploads-memory") as url, httpx.Client(timeout=300) as http:
        upload_id = http.post(f"{url}/v1/uploads", json={"bytes": total, "filename": "big.mp4", "purpose": "vision",
                                                          "mime_type": "video/mp4"}).json()["id"]
        with PeakRss() as rss:
            part_ids = []
            for i in range(parts):
                boundary = uuid.uuid4().hex
                r = http.post(f"{url}/v1/uploads/{upload_id}/parts", content=part_body(boundary, i),
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
                assert r.status_code == 200, r.text
                part_ids.append(r.json()["id"])
            done = http.post(f"{url}/v1/uploads/{upload_id}/complete", json={"part_ids": part_ids})
        assert done.status_code == 200, done.text
        assert rss.peak - rss.start < 64 * MIB, f"grew {(rss.peak - rss.start) / MIB:.1f} MiB for {total / MIB} MiB"
        tail = http.get(f"{url}/v1/files/{done.json()['file']['id']}/content", headers={"Range": "bytes=-16"})
        assert tail.status_code == 206 and tail.content == bytes(16) and done.json()["file"]["bytes"] == total
