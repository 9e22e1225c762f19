"""A full disk under a multipart request's parts (issue 20.7) on /v1/videos and /v1/chat/completions, and under a
video job's row: a 507 in OpenAI's shape naming what is full, nothing staged left behind, no job listed, and the
server keeps serving. On a real 2 MiB tmpfs where this process may mount one (root), and with ENOSPC (or SQLite's
"database or disk is full") injected everywhere."""

from __future__ import annotations

import errno
import io
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from openai_frontend.app import create_app
from openai_frontend.files import store as store_module
from openai_frontend.settings import Settings
from openai_frontend.videos.store import JobStore
from tests.fakes import FakeBackend, FakeVideoBackend
from tests.frontend.conftest import MODEL
from tests.frontend.test_files_full_disk import tiny_tmpfs
from tests.videos import ClipSpec, make_video


def png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 120, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def app_client(settings: Settings, files_dir: Path) -> TestClient:
    app = create_app(settings.with_(files_dir=str(files_dir)), FakeBackend(), video_backend=FakeVideoBackend())
    return TestClient(app, raise_server_exceptions=False)


def create_video(client: TestClient, image: bytes):
    return client.post("/v1/videos", data={"prompt": "animate it", "size": "96x64", "num_frames": "9"},
                       files={"input_reference": ("ref.png", image, "image/png")})


def assert_507(r, files_dir: Path, param: str | None) -> None:
    assert r.status_code == 507, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_storage" and err["param"] == param and "is full" in err["message"]
    assert str(files_dir) in err["message"]


def assert_nothing_left(client: TestClient, files_dir: Path) -> None:
    assert not any((files_dir / "tmp").iterdir()), "the staged part was left behind"
    assert client.get("/v1/videos").json()["data"] == []


def assert_video_job_completes(client: TestClient) -> None:
    r = create_video(client, png())
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 20
    while (job := client.get(f"/v1/videos/{r.json()['id']}").json())["status"] != "completed":
        assert job["status"] in ("queued", "in_progress") and time.monotonic() < deadline, job
        time.sleep(0.02)


@pytest.fixture
def full_stager(monkeypatch):
    """Stager.write hitting ENOSPC past the first 1000 bytes of a part, until the test calls the result."""
    real_write = store_module.Stager.write

    def full(self, data):  # noqa: ANN001, ANN202
        if self.bytes + len(data) > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    monkeypatch.setattr(store_module.Stager, "write", full)
    return lambda: monkeypatch.setattr(store_module.Stager, "write", real_write)


def test_create_video_is_507_and_leaves_nothing_when_the_store_filesystem_fills_up(tmp_path, settings) -> None:
    with tiny_tmpfs(tmp_path / "full") as files_dir, app_client(settings, files_dir) as client:
        big = png() + os.urandom(3 * 1024 * 1024)  # a PNG head, then more than the filesystem holds
        r = create_video(client, big)
        assert_507(r, files_dir, "input_reference")
        assert_nothing_left(client, files_dir)
        assert_video_job_completes(client)  # still serving, and the space came back


def test_create_video_is_507_and_leaves_nothing_when_a_staging_write_hits_enospc(tmp_path, settings,
                                                                                 full_stager) -> None:
    files_dir = tmp_path / "files"
    with app_client(settings, files_dir) as client:
        image = png() + os.urandom(4000)
        for path in ("/v1/videos", "/v1/videos/sync"):
            r = client.post(path, data={"prompt": "animate it"}, files={"input_reference": ("ref.png", image,
                                                                                            "image/png")})
            assert_507(r, files_dir, "input_reference")
            assert "staging directory" in r.json()["error"]["message"]
            assert_nothing_left(client, files_dir)
        full_stager()
        assert_video_job_completes(client)


def test_create_video_is_507_and_lists_no_job_when_the_job_database_is_full(tmp_path, settings,
                                                                            monkeypatch) -> None:
    files_dir = tmp_path / "files"
    real_add = JobStore.add

    def full(self, record):  # noqa: ANN001, ANN202
        raise sqlite3.OperationalError("database or disk is full")

    with app_client(settings, files_dir) as client:
        monkeypatch.setattr(JobStore, "add", full)
        r = client.post("/v1/videos", json={"prompt": "a fox", "size": "96x64", "num_frames": 9})
        assert_507(r, files_dir, None)
        assert "video job" in r.json()["error"]["message"]
        assert_nothing_left(client, files_dir)
        monkeypatch.setattr(JobStore, "add", real_add)
        assert_video_job_completes(client)


def test_multipart_chat_is_507_and_leaves_nothing_when_a_staging_write_hits_enospc(tmp_path, settings,
                                                                                    full_stager) -> None:
    files_dir = tmp_path / "files"
    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
    payload = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "form://clip"}}, {"type": "text", "text": "Hi"}]}]})

    def chat():  # noqa: ANN202
        return client.post("/v1/chat/completions", data={"payload": payload},
                           files={"clip": ("c.mp4", clip, "video/mp4")})

    with app_client(settings, files_dir) as client:
        r = chat()
        assert_507(r, files_dir, None)
        assert not any((files_dir / "tmp").iterdir()), "the staged part was left behind"
        full_stager()
        assert chat().status_code == 200
