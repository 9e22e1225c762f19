"""kill -9 of a shim mid-upload with the local file store (files_dir, no S3): started again on the same files
dir, it lists no partial file and every earlier file is intact by sha256 (issue 19.4; the S3 case is in
test_multi_replica.py, the 500 MB run in `make chaos`)."""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable

import httpx
import pytest

from tests.servers import ShimProcess
from tests.videos import ClipSpec, make_video

pytestmark = pytest.mark.e2e


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def padded(clip: bytes, size: int) -> bytes:
    pad = max(0, size - len(clip) - 8)
    return clip + struct.pack(">I4s", pad + 8, b"free") + os.urandom(pad)


class _CutOff(io.BytesIO):
    def __init__(self, data: bytes, at_half: Callable[[], None]) -> None:
        super().__init__(data)
        self._half, self._at_half = len(data) // 2, at_half

    def read(self, size: int | None = -1) -> bytes:
        if self._at_half is not None and self.tell() >= self._half:
            self._at_half, at_half = None, self._at_half
            at_half()
        return super().read(size)


def upload(base_url: str, body: object) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/files", files={"file": ("clip.mp4", body, "video/mp4")},
                      data={"purpose": "vision"}, timeout=120)


def test_a_shim_killed_mid_upload_lists_no_partial_file_and_keeps_earlier_ones_when_restarted(triton,
                                                                                              tmp_path) -> None:
    files_dir = tmp_path / "files"
    shim = ShimProcess("local-store shim", triton.grpc_url, {"VLT_FILES_DIR": str(files_dir)}, tmp_path / "shim.log")
    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
    try:
        shim.start()
        earlier = {}
        for size in (64 * 1024, 4 * 1024 * 1024):
            body = padded(clip, size)
            r = upload(shim.base_url, body)
            assert r.status_code == 200, r.text
            earlier[r.json()["id"]] = sha(body)
        with pytest.raises(httpx.HTTPError):
            upload(shim.base_url, _CutOff(padded(clip, 64 * 1024 * 1024), shim.kill))
        shim.start()  # same files dir, a new process
        listed = {f["id"]: f["bytes"] for f in httpx.get(f"{shim.base_url}/v1/files", timeout=30).json()["data"]}
        assert set(listed) == set(earlier), listed
        for file_id, digest in earlier.items():
            assert sha(httpx.get(f"{shim.base_url}/v1/files/{file_id}/content", timeout=60).content) == digest
        assert not any((files_dir / "tmp").glob("*")), "the cut upload's staging file was left behind"
    finally:
        shim.stop()
