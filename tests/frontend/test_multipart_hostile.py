"""Hostile multipart bodies (issue 19): every dimension bounded with a 400 naming the limit, filenames kept
exactly or refused (never altered), and the event loop never held for long by one body.

The event-loop test serves the app with uvicorn on a loopback port and sends 10 MB hostile bodies while a
poller asks /health. What it asserts on is the event loop's own lag (a 5 ms ticker inside the server's loop:
how late each tick wakes): /health latency, measured too and reported, also counts the GIL shared with the
client threads of this same process and the scheduling of a loaded 2-core machine, so it would fail on noise
rather than on the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from openai_frontend.app import create_app
from openai_frontend.files.upload import (
    MAX_BOUNDARY,
    MAX_FIELD,
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_NAME,
    MAX_PARTS,
)
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL
from tests.servers import serving
from tests.videos import ClipSpec, make_video

LAG_BOUND_S = 0.5  # the event loop may be held this long at most (see the assertion)
logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10, gop=5))


def form(boundary: str, *parts: tuple[bytes, bytes]) -> bytes:
    """A multipart body of (Content-Disposition value and other header lines, body) parts."""
    out = b"".join(b"--" + boundary.encode() + b"\r\nContent-Disposition: " + head + b"\r\n\r\n" + body + b"\r\n"
                   for head, body in parts)
    return out + b"--" + boundary.encode() + b"--\r\n"


def post(client, body: bytes, boundary: str = "b0und", path: str = "/v1/files", **headers: str):
    return client.post(path, content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                    **headers})


def upload_with_disposition(client, clip: bytes, disposition: bytes):
    return post(client, form("b0und", (b'form-data; name="purpose"', b"vision"),
                             (disposition + b"\r\nContent-Type: video/mp4", clip)))


def error_of(r) -> dict:
    return r.json()["error"]


# --- every dimension has a limit, and the 400 names it --------------------------------------------------


def test_multipart_answers_400_naming_rfc_2046_when_the_boundary_is_longer_than_70(client) -> None:
    for n in (71, 257, 5000):
        b = "x" * n
        r = post(client, form(b, (b'form-data; name="purpose"', b"vision")), boundary=b)
        assert r.status_code == 400, r.text
        assert error_of(r)["code"] == "invalid_multipart" and f"is {n} characters" in error_of(r)["message"]
        assert "RFC 2046" in error_of(r)["message"] and "70" in error_of(r)["message"]


def test_multipart_takes_a_70_character_boundary_and_refuses_one_with_bad_characters(client, clip) -> None:
    b = "-" * 20 + "a" * 50
    assert len(b) == MAX_BOUNDARY
    r = post(client, form(b, (b'form-data; name="purpose"', b"vision"),
                          (b'form-data; name="file"; filename="c.mp4"\r\nContent-Type: video/mp4', clip)), boundary=b)
    assert r.status_code == 200, r.text
    for bad in ('"a\\"b"', '"ends "', '"a;b"'):
        r = post(client, form("x", (b'form-data; name="purpose"', b"vision")), boundary=bad)
        assert r.status_code == 400 and "RFC 2046" in error_of(r)["message"], (bad, r.text)


def test_multipart_answers_400_naming_the_limit_when_a_header_line_is_too_long(client) -> None:
    r = post(client, form("b0und", (b'form-data; name="purpose"\r\nX-Pad: ' + b"a" * (MAX_HEADER_LINE + 10), b"v")))
    assert r.status_code == 400 and str(MAX_HEADER_LINE) in error_of(r)["message"], r.text


def test_multipart_answers_400_naming_the_limit_when_a_part_has_too_many_headers(client) -> None:
    pad = b"".join(b"\r\nX-H%d: 1" % i for i in range(MAX_HEADERS + 1))
    r = post(client, form("b0und", (b'form-data; name="purpose"' + pad, b"v")))
    assert r.status_code == 400 and f"more than {MAX_HEADERS} header lines" in error_of(r)["message"], r.text


def test_multipart_answers_400_naming_the_limit_when_a_part_headers_are_too_long_together(client) -> None:
    pad = b"".join(b"\r\nX-H%d: " % i + b"a" * (MAX_HEADER_LINE - 100) for i in range(3))
    r = post(client, form("b0und", (b'form-data; name="purpose"' + pad, b"v")))
    assert r.status_code == 400 and "headers are longer than" in error_of(r)["message"], r.text


def test_multipart_answers_400_naming_the_limit_when_there_are_too_many_parts(client, settings) -> None:
    parts = [(b'form-data; name="f%d"' % i, b"x") for i in range(MAX_PARTS + 5)]
    r = post(client, form("b0und", *parts))
    assert r.status_code == 400 and error_of(r)["code"] == "too_many_parts", r.text
    assert f"more than {MAX_PARTS + 1} parts" in error_of(r)["message"]


def test_multipart_answers_400_naming_the_field_when_text_fields_are_too_long(client) -> None:
    r = post(client, form("b0und", (b'form-data; name="purpose"', b"v" * (MAX_FIELD + 1))))
    assert r.status_code == 400 and error_of(r)["param"] == "purpose" and str(MAX_FIELD) in error_of(r)["message"]
    parts = [(b'form-data; name="f%d"' % i, b"v" * (MAX_FIELD // 8)) for i in range(9)]
    r = post(client, form("b0und", *parts))
    assert r.status_code == 400 and error_of(r)["code"] == "field_too_long", r.text


def test_multipart_answers_400_when_a_part_has_no_name_or_no_disposition(client) -> None:
    for head in (b"form-data", b'form-data; name=""', b'attachment; name="purpose"', b'form-data; name="a"; name="b"',
                 b'form-data; name="unterminated', b'form-data; name="a" junk'):
        r = post(client, form("b0und", (head, b"v")))
        assert r.status_code == 400 and error_of(r)["code"] == "invalid_multipart", (head, r.text)
    r = post(client, b"--b0und\r\nX-Other: 1\r\n\r\nv\r\n--b0und--\r\n")
    assert r.status_code == 400 and "Content-Disposition" in error_of(r)["message"], r.text


def test_multipart_answers_400_when_a_field_name_is_too_long_or_has_control_characters(client) -> None:
    for name in (b"n" * (MAX_NAME + 1), b"a\x01b", b"a\x7fb"):
        r = post(client, form("b0und", (b'form-data; name="' + name + b'"', b"v")))
        assert r.status_code == 400 and error_of(r)["code"] == "invalid_multipart", (name, r.text)


def test_multipart_answers_400_naming_the_field_when_a_text_field_is_not_utf8(client) -> None:
    r = post(client, form("b0und", (b'form-data; name="purpose"', b"vis\xffion")))
    assert r.status_code == 400 and error_of(r)["param"] == "purpose" and "UTF-8" in error_of(r)["message"]


def test_multipart_chat_answers_400_and_not_500_when_the_boundary_is_5000_characters(client) -> None:
    b = "y" * 5000
    r = post(client, form(b, (b'form-data; name="payload"', b"{}")), boundary=b, path="/v1/chat/completions")
    assert r.status_code == 400 and "RFC 2046" in error_of(r)["message"], r.text
    r = post(client, form(b, (b'form-data; name="prompt"', b"a fox")), boundary=b, path="/v1/videos")
    assert r.status_code == 400 and "RFC 2046" in error_of(r)["message"], r.text


def test_multipart_chat_takes_a_payload_longer_than_a_plain_field_limit(client) -> None:
    payload = json.dumps({"model": MODEL, "max_tokens": 2,
                          "messages": [{"role": "user", "content": "a" * (2 * MAX_FIELD)}]}).encode()
    r = post(client, form("b0und", (b'form-data; name="payload"', payload)), path="/v1/chat/completions")
    assert r.status_code == 200, r.text


# --- filenames: refused with a 400 naming the field, or kept exactly -------------------------------------


@pytest.mark.parametrize("disposition", [
    b'form-data; name="file"; filename="\\"a.mp4',  # the CR LF ended the header line inside the quotes
    b'form-data; name="file"; filename="a\x00.mp4"',
    b'form-data; name="file"; filename="a\x1b[31m.mp4"',
    b'form-data; name="file"; filename="a\x7f.mp4"',
    b'form-data; name="file"; filename="a\xc2\x85.mp4"',  # U+0085, a C1 control (NEL)
    b"form-data; name=\"file\"; filename*=UTF-8''a%0D%0A.mp4",
    b"form-data; name=\"file\"; filename*=UTF-8''a%00.mp4",
    b"form-data; name=\"file\"; filename*=UTF-8''%FF.mp4",
    b"form-data; name=\"file\"; filename*=KOI8-R''a.mp4",
    b'form-data; name="file"; filename="\xff\xfe.mp4"',
    b'form-data; name="file"; filename="C:\\\\dir\\\\a.mp4"',
    b'form-data; name="file"; filename="dir/a.mp4"',
    b'form-data; name="file"; filename="' + b"n" * (MAX_NAME + 1) + b'"',
    b'form-data; name="file"; filename="   "',
])
def test_files_answer_400_naming_the_field_and_store_nothing_when_the_filename_is_unsafe(client, clip,
                                                                                      disposition) -> None:
    r = upload_with_disposition(client, clip, disposition)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"] == "file" and err["code"] in ("invalid_filename", "invalid_multipart"), err
    assert client.get("/v1/files").json()["data"] == []


@pytest.mark.parametrize(("disposition", "name"), [
    ('form-data; name="file"; filename="日本語のビデオ.mp4"'.encode(), "日本語のビデオ.mp4"),
    (b"form-data; name=\"file\"; filename*=UTF-8''" + quote("видео клип.mp4").encode(), "видео клип.mp4"),
    (b"form-data; name=\"file\"; filename=\"fallback.mp4\"; filename*=utf-8''" + quote("فيديو.mp4").encode(),
     "فيديو.mp4"),
    (b'form-data; name="file"; filename="  spaced  .mp4 "', "  spaced  .mp4 "),
    (b'form-data; name="file"; filename="a%22b%0D%0A.mp4"', "a%22b%0D%0A.mp4"),  # HTML5's escaping: kept as sent
    (b'form-data; name="file"; filename="say \\"hi\\".mp4"', 'say "hi".mp4'),
    (b"form-data; name=\"file\"; filename=plain.mp4", "plain.mp4"),
    ('form-data; name="file"; filename="😀.mp4"'.encode(), "😀.mp4"),
])
def test_files_keep_the_filename_exactly_through_create_retrieve_list_and_content(client, clip, disposition,
                                                                                  name) -> None:
    r = upload_with_disposition(client, clip, disposition)
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    assert r.json()["filename"] == name
    assert client.get(f"/v1/files/{file_id}").json()["filename"] == name
    assert [f["filename"] for f in client.get("/v1/files").json()["data"]] == [name]
    content = client.get(f"/v1/files/{file_id}/content")
    assert content.status_code == 200 and content.content == clip
    disposition_back = content.headers["content-disposition"]
    if quote(name) == name:
        assert disposition_back == f'attachment; filename="{name}"'
    else:
        assert disposition_back == f"attachment; filename*=utf-8''{quote(name)}"


def test_files_keep_a_non_latin_filename_the_openai_sdk_way(client, clip) -> None:
    name = "테스트 영상.mp4"
    r = client.post("/v1/files", files={"file": (name, clip, "video/mp4")}, data={"purpose": "vision"})
    assert r.status_code == 200 and r.json()["filename"] == name, r.text


# --- the event loop stays free: a real server, 10 MB hostile bodies, /health polled meanwhile ------------


class LoopLag:
    """An ASGI wrapper that starts, inside the server's event loop, a ticker measuring how late each 5 ms sleep
    wakes: the longest stretch the loop was held by anything."""

    TICK = 0.005

    def __init__(self, app) -> None:
        self.app = app
        self.lags: list[tuple[float, float]] = []  # (when, how late)
        self._task: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._tick())
        await self.app(scope, receive, send)

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.TICK)
            self.lags.append((time.perf_counter(), time.perf_counter() - before - self.TICK))

    def worst_since(self, t: float) -> float:
        return max((lag for when, lag in self.lags if when >= t), default=0.0)


def hostile_bodies() -> Iterator[tuple[str, str, bytes]]:
    mb10 = 10_000_000
    b = "x" * 5000
    yield "5000-char boundary", b, (b"--" + b.encode() + b'\r\nContent-Disposition: form-data; name="a"\r\n\r\nv\r\n'
                                    ) * (mb10 // 5060)
    yield "many tiny parts", "a", b'--a\r\nContent-Disposition: form-data; name="n"\r\n\r\nx\r\n' * (mb10 // 50)
    yield "many tiny nameless parts", "a", b"--a\r\n\r\nx\r\n" * (mb10 // 10)
    b = "q" * 70
    near = b"\r\n--" + b.encode()[:-1] + b"Z"
    yield "boundary-like soup in a field", b, (b"--" + b.encode() + b'\r\nContent-Disposition: form-data; name="f"'
                                               b"\r\n\r\n" + near * (mb10 // len(near)))
    yield "boundary-like soup in a file part", b, (
        b"--" + b.encode() + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n--' + b.encode()
        + b'\r\nContent-Disposition: form-data; name="file"; filename="soup.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
        + near * (mb10 // len(near)) + b"\r\n--" + b.encode() + b"--\r\n")
    yield "boundary-like soup before the first part", "c" * 70, b"\r\n--" + b"c" * 69 + b"\r\n-" * (mb10 // 3)
    yield "header bytes without end", "a", b"--a\r\nContent-Disposition: form-data; name=\"" + b"n" * mb10
    yield "many short headers", "a", b"--a\r\n" + b"X: 1\r\n" * (mb10 // 6)


def test_hostile_multipart_bodies_are_refused_while_the_event_loop_stays_free(settings) -> None:
    lag = LoopLag(create_app(settings, FakeBackend()))
    with serving(lag, name="hostile-multipart") as url:
        stop, pings = threading.Event(), []

        def poll() -> None:
            with httpx.Client(timeout=10) as h:
                while not stop.is_set():
                    t = time.perf_counter()
                    r = h.get(f"{url}/health")
                    pings.append((t, time.perf_counter() - t, r.status_code))
                    time.sleep(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            report = []
            with httpx.Client(timeout=60) as http:
                http.get(f"{url}/health")
                for name, boundary, body in hostile_bodies():
                    assert len(body) >= 9_000_000
                    started = time.perf_counter()
                    try:
                        r = http.post(f"{url}/v1/files", content=body,
                                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
                        status = r.status_code
                        assert status in (400, 415), f"{name}: {r.status_code} {r.text[:300]}"
                        assert r.json()["error"]["message"], name
                    except httpx.TransportError:  # refused early and the connection closed mid-body: no 5xx
                        status = 0
                    time.sleep(0.05)  # a few ticks and pings after the answer, when a busy loop would show
                    worst = lag.worst_since(started)
                    health = [d for t, d, _ in pings if t >= started]
                    report.append((name, status, time.perf_counter() - started, worst, max(health, default=0)))
                    # Measured quiet: 16-29 ms (the target is 100 ms); unbounded parsing held it 1.8 s. The
                    # bound leaves room for a loaded CI machine and still catches that regression.
                    assert worst < LAG_BOUND_S, f"{name}: the event loop was held {worst * 1000:.0f} ms"
        finally:
            stop.set()
            poller.join(timeout=10)
        for row in report:
            logger.info("%-42s %3d %5.2f s  loop lag %4.0f ms  /health %4.0f ms", row[0], row[1], row[2],
                        row[3] * 1000, row[4] * 1000)
        # Every /health answered; its latency bound is loose (see the module docstring), the loop lag is the test.
        assert pings and all(code == 200 for _, _, code in pings)
        assert max(d for _, d, _ in pings) < 1.0
