"""GET /v1/files/{id}/content with Range headers as RFC 9110 reads them, on the local store and on S3:
invalid ranges are ignored (200, the whole body), unsatisfiable ones are a 416 with ``Content-Range: bytes */N``
and an OpenAI-shaped body, and no answer leaves the blob open (issue 20.1)."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.routers.files import Unsatisfiable, parse_range
from openai_frontend.settings import Settings
from tests.fakes import FakeBackend
from tests.stores import store_settings
from tests.videos import ClipSpec, make_video

BAD_RANGES = ["bytes=10-5", "bytes=99999-", "bytes=abc", "bytes=-", "bytes=5-4,0-1", "items=0-1", "bytes=99999-100000",
              "bytes=-0", "bytes=" + ",".join(["0-0"] * 101)]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return store_settings(request.param, settings, request)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))


@pytest.fixture
def client(settings: Settings):
    with TestClient(create_app(settings, FakeBackend())) as c:
        yield c


def stored(client, clip: bytes) -> str:
    r = client.post("/v1/files", files={"file": ("clip.mp4", clip, "video/mp4")}, data={"purpose": "vision"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


@pytest.mark.parametrize(("header", "expected"), [
    (None, []), ("bytes=0-9", [(0, 9)]), ("bytes=10-", [(10, 99)]), ("bytes=-10", [(90, 99)]),
    ("bytes=90-500", [(90, 99)]), ("bytes=-500", [(0, 99)]), ("bytes=0-4, 3-9, 20-29", [(0, 9), (20, 29)]),
    ("BYTES = 1-2", [(1, 2)]), ("bytes=10-5", []), ("bytes=x-1", []), ("bytes=-", []), ("pages=1-2", []),
    ("bytes=0-1,5-4", []), ("bytes=" + ",".join(["0-0"] * 101), []), ("bytes=100-,200-", Unsatisfiable),
    ("bytes=-0", Unsatisfiable), ("bytes=100-", Unsatisfiable), ("bytes=100-,0-0", [(0, 0)]),
])
def test_parse_range_reads_rfc_9110_when_given_valid_invalid_and_unsatisfiable_headers(header, expected) -> None:
    if expected is Unsatisfiable:
        with pytest.raises(Unsatisfiable):
            parse_range(header, 100)
    else:
        assert parse_range(header, 100) == expected


def test_files_content_ignores_an_invalid_range_and_refuses_an_unsatisfiable_one_in_openai_shape(client, clip) -> None:
    file_id = stored(client, clip)
    url = f"/v1/files/{file_id}/content"
    for header in ("bytes=10-5", "bytes=abc", "items=0-1"):
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 200 and r.content == clip, (header, r.status_code)
    for header in ("bytes=99999-", "bytes=-0", f"bytes={len(clip)}-{len(clip) + 10}"):
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 416, (header, r.status_code, r.text)
        assert r.headers["content-range"] == f"bytes */{len(clip)}"
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == "range_not_satisfiable" and r.json()["error"]["param"] == "Range"
    r = client.get(url, headers={"Range": "bytes=10-29"})
    assert r.status_code == 206 and r.content == clip[10:30] and r.headers["content-range"] == f"bytes 10-29/{len(clip)}"
    r = client.get(url, headers={"Range": f"bytes=-16, {len(clip) + 5}-"})  # the satisfiable part only
    assert r.status_code == 206 and r.content == clip[-16:]


def test_files_content_leaves_no_descriptor_open_when_ranges_are_bad_or_clients_leave(client, clip) -> None:
    file_id = stored(client, clip)
    url = f"/v1/files/{file_id}/content"
    for header in BAD_RANGES + ["bytes=0-9", "bytes=0-1,5-9"]:  # warm up: pools, lazily opened files
        client.get(url, headers={"Range": header})
    before = open_fds()
    for _ in range(20):
        for header in BAD_RANGES + ["bytes=0-9", "bytes=0-1,5-9", ""]:
            assert client.get(url, headers={"Range": header}).status_code in (200, 206, 416)
        with client.stream("GET", url) as r:  # the client reads one chunk and leaves
            next(r.iter_raw(16))
    assert open_fds() <= before + 2, sorted(os.listdir("/proc/self/fd"))
