"""A full disk during an upload (issue 20.7): a 507 in OpenAI's shape naming the store, the partial file removed,
nothing listed, and the server keeps serving. On a real 2 MiB tmpfs where this process may mount one (root),
and with ENOSPC injected into the staging writes everywhere."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.files import store as store_module
from openai_frontend.settings import Settings
from tests.fakes import FakeBackend
from tests.videos import ClipSpec, make_video


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "2m"):
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def upload(client, data: bytes):
    return client.post("/v1/files", files={"file": ("clip.mp4", data, "video/mp4")}, data={"purpose": "vision"})


def assert_refused_cleanly(client, r, files_dir: Path) -> None:
    assert r.status_code == 507, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_storage" and err["param"] == "file" and "is full" in err["message"]
    assert str(files_dir) in err["message"]
    assert not any((files_dir / "tmp").iterdir()), "the partial upload was left behind"
    assert client.get("/v1/files").json()["data"] == []


def test_upload_is_507_and_leaves_nothing_when_the_store_filesystem_fills_up(tmp_path, settings: Settings,
                                                                            clip) -> None:
    with tiny_tmpfs(tmp_path / "full") as files_dir:
        app = create_app(settings.with_(files_dir=str(files_dir)), FakeBackend())
        with TestClient(app) as client:
            big = clip + os.urandom(3 * 1024 * 1024)  # an mp4 head, then more than the filesystem holds
            assert_refused_cleanly(client, upload(client, big), files_dir)
            r = upload(client, clip)  # still serving, and the space came back
            assert r.status_code == 200, r.text
            assert client.get(f"/v1/files/{r.json()['id']}/content").content == clip


def test_upload_is_507_and_leaves_nothing_when_a_staging_write_hits_enospc(tmp_path, settings: Settings, clip,
                                                                           monkeypatch) -> None:
    files_dir = tmp_path / "files"
    real_write = store_module.Stager.write

    def full(self, data):  # noqa: ANN001, ANN202
        if self.bytes + len(data) > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    with TestClient(create_app(settings.with_(files_dir=str(files_dir)), FakeBackend())) as client:
        monkeypatch.setattr(store_module.Stager, "write", full)
        assert_refused_cleanly(client, upload(client, clip), files_dir)
        monkeypatch.setattr(store_module.Stager, "write", real_write)
        assert upload(client, clip).status_code == 200
