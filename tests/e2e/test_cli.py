"""``vlt``, the installed command, run as a user runs it: a subprocess against the real shim + tritonserver."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.videos import ClipSpec, make_video

pytestmark = pytest.mark.e2e


def vlt(shim, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs the console script the package installs (``vlt``), falling back to the module."""
    exe = shutil.which("vlt", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "openai_frontend.cli"]
    env = {**os.environ, "OPENAI_BASE_URL": f"{shim.base_url}/v1"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "clip.mp4"
    path.write_bytes(make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10)))
    return path


def test_vlt_ask_uploads_with_progress_and_streams_the_answer_when_given_a_local_video(shim, clip_path) -> None:
    before = {f.id for f in shim.client().files.list()}
    r = vlt(shim, "ask", str(clip_path), "What happens in the video?", "--num-frames", "8", "--max-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "no answer on stdout"
    assert "upload clip.mp4" in r.stderr and "100.0%" in r.stderr
    assert "8 completion tokens" in r.stderr and " video)" in r.stderr and "(0 video)" not in r.stderr
    # the one-shot upload is deleted afterwards
    assert {f.id for f in shim.client().files.list()} == before


def test_vlt_ask_gives_the_same_answer_as_the_sdk_when_the_video_is_a_url(shim, http_media, clip_path) -> None:
    url = http_media.put("cli-clip.mp4", clip_path.read_bytes())
    r = vlt(shim, "ask", url, "What happens in the video?", "--num-frames", "8", "--max-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert "upload" not in r.stderr
    sdk = shim.client().chat.completions.create(
        model="tiny-qwen2-vl", max_tokens=8, temperature=0,
        messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                               {"type": "text", "text": "What happens in the video?"}]}],
        extra_body={"media_io_kwargs": {"video": {"num_frames": 8}}})
    assert r.stdout.rstrip("\n") == sdk.choices[0].message.content


def test_vlt_files_lists_and_deletes_a_kept_upload_that_ask_takes_by_id(shim, clip_path) -> None:
    r = vlt(shim, "ask", str(clip_path), "Describe it.", "--num-frames", "4", "--max-tokens", "2", "--keep")
    assert r.returncode == 0, r.stderr
    file_id = next(w for w in r.stderr.split() if w.startswith("file-"))
    by_id = vlt(shim, "ask", file_id, "Describe it.", "--num-frames", "4", "--max-tokens", "2")
    assert by_id.returncode == 0 and "upload" not in by_id.stderr and by_id.stdout.strip(), by_id.stderr
    listed = vlt(shim, "files", "list")
    assert listed.returncode == 0 and any(line.startswith(file_id + "\t") and line.endswith("\tclip.mp4")
                                          for line in listed.stdout.splitlines()), listed.stdout
    deleted = vlt(shim, "files", "delete", file_id)
    assert deleted.returncode == 0 and f"deleted {file_id}" in deleted.stdout
    assert file_id not in vlt(shim, "files", "list").stdout
    again = vlt(shim, "files", "delete", file_id)
    assert again.returncode == 1 and file_id in again.stderr and "Traceback" not in again.stderr


def test_vlt_ask_reports_the_servers_error_in_one_line_when_the_file_is_not_a_video(shim, tmp_path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("<html>not a video</html>")
    r = vlt(shim, "ask", str(fake), "What?")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("vlt: ") and "Traceback" not in r.stderr


def test_vlt_ask_says_so_when_the_local_file_does_not_exist(shim, tmp_path) -> None:
    r = vlt(shim, "ask", str(tmp_path / "missing.mp4"), "What?")
    assert r.returncode == 1 and "no such file" in r.stderr


def test_vlt_generate_shows_progress_and_saves_a_playable_video(shim, tmp_path) -> None:
    import av

    out = tmp_path / "out.mp4"
    r = vlt(shim, "generate", "a red ball bouncing", "-o", str(out), "--poll-interval", "0.2")
    assert r.returncode == 0, r.stderr
    progress = [line for line in r.stderr.splitlines() if line.startswith("generate video")]
    assert progress and progress[-1].split("]")[1].strip().startswith("100.0%"), r.stderr
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames > 0
