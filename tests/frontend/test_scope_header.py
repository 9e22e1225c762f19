"""The tenant header (``--files-scope-header``, issue 19): exactly one non-empty value, on every route that
reads it, or a 400 before anything is read or stored; never the first or the last of several."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.routers.common import MAX_SCOPE_CHARS
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL
from tests.videos import ClipSpec, make_video

SCOPE = "X-Tenant"


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))


@pytest.fixture
def scoped(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.with_(files_scope_header=SCOPE), FakeBackend()),
                    raise_server_exceptions=False) as c:
        yield c


def upload(client, clip: bytes, headers) -> object:
    return client.post("/v1/files", files={"file": ("clip.mp4", clip, "video/mp4")}, data={"purpose": "vision"},
                       headers=headers)


def chat_body(file_id: str) -> dict:
    return {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": file_id}}, {"type": "text", "text": "?"}]}]}


def every_route(file_id: str) -> list[tuple[str, str, dict]]:
    return [
        ("GET", "/v1/files", {}),
        ("GET", f"/v1/files/{file_id}", {}),
        ("GET", f"/v1/files/{file_id}/content", {}),
        ("DELETE", f"/v1/files/{file_id}", {}),
        ("POST", "/v1/files", {"files": {"file": ("c.mp4", b"x", "video/mp4")}, "data": {"purpose": "vision"}}),
        ("POST", "/v1/chat/completions", {"json": chat_body(file_id)}),
        ("POST", "/v1/chat/completions", {"data": {"payload": "{}"}, "files": {"clip": ("c.mp4", b"x", "video/mp4")}}),
        ("POST", "/v1/responses", {"json": {"model": MODEL, "input": [
            {"role": "user", "content": [{"type": "input_video", "file_id": file_id}]}]}}),
        ("POST", "/v1/videos", {"json": {"prompt": "a fox"}}),
        ("POST", "/v1/videos/sync", {"json": {"prompt": "a fox"}}),
        ("GET", "/v1/videos", {}),
        ("GET", "/v1/videos/video_x", {}),
        ("GET", "/v1/videos/video_x/content", {}),
        ("DELETE", "/v1/videos/video_x", {}),
    ]


BAD_HEADERS = {
    "repeated": [(SCOPE, "alice"), (SCOPE, "bob")],
    "repeated, same value": [(SCOPE, "alice"), (SCOPE, "alice")],
    "repeated, other case": [("x-tenant", "alice"), ("X-TENANT", "bob")],
    "comma-joined": [(SCOPE, "alice, bob")],
    "comma-joined, no space": [(SCOPE, "bob,alice")],
    "empty": [(SCOPE, "")],
    "whitespace only": [(SCOPE, "   ")],
    "missing": [],
    "too long": [(SCOPE, "a" * (MAX_SCOPE_CHARS + 1))],
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_scope_header_answers_400_on_every_route_when_it_is_not_exactly_one_value(scoped, clip, case) -> None:
    alice = upload(scoped, clip, {SCOPE: "alice"})
    assert alice.status_code == 200, alice.text
    file_id = alice.json()["id"]
    for method, path, kwargs in every_route(file_id):
        r = scoped.request(method, path, headers=BAD_HEADERS[case], **kwargs)
        assert r.status_code == 400, f"{case}: {method} {path}: {r.status_code} {r.text[:200]}"
        err = r.json()["error"]
        assert err["param"] == SCOPE and SCOPE in err["message"], err
    # Nothing was stored or deleted by any of them.
    listing = scoped.get("/v1/files", headers={SCOPE: "alice"}).json()["data"]
    assert [f["id"] for f in listing] == [file_id]
    assert scoped.get("/v1/videos", headers={SCOPE: "alice"}).json()["data"] == []


def test_scope_header_repeated_never_reads_either_tenant_whatever_the_order(scoped, clip) -> None:
    file_id = upload(scoped, clip, {SCOPE: "alice"}).json()["id"]
    for order in ([(SCOPE, "alice"), (SCOPE, "bob")], [(SCOPE, "bob"), (SCOPE, "alice")]):
        for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content", "/v1/files"):
            assert scoped.get(path, headers=order).status_code == 400
        assert scoped.post("/v1/chat/completions", json=chat_body(file_id), headers=order).status_code == 400
    assert scoped.get(f"/v1/files/{file_id}", headers={SCOPE: "alice"}).status_code == 200
    assert scoped.get(f"/v1/files/{file_id}", headers={SCOPE: "bob"}).status_code == 404
    assert scoped.post("/v1/chat/completions", json=chat_body(file_id), headers={SCOPE: "alice"}).status_code == 200
    assert scoped.post("/v1/chat/completions", json=chat_body(file_id), headers={SCOPE: "bob"}).status_code == 404


def test_scope_header_is_ignored_when_scoping_is_off(client, clip) -> None:
    r = upload(client, clip, [("X-Tenant", "a"), ("X-Tenant", "b")])
    assert r.status_code == 200, r.text
    assert client.get("/v1/files", headers=[("X-Tenant", "a, b")]).json()["data"][0]["id"] == r.json()["id"]


def test_health_and_models_need_no_scope_header_when_scoping_is_on(scoped) -> None:
    assert scoped.get("/health").status_code == 200
    assert scoped.get("/v1/models").status_code == 200
