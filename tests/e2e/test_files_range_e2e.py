"""Bad Range headers on the real shim (uvicorn, real sockets, the session's stack): no descriptor stays open
in the shim's process, invalid ranges get the whole file, unsatisfiable ones a 416 in OpenAI's shape (issue 20.1)."""

from __future__ import annotations

import os

import httpx

from tests.videos import ClipSpec, make_video


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))  # the shim serves from a thread of this process


def test_files_content_keeps_the_shims_descriptors_flat_when_hundreds_of_ranges_are_bad(shim) -> None:
    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))
    with httpx.Client(base_url=shim.base_url, timeout=30) as http:
        r = http.post("/v1/files", files={"file": ("clip.mp4", clip, "video/mp4")}, data={"purpose": "vision"})
        assert r.status_code == 200, r.text
        url = f"/v1/files/{r.json()['id']}/content"
        for header in ("bytes=10-5", "bytes=99999-", "bytes=0-9"):  # warm up
            http.get(url, headers={"Range": header})
        before = open_fds()
        for _ in range(150):
            invalid = http.get(url, headers={"Range": "bytes=10-5"})
            assert invalid.status_code == 200 and invalid.content == clip
            unsatisfiable = http.get(url, headers={"Range": "bytes=99999-"})
            assert unsatisfiable.status_code == 416
            assert unsatisfiable.headers["content-range"] == f"bytes */{len(clip)}"
            assert unsatisfiable.json()["error"]["code"] == "range_not_satisfiable"
        after = open_fds()
    assert after <= before + 3, f"{before} -> {after} open descriptors after 300 bad Range requests"
