"""The bad-input corpus against the real shim and tritonserver: every case gets a clear 4xx in
OpenAI's error shape, the server stays up after each, and good requests still work at the end.

Cases: corrupt, truncated, zero-byte and polyglot files; wrong or lying MIME types; huge
declared resolutions, durations and frame counts; a container with thousands of streams;
budgets; non-UTF-8 and over-long fields; malformed JSON and content parts; SSRF targets
(loopback, link-local metadata, private ranges, names resolving to them, redirects to them,
odd spellings of 127.0.0.1); traversal in paths and file ids. The last test prints the table
of case -> status (shown without -s).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import bad_media
from tests.conftest import ROOT
from tests.videos import ClipSpec, make_video

pytestmark = pytest.mark.e2e

MODEL = "tiny-qwen2-vl"
BROKEN = ROOT / "tests" / "data" / "broken"
SMALL = {"media_io_kwargs": {"video": {"num_frames": 4}}, "mm_processor_kwargs": {"max_pixels": 56 * 56},
         "max_tokens": 2}


@dataclass
class Ctx:
    """What cases need from the session: the shim, the local media server, a folder, a port nobody uses."""

    base: str
    media: Any  # tests.conftest.HttpMedia
    media_dir: Path
    closed_port: int
    client: httpx.Client


@dataclass
class Request:
    method: str
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Ctx], Request]
    status: int | tuple[int, ...]
    needle: str = ""  # must appear in the error message


CASES: list[Case] = []


def add(name: str, build: Callable[[Ctx], Request], status: int | tuple[int, ...], needle: str = "") -> None:
    CASES.append(Case(name, build, status, needle))


def chat(*parts: dict, **extra: Any) -> Request:
    body = {"model": MODEL, "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "?"}]}],
            **SMALL, **extra}
    return Request("POST", "/v1/chat/completions", {"json": body})


def raw(body: bytes, path: str = "/v1/chat/completions", content_type: str = "application/json") -> Request:
    return Request("POST", path, {"content": body, "headers": {"content-type": content_type}})


def video(url: str, **extra: Any) -> dict:
    return {"type": "video_url", "video_url": {"url": url}, **extra}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def data_url(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def clip() -> bytes:
    return make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10))


# --- files: corrupt, truncated, zero-byte, not video, polyglot --------------------------------------------

for name, status in [("zero.mp4", 400), ("truncated_half.mp4", 400), ("truncated_1k.mp4", 400),
                     ("header_only.mkv", 400), ("garbage.webm", 400), ("html_as.mp4", 400), ("elf_as.mp4", 400),
                     ("png_as.mp4", 415), ("audio_only.m4a", 415), ("audio_only.wav", 415)]:
    add(f"file: {name}", lambda ctx, n=name: chat(video(data_url((BROKEN / n).read_bytes()))), status)
add("file: pdf+mp4 polyglot", lambda ctx: chat(video(data_url(bad_media.pdf_mp4_polyglot()))), (400, 415))
add("file: gif/js polyglot as image", lambda ctx: chat(image(data_url(bad_media.gif_js_polyglot(), "image/gif"))),
    400, "not a decodable image")
add("file: jpeg/html polyglot as image",
    lambda ctx: chat(image(data_url(bad_media.jpeg_html_polyglot(), "image/jpeg"))), 400, "not a decodable image")
add("file: truncated mp4 over http", lambda ctx: chat(video(ctx.media.put(
    "trunc.mp4", (BROKEN / "truncated_half.mp4").read_bytes()))), 400)
add("file: html page over http (200)", lambda ctx: chat(video(ctx.media.put("page.mp4", b"<html>hi</html>"))), 400)
add("file: empty body over http", lambda ctx: chat(video(ctx.media.put("empty.mp4", b""))), 400, "empty")

# --- MIME types that are wrong or lie -------------------------------------------------------------------

add("mime: video as image/png", lambda ctx: chat(image(data_url(clip(), "image/png"))), 415, "a video")
add("mime: text/html video", lambda ctx: chat(video(data_url(clip(), "text/html"))), 415, "video/*")
add("mime: application/octet-stream", lambda ctx: chat(video(data_url(clip(), "application/octet-stream"))), 415)
add("mime: video/x-unknown", lambda ctx: chat(video(data_url(clip(), "video/x-unknown"))), 415)
add("mime: jpeg bytes as video/webm", lambda ctx: chat(video(data_url(bad_media._jpeg16(), "video/webm"))), 415,
    "still image")
add("mime: image/svg+xml", lambda ctx: chat(image(data_url(b"<svg/>", "image/svg+xml"))), 415)
add("mime: html as image/png", lambda ctx: chat(image(data_url(b"<html></html>", "image/png"))), 415)
add("data url: not base64", lambda ctx: chat(video("data:video/mp4;base64,@@@@")), 400, "base64")
add("data url: base64 with whitespace", lambda ctx: chat(video("data:video/mp4;base64,AAAA AAAA")), 400, "base64")
add("data url: no ;base64", lambda ctx: chat(video("data:video/mp4,raw-bytes")), 400)

# --- declared sizes, durations, counts, streams ---------------------------------------------------------

add("huge: png declaring 60000x60000", lambda ctx: chat(image(data_url(bad_media.png_header(60000, 60000),
                                                                        "image/png"))), 413)
add("huge: png declaring 6000x6000", lambda ctx: chat(image(data_url(bad_media.png_header(6000, 6000), "image/png"))),
    413, "36000000 pixels")
add("huge: video 6000x6000 frames", lambda ctx: chat(video(data_url(make_video(
    ClipSpec(width=6000, height=6000, num_frames=1, fps=1))))), 413, "VLT_MAX_FRAME_PIXELS")
add("huge: video 8200 px wide", lambda ctx: chat(video(data_url(make_video(
    ClipSpec(width=8200, height=16, num_frames=2, fps=1))))), 413, "8200x16")
add("huge: mkv declaring 31 years", lambda ctx: chat(video(data_url(bad_media.mkv(duration_ms=1e12, frames=3),
                                                                    "video/x-matroska"))), 413, "the video lasts")
add("huge: mp4 declaring 3M frames", lambda ctx: chat(video(data_url(bad_media.mp4_declaring_frames(3_000_000)))),
    413, "3000000 frames")
add("huge: 1000 streams", lambda ctx: chat(video(data_url(bad_media.many_streams(1000), "video/x-matroska"))), 413,
    "streams")
add("huge: 3000 tracks declared", lambda ctx: chat(video(data_url(bad_media.mkv(tracks=3000),
                                                                  "video/x-matroska"))), 413, "streams")
add("huge: mkv declaring 60000x60000", lambda ctx: chat(video(data_url(bad_media.mkv(
    width=60000, height=60000, codec="V_MPEG4/ISO/AVC"), "video/x-matroska"))), (400, 413, 415))

# --- budgets and options -----------------------------------------------------------------------------------

add("budget: 100000 frames asked", lambda ctx: chat(video(data_url(clip())), media_io_kwargs={
    "video": {"num_frames": 100000}}), 413, "VLT_MAX_VIDEO_FRAMES")
add("budget: video tokens over the context", lambda ctx: chat(video(data_url(make_video(
    ClipSpec(width=160, height=120, fps=10, num_frames=600, gop=50)))), media_io_kwargs={
    "video": {"fps": 10, "max_frames": 2048}}, mm_processor_kwargs={"min_pixels": 50176}), 400, "context")
add("budget: 5 videos", lambda ctx: chat(*[video(data_url(clip()))] * 5), 400, "at most 4")
add("budget: 5 images", lambda ctx: chat(*[image(data_url(bad_media._jpeg16(), "image/jpeg"))] * 5), 400, "at most 4")
add("option: fps -1", lambda ctx: chat(video(data_url(clip())), media_io_kwargs={"video": {"fps": -1}}), 400, "fps")
add("option: fps as text", lambda ctx: chat(video(data_url(clip())), media_io_kwargs={"video": {"fps": "fast"}}),
    400, "fps")
add("option: num_frames 1e308", lambda ctx: chat(video(data_url(clip())), media_io_kwargs={
    "video": {"num_frames": 1e308}}), (400, 413))
add("option: end before start", lambda ctx: chat(video(data_url(clip()), start=3, end=1)), 400, "end")
add("option: window after the end", lambda ctx: chat(video(data_url(clip()), start=100, end=200)), 400, "no frames")
add("option: unknown media_io key", lambda ctx: chat(video(data_url(clip())), media_io_kwargs={"audio": {}}), 400)
add("option: max_pixels 0", lambda ctx: chat(video(data_url(clip())), mm_processor_kwargs={"max_pixels": 0}), 400)

# --- JSON and content parts -------------------------------------------------------------------------------

add("json: not json", lambda ctx: raw(b"{not json"), 400, "not valid JSON")
add("json: empty body", lambda ctx: raw(b""), 400)
add("json: truncated", lambda ctx: raw(b'{"model": "tiny-qwen2-vl", "messages": [{"role": "us'), 400)
add("json: an array", lambda ctx: raw(b"[1, 2, 3]"), 400, "JSON object")
add("json: nested 100000 deep", lambda ctx: raw(b'{"model": "x", "messages": ' + b"[" * 100000 + b"]" * 100000
                                               + b"}"), 400, "nested too deeply")
add("json: invalid utf-8 bytes", lambda ctx: raw(b'{"model": "tiny-qwen2-vl", "messages": [{"role": "user", '
                                                 b'"content": "caf\xe9 \xff\xfe"}]}'), 400)
add("json: lone surrogate escape", lambda ctx: raw(b'{"model": "tiny-qwen2-vl", "messages": [{"role": "user", '
                                                   b'"content": "\\ud800"}]}'), 400, "Unicode")
add("json: surrogate bytes (CESU-8)", lambda ctx: raw(b'{"model": "tiny-qwen2-vl", "messages": [{"role": "user", '
                                                      b'"content": "\xed\xa0\x80"}]}'), 400, "Unicode")
add("json: NaN temperature", lambda ctx: raw(b'{"model": "tiny-qwen2-vl", "temperature": NaN, "messages": '
                                             b'[{"role": "user", "content": "hi"}]}'), 400, "temperature")
add("json: 1e400 max_tokens", lambda ctx: raw(b'{"model": "tiny-qwen2-vl", "max_tokens": 1e400, "messages": '
                                              b'[{"role": "user", "content": "hi"}]}'), 400, "max_tokens")
add("json: 5000-digit integer", lambda ctx: raw(b'{"model": "tiny-qwen2-vl", "seed": ' + b"9" * 5000 + b"}"), 400)
add("json: form content type", lambda ctx: raw(b"a=b", content_type="application/x-www-form-urlencoded"), 400)
add("json: multipart without payload", lambda ctx: Request("POST", "/v1/chat/completions", {
    "files": {"clip": ("c.mp4", b"x", "video/mp4")}}), 400, "payload")
add("json: multipart payload not json", lambda ctx: Request("POST", "/v1/chat/completions", {
    "data": {"payload": "{nope"}, "files": {"clip": ("c.mp4", b"x", "video/mp4")}}), 400, "payload")
add("part: messages empty", lambda ctx: raw(json.dumps({"model": MODEL, "messages": []}).encode()), 400, "messages")
add("part: messages not a list", lambda ctx: raw(json.dumps({"model": MODEL, "messages": "hi"}).encode()), 400)
add("part: unknown role", lambda ctx: raw(json.dumps({"model": MODEL, "messages": [
    {"role": "robot", "content": "hi"}]}).encode()), 400, "role")
add("part: content part a number", lambda ctx: raw(json.dumps({"model": MODEL, "messages": [
    {"role": "user", "content": [42]}]}).encode()), 400, "content")
add("part: unknown part type", lambda ctx: raw(json.dumps({"model": MODEL, "messages": [
    {"role": "user", "content": [{"type": "hologram_url", "hologram_url": {"url": "x"}}]}]}).encode()), 400,
    "hologram_url")
add("part: video_url without url", lambda ctx: chat({"type": "video_url", "video_url": {}}), 400, "url")
add("part: video url a number", lambda ctx: chat({"type": "video_url", "video_url": {"url": 7}}), 400)
add("part: video url empty", lambda ctx: chat(video("")), 400)
add("part: unknown top-level field", lambda ctx: chat(video(data_url(clip())), frobnicate=True), 400, "frobnicate")
add("part: stream_options without stream", lambda ctx: chat(stream_options={"include_usage": True}), 400)
add("part: unknown model (1 MB name)", lambda ctx: raw(json.dumps({"model": "m" * 1_000_000, "messages": [
    {"role": "user", "content": "hi"}]}).encode()), 404, "does not exist")
add("part: text over the context (300 KB)", lambda ctx: chat(max_tokens=2, messages=[
    {"role": "user", "content": "lorem ipsum " * 25_000}]), 400)
add("part: url of 10000 characters", lambda ctx: chat(video("http://127.0.0.1/" + "a" * 10000)), 400, "8192")
add("responses: input a number", lambda ctx: raw(json.dumps({"model": MODEL, "input": 3}).encode(), "/v1/responses"),
    400)
add("responses: input_video to metadata IP", lambda ctx: Request("POST", "/v1/responses", {"json": {
    "model": MODEL, "input": [{"role": "user", "content": [
        {"type": "input_video", "video_url": "http://169.254.169.254/latest/meta-data/"}]}]}}), 403, "metadata")

# --- audio (the session's tiny Qwen2-VL has no feature extractor: every audio part is refused by name) ---


def audio(data: bytes = b"RIFF", fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


add("audio: input_audio to a model without audio", lambda ctx: chat(audio(bad_media.wav_tone())), 400,
    "takes no audio")
add("audio: audio_url to a model without audio", lambda ctx: chat(
    {"type": "audio_url", "audio_url": {"url": data_url(bad_media.wav_tone(), "audio/wav")}}), 400, "takes no audio")
add("audio: not audio, to a model without audio", lambda ctx: chat(audio(b"<html>" * 50)), 400, "takes no audio")
add("audio: unknown input_audio format", lambda ctx: chat(audio(fmt="midi")), 400, "format")
add("audio: input_audio without data", lambda ctx: chat({"type": "input_audio", "input_audio": {"format": "wav"}}),
    400, "data")
add("audio: use_audio_in_video on a model without audio", lambda ctx: chat(
    video(data_url(make_video(ClipSpec(width=160, height=120, fps=10, num_frames=20, gop=10, audio="aac")))),
    mm_processor_kwargs={"use_audio_in_video": True}), 400, "use_audio_in_video")
add("audio: use_audio_in_video not a bool", lambda ctx: chat(video(data_url(clip())),
                                                             mm_processor_kwargs={"use_audio_in_video": "yes"}), 400)
# --- image_embeds (off on the session's stack: enable_mm_embeds is not in the repository's model.json) ---
add("embeds: image_embeds while the server has them off", lambda ctx: chat(
    {"type": "image_embeds", "image_embeds": {"image_embeds": "AAAA", "image_grid_thw": [1, 2, 2]}}), 400,
    "enable_mm_embeds")
add("embeds: image_embeds part without a payload or uuid", lambda ctx: chat({"type": "image_embeds"}), 400,
    "required")
add("embeds: image_embeds object without its image_embeds key", lambda ctx: chat(
    {"type": "image_embeds", "image_embeds": {"image_grid_thw": [1, 2, 2]}}), 400, "image_embeds: required")
add("embeds: image_embeds of a wrong type", lambda ctx: chat({"type": "image_embeds", "image_embeds": 12}), 400)
add("responses: input_audio to a model without audio", lambda ctx: Request("POST", "/v1/responses", {"json": {
    "model": MODEL, "input": [{"role": "user", "content": [audio(bad_media.wav_tone())]}]}}), 400, "takes no audio")

# --- SSRF ---------------------------------------------------------------------------------------------------

add("ssrf: 127.0.0.1 (another port)", lambda ctx: chat(video(f"http://127.0.0.1:{ctx.closed_port}/v.mp4")), 403,
    "loopback")
add("ssrf: [::1]", lambda ctx: chat(video(f"http://[::1]:{ctx.media.port}/v.mp4")), 403, "loopback")
add("ssrf: 169.254.169.254 metadata", lambda ctx: chat(video("http://169.254.169.254/latest/meta-data/")), 403,
    "metadata")
add("ssrf: [fd00:ec2::254] metadata v6", lambda ctx: chat(video("http://[fd00:ec2::254]/latest/meta-data/")), 403,
    "metadata")
add("ssrf: 10.0.0.1", lambda ctx: chat(video("http://10.0.0.1/v.mp4")), 403, "private")
add("ssrf: 10.255.255.1:8080", lambda ctx: chat(video("http://10.255.255.1:8080/v.mp4")), 403, "private")
add("ssrf: 192.168.0.1", lambda ctx: chat(video("https://192.168.0.1/v.mp4")), 403, "private")
add("ssrf: 0.0.0.0", lambda ctx: chat(video(f"http://0.0.0.0:{ctx.media.port}/v.mp4")), 403)
add("ssrf: [::ffff:127.0.0.1]", lambda ctx: chat(video(f"http://[::ffff:127.0.0.1]:{ctx.media.port}/v.mp4")), 403,
    "IPv4-mapped")
add("ssrf: localhost resolves to loopback", lambda ctx: chat(video(f"http://localhost:{ctx.closed_port}/v.mp4")),
    403, "resolves to loopback")
add("ssrf: 2130706433 (decimal 127.0.0.1)", lambda ctx: chat(video(f"http://2130706433:{ctx.closed_port}/v.mp4")),
    (400, 403))
add("ssrf: 127.1 (short form)", lambda ctx: chat(video(f"http://127.1:{ctx.closed_port}/v.mp4")), (400, 403))
add("ssrf: 0x7f.0.0.1 (hex)", lambda ctx: chat(video(f"http://0x7f.0.0.1:{ctx.closed_port}/v.mp4")), (400, 403))
add("ssrf: redirect to metadata", lambda ctx: chat(video(ctx.media.redirect(
    "r-meta.mp4", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"))), 403, "metadata")
add("ssrf: redirect to another loopback port", lambda ctx: chat(video(ctx.media.redirect(
    "r-port.mp4", f"http://127.0.0.1:{ctx.closed_port}/v.mp4"))), 403, "loopback")
add("ssrf: redirect to localhost", lambda ctx: chat(video(ctx.media.redirect(
    "r-localhost.mp4", f"http://localhost:{ctx.closed_port}/v.mp4"))), 403, "loopback")
add("ssrf: redirect to 10/8", lambda ctx: chat(video(ctx.media.redirect("r-10.mp4", "http://10.1.1.1/v.mp4"))), 403,
    "private")
add("ssrf: redirect to file://", lambda ctx: chat(video(ctx.media.redirect("r-file.mp4", "file:///etc/passwd"))),
    403, "file URLs are not allowed")
add("ssrf: redirect loop", lambda ctx: chat(video(ctx.media.redirect("r-loop.mp4", "/r-loop.mp4"))), 400,
    "redirects")
add("ssrf: credentials in url", lambda ctx: chat(video(f"http://user:pw@127.0.0.1:{ctx.media.port}/v.mp4")), 400,
    "credentials")
add("ssrf: gopher://", lambda ctx: chat(video("gopher://127.0.0.1:6379/_INFO")), 400, "scheme")
add("ssrf: ftp://", lambda ctx: chat(video("ftp://127.0.0.1/v.mp4")), 400, "scheme")
add("ssrf: dict://", lambda ctx: chat(video("dict://127.0.0.1:11211/stat")), 400, "scheme")
add("ssrf: 404 from the media server", lambda ctx: chat(video(ctx.media.url("nothing-here.mp4"))), 400, "HTTP 404")

# --- paths and file ids --------------------------------------------------------------------------------------

add("path: file:///etc/passwd", lambda ctx: chat(video("file:///etc/passwd")), 403, "outside")
add("path: ../ out of the media dir", lambda ctx: chat(video(f"file://{ctx.media_dir}/{'../' * 12}etc/passwd")), 403,
    "outside")
add("path: %2e%2e out of the media dir", lambda ctx: chat(video(
    f"file://{ctx.media_dir}/{'%2e%2e/' * 12}etc/passwd")), 403, "outside")
add("path: bare /etc/shadow", lambda ctx: chat(video("/etc/shadow")), 403, "outside")
add("path: bare ../../etc/passwd", lambda ctx: chat(video("../../../../etc/passwd")), 403, "outside")
add("path: NUL in the path", lambda ctx: chat(video(f"file://{ctx.media_dir}/a.mp4%00.txt")), 400)
add("path: symlink to /etc/passwd", lambda ctx: chat(video(f"file://{ctx.media_dir}/passwd-link.mp4")), 403,
    "outside")
add("path: /dev/zero", lambda ctx: chat(video("file:///dev/zero")), 403, "outside")
add("path: a directory", lambda ctx: chat(video(f"file://{ctx.media_dir}")), 400, "regular file")
add("path: file://host/share", lambda ctx: chat(video("file://fileserver/share/v.mp4")), 400, "local path")
add("file id: file-../../etc/passwd", lambda ctx: chat(video("file-../../../etc/passwd")), 404, "no such file")
add("file id: file-id://../x", lambda ctx: chat(video("file-id://../../x")), 404, "no such file")
add("file id: form:// outside multipart", lambda ctx: chat(video("form://../../etc/passwd")), 400, "file part")
add("file id: GET /v1/files/..%2F..%2Fetc", lambda ctx: Request("GET", "/v1/files/..%2F..%2Fetc%2Fpasswd"), 404)
add("file id: content of a traversal id", lambda ctx: Request("GET", "/v1/files/file-..%2F..%2Fx/content"), 404)
add("file id: DELETE /v1/files/..", lambda ctx: Request("DELETE", "/v1/files/.."), (404, 405))
add("upload: filename ../../evil.mp4", lambda ctx: Request("POST", "/v1/files", {
    "data": {"purpose": "vision"}, "files": {"file": ("../../evil.mp4", clip(), "video/mp4")}}), 400, "filename")
add("upload: filename with NUL (raw multipart)", lambda ctx: raw(
    b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n--b\r\nContent-Disposition: form-data; '
    b'name="file"; filename="a\x00.mp4"\r\nContent-Type: video/mp4\r\n\r\n' + clip() + b"\r\n--b--\r\n",
    "/v1/files", "multipart/form-data; boundary=b"), 400, "filename")


def upload_form(disposition: bytes, boundary: bytes = b"b") -> bytes:
    """A /v1/files body whose file part has the Content-Disposition ``disposition``."""
    return (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n--' + boundary
            + b"\r\nContent-Disposition: " + disposition + b"\r\nContent-Type: video/mp4\r\n\r\n" + clip()
            + b"\r\n--" + boundary + b"--\r\n")


# Issue 19: hostile multipart, every dimension bounded and named; filenames kept exactly or refused.
add("multipart: 5000-char boundary", lambda ctx: raw(upload_form(b'form-data; name="file"; filename="a.mp4"',
                                                                 b"x" * 5000),
                                                     "/v1/files", "multipart/form-data; boundary=" + "x" * 5000),
    400, "RFC 2046")
add("multipart: 71-char boundary (chat)", lambda ctx: raw(b"--" + b"x" * 71 + b"--\r\n", "/v1/chat/completions",
                                                          "multipart/form-data; boundary=" + "x" * 71), 400, "70")
add("multipart: boundary with a quote", lambda ctx: raw(b"--a--\r\n", "/v1/files",
                                                        'multipart/form-data; boundary="a\\"b"'), 400, "RFC 2046")
add("multipart: 1 MB of tiny parts", lambda ctx: raw(b"".join(
    b'--a\r\nContent-Disposition: form-data; name="n%d"\r\n\r\nx\r\n' % i for i in range(20_000)), "/v1/files",
    "multipart/form-data; boundary=a"), 400, "parts")
add("multipart: 10 KB header line", lambda ctx: raw(b'--a\r\nContent-Disposition: form-data; name="n"\r\nX: '
                                                    + b"h" * 10_000 + b"\r\n\r\nx\r\n--a--\r\n", "/v1/files",
                                                    "multipart/form-data; boundary=a"), 400, "header line")
add("multipart: part without a name", lambda ctx: raw(b"--a\r\nContent-Disposition: form-data\r\n\r\nx\r\n--a--\r\n",
                                                      "/v1/files", "multipart/form-data; boundary=a"), 400, "name")
add("multipart: 100 KB text field", lambda ctx: raw(b'--a\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
                                                    + b"v" * 100_000 + b"\r\n--a--\r\n", "/v1/files",
                                                    "multipart/form-data; boundary=a"), 400, "65536")
add("upload: filename quote then CRLF", lambda ctx: raw(upload_form(b'form-data; name="file"; filename="\\"a.mp4'),
                                                        "/v1/files", "multipart/form-data; boundary=b"), 400, "filename")
add("upload: filename* with CRLF", lambda ctx: raw(upload_form(b"form-data; name=\"file\"; filename*=UTF-8''a%0D%0A.mp4"),
                                                   "/v1/files", "multipart/form-data; boundary=b"), 400, "control")
add("upload: filename with ESC", lambda ctx: raw(upload_form(b'form-data; name="file"; filename="a\x1b[2J.mp4"'),
                                                 "/v1/files", "multipart/form-data; boundary=b"), 400, "control")
add("upload: filename not UTF-8", lambda ctx: raw(upload_form(b'form-data; name="file"; filename="\xff.mp4"'),
                                                  "/v1/files", "multipart/form-data; boundary=b"), 400, "UTF-8")
add("upload: filename C:\\dir\\a.mp4", lambda ctx: raw(upload_form(b'form-data; name="file"; filename="C:\\dir\\a.mp4"'),
                                                      "/v1/files", "multipart/form-data; boundary=b"), 400, "filename")
add("path: missing file outside (no oracle)", lambda ctx: chat(video("/etc/no-such-file.mp4")), 403, "outside")
add("upload: html named .mp4", lambda ctx: Request("POST", "/v1/files", {
    "data": {"purpose": "vision"}, "files": {"file": ("x.mp4", b"<html></html>", "video/mp4")}}), 415)
add("upload: zero bytes", lambda ctx: Request("POST", "/v1/files", {
    "data": {"purpose": "vision"}, "files": {"file": ("x.mp4", b"", "video/mp4")}}), 400)

# --- vLLM's shapes: media uuids, vllm-file:// ids ---------------------------------------------------------

add("uuid: video uuid never sent", lambda ctx: chat({"type": "video_url", "uuid": "never-sent-v"}), 400,
    "'never-sent-v'")
add("uuid: image uuid never sent", lambda ctx: chat({"type": "image_url", "image_url": None,
                                                     "uuid": "never-sent-i"}), 400, "'never-sent-i'")
add("uuid: empty", lambda ctx: chat(video(data_url(clip()), uuid="")), 400, "uuid")
add("uuid: 10k characters", lambda ctx: chat({"type": "video_url", "uuid": "u" * 10_000}), 400, "uuid")
add("uuid: not a string", lambda ctx: chat({"type": "video_url", "uuid": {"a": 1}}), 400)
add("uuid: no media and no uuid", lambda ctx: chat({"type": "video_url", "video_url": None}), 400, "required")
add("vllm-file: empty id", lambda ctx: chat(video("vllm-file://")), 400, "vllm-file://<file id>")
add("vllm-file: traversal", lambda ctx: chat(video("vllm-file://file-a/../../etc/passwd")), 400, "vllm-file")
add("vllm-file: query", lambda ctx: chat(image("vllm-file://file-abc?x=1")), 400, "vllm-file")
add("vllm-file: not a file id", lambda ctx: chat(video("vllm-file:///etc/passwd")), 400, "vllm-file")
add("vllm-file: unknown id", lambda ctx: chat(video("vllm-file://file-doesnotexist")), 404, "no such file")


RESULTS: dict[str, tuple[int, float, str]] = {}


@pytest.fixture(scope="module")
def ctx(shim, http_media) -> Iterator[Ctx]:
    from video_pipeline.launch import free_port

    link = shim.media_dir / "passwd-link.mp4"
    if not link.exists():
        link.symlink_to("/etc/passwd")
    with httpx.Client(base_url=shim.base_url, timeout=120) as client:
        yield Ctx(shim.base_url, http_media, shim.media_dir, free_port(), client)


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_a_clear_4xx_and_the_server_stays_up(ctx: Ctx, c: Case) -> None:
    request = c.build(ctx)
    started = time.monotonic()
    r = ctx.client.request(request.method, request.path, **request.kwargs)
    elapsed = time.monotonic() - started
    message = ""
    try:
        body = r.json()
        message = body["error"]["message"]
    except (ValueError, KeyError, TypeError):
        body = None
    RESULTS[c.name] = (r.status_code, elapsed, message)
    expected = c.status if isinstance(c.status, tuple) else (c.status,)
    assert r.status_code in expected, f"{c.name}: {r.status_code} {r.text[:300]}"
    assert body is not None and set(body) == {"error"}, r.text[:300]
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["type"] == "invalid_request_error"
    assert c.needle in message, f"{c.name}: {message}"
    assert ctx.client.get("/health").status_code == 200  # still up


def test_zz_good_requests_still_work_after_the_corpus_and_the_table_is_printed(ctx: Ctx, capsys) -> None:
    assert len(CASES) >= 60
    ok = ctx.client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": [
        video(ctx.media.put("corpus-good.mp4", clip())), {"type": "text", "text": "What happens?"}]}], **SMALL})
    assert ok.status_code == 200, ok.text
    assert ok.json()["usage"]["prompt_tokens_details"]["video_tokens"] > 0
    assert ctx.client.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 2, "messages": [
        {"role": "user", "content": "Hi"}]}).status_code == 200
    width = max(len(c.name) for c in CASES)
    lines = [f"{'case':<{width}}  status   time  message", f"{'-' * width}  ------  -----  -------"]
    for c in CASES:
        status, elapsed, message = RESULTS.get(c.name, (0, 0.0, "(not run)"))
        lines.append(f"{c.name:<{width}}  {status:>6}  {elapsed:5.2f}  {message[:90]}")
    counts: dict[int, int] = {}
    for status, _, _ in RESULTS.values():
        counts[status] = counts.get(status, 0) + 1
    lines.append(f"{len(RESULTS)} cases: " + ", ".join(f"{n} x {s}" for s, n in sorted(counts.items())))
    with capsys.disabled():
        print("\n\nbad-input corpus (case -> status)\n" + "\n".join(lines))
    report = os.environ.get("VLT_CORPUS_REPORT")
    if report:
        Path(report).write_text("\n".join(lines) + "\n")
