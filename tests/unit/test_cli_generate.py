"""``vlt generate`` and the CLI's progress bar against a fake of OpenAI's Videos HTTP API (create, poll,
content), served on a real socket; the real video_generator path is in tests/e2e/test_cli.py."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from openai_frontend.cli import Progress
from tests.servers import serving

CONTENT = b"\x00\x00\x00\x18ftypmp42 fake video bytes"


class FakeVideos:
    """POST /v1/videos -> queued job; each GET advances it 25%; then /content returns CONTENT."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.forms: list[dict] = []
        self.progress = 0
        self.app = FastAPI()
        self.app.post("/v1/videos")(self.create)
        self.app.get("/v1/videos/{video_id}")(self.retrieve)
        self.app.get("/v1/videos/{video_id}/content")(self.content)

    def job(self) -> dict:
        status = "queued" if self.progress == 0 else "in_progress" if self.progress < 100 else "completed"
        if self.fail and self.progress >= 50:
            return {"id": "video_1", "object": "video", "status": "failed", "progress": 50, "created_at": 1,
                    "model": "tiny-wan", "error": {"code": "generation_failed", "message": "out of memory"}}
        return {"id": "video_1", "object": "video", "status": status, "progress": self.progress, "created_at": 1,
                "model": "tiny-wan", "seconds": "4", "size": "64x64"}

    async def create(self, request: Request) -> JSONResponse:
        self.forms.append(dict(await request.form()))
        return JSONResponse(self.job())

    async def retrieve(self, video_id: str) -> JSONResponse:
        self.progress = min(self.progress + 25, 100)
        return JSONResponse(self.job())

    async def content(self, video_id: str) -> Response:
        return Response(CONTENT, media_type="video/mp4")


def serve(app: FastAPI) -> Iterator[str]:
    with serving(app, name="fake-videos") as url:
        yield url + "/v1"


@pytest.fixture
def fake() -> FakeVideos:
    return FakeVideos()


@pytest.fixture
def base_url(fake: FakeVideos) -> Iterator[str]:
    yield from serve(fake.app)


def vlt(base_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "openai_frontend.cli", "--base-url", base_url, *args],
                          capture_output=True, text=True, timeout=120)


def test_generate_follows_progress_and_downloads_when_the_job_completes(fake, base_url, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    r = vlt(base_url, "generate", "a red ball", "-o", str(out), "--size", "64x64", "--seconds", "4",
            "--poll-interval", "0.01")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == CONTENT
    assert fake.forms == [{"prompt": "a red ball", "size": "64x64", "seconds": "4"}]
    lines = [line for line in r.stderr.splitlines() if line.startswith("generate video_1")]
    percents = [float(line.split("]")[1].split("%")[0]) for line in lines]
    assert percents == sorted(percents) and percents[0] == 0 and percents[-1] == 100 and len(percents) >= 4
    assert f"saved {out}" in r.stderr


def test_generate_fails_with_the_jobs_error_when_the_job_fails(base_url, fake, tmp_path: Path) -> None:
    fake.fail = True
    out = tmp_path / "out.mp4"
    r = vlt(base_url, "generate", "a red ball", "-o", str(out), "--poll-interval", "0.01")
    assert r.returncode == 1 and "failed: out of memory" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_generate_passes_extra_fields_through(base_url, fake, tmp_path: Path) -> None:
    r = vlt(base_url, "generate", "x", "-o", str(tmp_path / "o.mp4"), "--extra", '{"num_inference_steps": 2}',
            "--poll-interval", "0.01")
    assert r.returncode == 0, r.stderr
    assert fake.forms[0]["num_inference_steps"] == "2"


def test_cli_reports_an_unreachable_server_in_one_line(tmp_path: Path) -> None:
    from video_pipeline.launch import free_port

    r = vlt(f"http://127.0.0.1:{free_port()}/v1", "files", "list")
    assert r.returncode == 1 and r.stderr.startswith("vlt: ") and "Traceback" not in r.stderr


def test_progress_prints_a_line_per_tenth_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = Progress("upload x", 1000, unit="bytes", stream=out)
    for done in range(0, 1001, 7):
        p.update(done)
    p.update(1000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("upload x [" + "#" * 30 + "] 100.0%")
