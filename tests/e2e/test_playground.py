"""The web playground in headless Chromium (Debian's, driven by Playwright) against the real stack:
upload a video, ask, watch the answer stream; paste a URL; a bad URL shows the server's error.

The screenshot is kept at tests/artifacts/playground.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.videos import ClipSpec, make_video

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ANSWER_TIMEOUT_MS = 180_000  # a loaded 2-core CI machine: decode + prefill + a few tokens


def chromium_path() -> str | None:
    for candidate in (os.environ.get("VLT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright is not installed")
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/setup.sh installs it with apt)")
        pytest.skip("chromium is not installed (apt-get install chromium, or set VLT_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, shim):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(f"{shim.base_url}/playground")
    pg.wait_for_function("document.getElementById('model').textContent === 'tiny-qwen2-vl'")
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("playground") / "clip.mp4"
    path.write_bytes(make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10)))
    return path


def wait_for_answer(page) -> None:
    page.wait_for_function("document.getElementById('answer').dataset.done === 'true'"
                           " || document.getElementById('ask-error').textContent !== ''", timeout=ANSWER_TIMEOUT_MS)


def test_playground_uploads_a_video_and_streams_the_answer(page, shim, clip_file) -> None:
    page.set_input_files("#video-file", str(clip_file))
    page.fill("#question", "What happens in the video?")
    page.fill("#num-frames", "8")
    page.fill("#max-tokens", "12")
    page.click("#ask")
    wait_for_answer(page)
    assert page.text_content("#ask-error") == ""
    assert page.text_content("#answer").strip()
    usage = page.text_content("#usage")
    assert "answer 12" in usage and "(video 0)" not in usage, usage
    status = page.text_content("#upload-status")
    assert status.startswith("uploaded clip.mp4 as file-"), status
    assert page.get_attribute("#upload-progress", "value") == "100"
    # the upload is a real file in the shim's store
    file_id = status.rsplit(" ", 1)[-1]
    assert httpx.get(f"{shim.base_url}/v1/files/{file_id}").json()["filename"] == "clip.mp4"
    # the request id the page shows is the one the shim answered with
    assert page.text_content("#request-id").startswith("req_")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "playground.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nplayground screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_playground_asks_about_a_pasted_url(page, http_media, clip_file) -> None:
    page.fill("#video-url", http_media.put("playground-clip.mp4", clip_file.read_bytes()))
    page.fill("#num-frames", "4")
    page.fill("#max-tokens", "4")
    page.click("#ask")
    wait_for_answer(page)
    assert page.text_content("#ask-error") == ""
    assert "answer 4" in page.text_content("#usage")
    assert page.is_hidden("#upload-progress")


def test_playground_shows_the_servers_error_when_the_url_is_not_allowed(page) -> None:
    page.fill("#video-url", "ftp://example.com/clip.mp4")
    page.click("#ask")
    wait_for_answer(page)
    error = page.text_content("#ask-error")
    assert "ftp" in error.lower() or "scheme" in error.lower() or "url" in error.lower(), error
    assert page.text_content("#answer") == ""


def test_playground_generates_a_video_shows_progress_and_plays_it(page) -> None:
    page.fill("#gen-prompt", "a red ball bouncing on a wooden floor")
    page.click("#generate")
    page.wait_for_function("document.getElementById('gen-video').dataset.jobId"
                           " || document.getElementById('gen-error').textContent !== ''", timeout=ANSWER_TIMEOUT_MS)
    assert page.text_content("#gen-error") == ""
    assert page.get_attribute("#gen-progress", "value") == "100"
    assert page.text_content("#gen-status").endswith(": completed")
    # the browser loads and decodes the generated mp4
    page.wait_for_function("document.getElementById('gen-video').readyState >= 2", timeout=30_000)
    assert page.evaluate("document.getElementById('gen-video').duration") > 0
    assert page.get_attribute("#gen-download", "href").endswith("/content")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "playground-generate.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nplayground screenshot: {shot}")
