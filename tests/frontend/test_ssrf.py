"""Media URLs through the app's real HTTP client (pinned connections, a fake DNS, a local server):
what may be reached, redirects, timeouts, byte caps, concurrency, and local paths."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.media.fetch import media_client
from tests.fakes import FakeBackend, FakeDns
from tests.frontend.conftest import MODEL

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(100)


def video(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def chat(client: TestClient, *urls: str):
    return client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": [video(u) for u in urls]}]})


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.fixture
def dns() -> FakeDns:
    return FakeDns({"media.test": [["127.0.0.1"]], "media2.test": [["127.0.0.1"]], "internal.test": [["10.1.2.3"]],
                    "meta.test": [["169.254.169.254"]], "mixed.test": [["93.184.216.34", "192.168.0.9"]],
                    "six.test": [["::1"]]})


@pytest.fixture
def make(settings, dns, http_media):
    """``make(**settings changes)`` -> (client, backend): the app with its real media client on ``dns``;
    the local HTTP server is allowed by address and port unless the changes say otherwise."""
    made: list[TestClient] = []

    def build(**changes: object) -> tuple[TestClient, FakeBackend]:
        s = settings.with_(**{"allowed_media_networks": f"127.0.0.1:{http_media.port}", **changes})
        backend = FakeBackend()
        client = TestClient(create_app(s, backend, http=media_client(s, resolver=dns)), raise_server_exceptions=False)
        made.append(client.__enter__())
        return client, backend

    yield build
    for client in made:
        client.__exit__(None, None, None)


# --- addresses ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "needle"), [
    ("http://127.0.0.1:9/v.mp4", "loopback"),
    ("http://[::1]:9/v.mp4", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[::ffff:169.254.169.254]/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
    ("http://100.100.100.200/latest/meta-data/", "metadata"),
    ("http://10.0.0.1/v.mp4", "private"),
    ("http://192.168.1.1/v.mp4", "private"),
    ("http://172.16.5.4/v.mp4", "private"),
    ("http://0.0.0.0:9/v.mp4", "unspecified"),
    ("http://[::ffff:127.0.0.1]:9/v.mp4", "loopback"),
    ("http://[fe80::1]/v.mp4", "link-local"),
    ("http://224.0.0.1/v.mp4", "multicast"),
    ("http://[64:ff9b::a00:1]/v.mp4", "private"),
])
def test_chat_answers_403_when_a_media_url_names_an_internal_address(make, url, needle) -> None:
    client, backend = make(allowed_media_networks="")
    r = chat(client, url)
    assert r.status_code == 403, r.text
    err = error_of(r)
    assert err["code"] == "url_not_allowed" and needle in err["message"] and "VLT_ALLOWED_MEDIA_NETWORKS" in err["message"]
    assert backend.media_calls == []


@pytest.mark.parametrize(("host", "needle"), [
    ("internal.test", "private"), ("meta.test", "metadata"), ("mixed.test", "private"), ("six.test", "loopback"),
])
def test_chat_answers_403_without_naming_the_address_when_a_host_resolves_to_an_internal_one(make, dns, host,
                                                                                           needle) -> None:
    client, _ = make()
    r = chat(client, f"http://{host}/v.mp4")
    assert r.status_code == 403, r.text
    message = error_of(r)["message"]
    assert f"{host}: it resolves to" in message and needle in message
    assert not any(a in message for a in ("10.1.2.3", "169.254.169.254", "192.168.0.9"))


def test_chat_downloads_from_an_internal_server_only_on_the_address_and_port_allowed(make, dns, http_media) -> None:
    http_media.put("ok.mp4", VIDEO)
    client, backend = make()
    r = chat(client, f"http://media.test:{http_media.port}/ok.mp4")
    assert r.status_code == 200, r.text
    assert backend.media_calls[0][0] == [VIDEO]
    assert chat(client, "http://media.test:9/ok.mp4").status_code == 403  # same address, another port


def test_chat_answers_400_when_a_media_host_does_not_resolve(make) -> None:
    client, _ = make()
    r = chat(client, "http://nowhere.test/v.mp4")
    assert r.status_code == 400 and "cannot resolve host 'nowhere.test'" in error_of(r)["message"]


# --- the URL itself --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "url", "status", "needle"), [
    ({"allowed_media_domains": "cdn.example.com"}, "http://media.test/v.mp4", 403, "not an allowed media host"),
    ({"allowed_media_domains": "*.example.com"}, "http://example.com.evil.test/v.mp4", 403, "VLT_ALLOWED_MEDIA_DOMAINS"),
    ({"allowed_media_schemes": "https"}, "http://media.test/v.mp4", 403, "allowed: https"),
    ({}, "http://user:secret@media.test/v.mp4", 400, "credentials"),
    ({}, "http://media.test/" + "a" * 9000, 400, "characters; the limit is 8192"),
    ({}, "http://exa mple.test/v.mp4", 400, "cannot resolve"),
    ({}, "http:///v.mp4", 400, "URL"),
])
def test_chat_refuses_a_media_url_by_its_text_when_the_policy_says_so(make, changes, url, status, needle) -> None:
    client, _ = make(**changes)
    r = chat(client, url)
    assert r.status_code == status, r.text
    assert needle in error_of(r)["message"]


# --- redirects -------------------------------------------------------------------------------------------


def test_chat_answers_400_when_a_media_url_redirects_and_redirects_are_off(make, http_media) -> None:
    http_media.put("final.mp4", VIDEO)
    url = http_media.redirect("moved.mp4", "/final.mp4")
    client, _ = make()
    r = chat(client, url)
    assert r.status_code == 400 and "VLT_FOLLOW_REDIRECTS" in error_of(r)["message"]


def test_chat_follows_a_redirect_to_an_allowed_place_when_redirects_are_on(make, http_media) -> None:
    http_media.put("final2.mp4", VIDEO)
    url = http_media.redirect("moved2.mp4", "/final2.mp4", status=301)
    client, backend = make(follow_redirects=True)
    assert chat(client, url).status_code == 200
    assert backend.media_calls[0][0] == [VIDEO]


@pytest.mark.parametrize(("location", "status", "needle"), [
    ("http://169.254.169.254/latest/meta-data/iam/", 403, "metadata"),
    ("http://127.0.0.1:{other}/v.mp4", 403, "loopback"),
    ("http://internal.test/v.mp4", 403, "private"),
    ("http://[::1]:{port}/v.mp4", 403, "loopback"),
    ("file:///etc/passwd", 403, "file URLs are not allowed"),
    ("gopher://127.0.0.1:6379/_INFO", 403, "gopher URLs are not allowed"),
])
def test_chat_checks_every_redirect_hop_like_the_first_when_redirects_are_on(make, http_media, location, status,
                                                                             needle) -> None:
    from video_pipeline.launch import free_port

    target = location.format(other=free_port(), port=http_media.port)
    url = http_media.redirect(f"hop-{abs(hash(location))}.mp4", target)
    client, _ = make(follow_redirects=True)
    r = chat(client, url)
    assert r.status_code == status, r.text
    assert needle in error_of(r)["message"]


def test_chat_stops_after_the_hop_limit_when_redirects_loop(make, http_media) -> None:
    url = http_media.redirect("loop.mp4", "/loop.mp4")
    client, _ = make(follow_redirects=True, max_redirects=3)
    r = chat(client, url)
    assert r.status_code == 400 and "more than 3 redirects" in error_of(r)["message"]


# --- time and size -------------------------------------------------------------------------------------


def _slow_body(seconds_per_byte: float, nbytes: int):
    def answer(request) -> None:
        request.send_response(200)
        request.send_header("Content-Length", str(nbytes))
        request.end_headers()
        for _ in range(nbytes):
            request.wfile.write(b"x")
            request.wfile.flush()
            time.sleep(seconds_per_byte)

    return answer


def test_chat_answers_400_when_a_media_server_stops_sending(make, http_media) -> None:
    url = http_media.route("stall.mp4", _slow_body(5.0, 2))
    client, _ = make(fetch_timeout_s=0.3)
    started = time.monotonic()
    r = chat(client, url)
    assert r.status_code == 400 and "timed out" in error_of(r)["message"]
    assert time.monotonic() - started < 3


def test_chat_answers_400_when_a_download_trickles_past_the_total_limit(make, http_media) -> None:
    url = http_media.route("trickle.mp4", _slow_body(0.05, 200))  # every read is quick; the whole is not
    client, _ = make(fetch_timeout_s=1.0, fetch_total_timeout_s=0.5)
    started = time.monotonic()
    r = chat(client, url)
    assert r.status_code == 400, r.text
    assert "took longer than 0.5 s" in error_of(r)["message"] and "VLT_FETCH_TOTAL_TIMEOUT_S" in error_of(r)["message"]
    assert time.monotonic() - started < 3


def _chunked(nbytes: int):
    def answer(request) -> None:
        request.protocol_version = "HTTP/1.1"
        request.send_response(200)
        request.send_header("Transfer-Encoding", "chunked")
        request.send_header("Connection", "close")
        request.end_headers()
        for _ in range(0, nbytes, 1000):
            request.wfile.write(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
        request.wfile.write(b"0\r\n\r\n")

    return answer


def test_chat_answers_413_while_streaming_when_a_body_without_length_passes_the_cap(make, http_media) -> None:
    url = http_media.route("endless.mp4", _chunked(50_000))
    client, _ = make(max_media_bytes=4000)
    r = chat(client, url)
    assert r.status_code == 413 and "larger than 4000 bytes" in error_of(r)["message"]


def test_chat_answers_413_at_once_when_the_declared_length_passes_the_cap(make, http_media) -> None:
    url = http_media.put("big.mp4", VIDEO * 100)
    client, _ = make(max_media_bytes=4000)
    r = chat(client, url)
    assert r.status_code == 413 and f"is {len(VIDEO) * 100} bytes; the limit is 4000" in error_of(r)["message"]


def test_chat_answers_413_when_the_media_of_one_request_together_pass_the_request_cap(make, http_media) -> None:
    a, b = http_media.put("half-a.mp4", VIDEO * 10), http_media.put("half-b.mp4", VIDEO * 10)
    client, backend = make(max_request_media_bytes=len(VIDEO) * 15)
    r = chat(client, a, b)
    assert r.status_code == 413, r.text
    assert "VLT_MAX_REQUEST_MEDIA_BYTES" in error_of(r)["message"] and backend.media_calls == []


# --- concurrency -------------------------------------------------------------------------------------------


class Gauge:
    """Counts the requests a route is serving at once."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def route(self, request) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.3)
        with self.lock:
            self.now -= 1
        request.send_response(200)
        request.send_header("Content-Length", str(len(VIDEO)))
        request.end_headers()
        request.wfile.write(VIDEO)


@pytest.mark.parametrize(("changes", "hosts", "most"), [
    ({"fetch_concurrency_per_host": 1}, ["media.test", "media.test", "media.test"], 1),
    ({"fetch_concurrency_per_host": 2}, ["media.test", "media.test", "media.test"], 2),
    ({"fetch_concurrency_per_request": 1}, ["media.test", "media2.test", "127.0.0.1"], 1),
    ({"fetch_concurrency": 1}, ["media.test", "media2.test", "127.0.0.1"], 1),
])
def test_chat_downloads_at_most_the_allowed_number_at_once(make, http_media, changes, hosts, most) -> None:
    gauge = Gauge()
    name = f"gauge-{len(http_media.routes)}.mp4"
    http_media.route(name, gauge.route)
    client, backend = make(**changes)
    r = chat(client, *(f"http://{h}:{http_media.port}/{name}" for h in hosts))
    assert r.status_code == 200, r.text
    assert gauge.most == most


# --- local paths -------------------------------------------------------------------------------------------


@pytest.fixture
def local(settings, media_dir) -> Iterator[TestClient]:
    (media_dir / "clip.mp4").write_bytes(VIDEO)
    (media_dir / "sub").mkdir()
    (media_dir / "sub" / "inner.mp4").write_bytes(VIDEO)
    with TestClient(create_app(settings, FakeBackend()), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("path", ["{dir}/clip.mp4", "clip.mp4", "sub/inner.mp4", "sub/../clip.mp4", "./clip.mp4",
                                  "file://{dir}/sub/inner.mp4", "file://localhost{dir}/clip.mp4"])
def test_chat_reads_a_local_path_when_it_resolves_inside_the_allowed_directory(local, media_dir, path) -> None:
    r = chat(local, path.format(dir=media_dir))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("path", "status", "needle"), [
    ("../secret.mp4", 403, "outside the allowed media directory"),
    ("{dir}/../secret.mp4", 403, "outside"),
    ("file://{dir}/%2e%2e/secret.mp4", 403, "outside"),
    ("/etc/passwd", 403, "outside"),
    ("file:///etc/passwd", 403, "outside"),
    ("link-out.mp4", 403, "outside"),
    ("file://{dir}/clip.mp4%00.txt", 400, "no such file"),
    ("clip.mp4\x00", 400, "no such file"),
    ("fifo.mp4", 400, "not a regular file"),
    ("sub", 400, "not a regular file"),
    ("/dev/zero", 403, "outside"),
    ("missing.mp4", 400, "no such file"),
    ("file://otherhost/clip.mp4", 400, "local path"),
    ("x" * 5000, 400, "no such file"),
])
def test_chat_refuses_a_local_path_when_it_leaves_the_directory_or_is_no_regular_file(local, media_dir, tmp_path,
                                                                                    path, status, needle) -> None:
    (tmp_path / "secret.mp4").write_bytes(VIDEO)
    if not (media_dir / "link-out.mp4").exists():
        (media_dir / "link-out.mp4").symlink_to(tmp_path / "secret.mp4")
        os.mkfifo(media_dir / "fifo.mp4")
    started = time.monotonic()
    r = chat(local, path.format(dir=media_dir))
    assert r.status_code == status, r.text
    assert needle in error_of(r)["message"]
    assert time.monotonic() - started < 5  # a FIFO is never opened (that would block)


def test_chat_answers_403_for_a_bare_path_when_local_media_are_disabled(settings, media_dir) -> None:
    (media_dir / "clip.mp4").write_bytes(VIDEO)
    with TestClient(create_app(settings.with_(allowed_local_media_path=""), FakeBackend())) as client:
        for path in (str(media_dir / "clip.mp4"), "clip.mp4"):
            r = chat(client, path)
            assert r.status_code == 403 and "VLT_ALLOWED_LOCAL_MEDIA_PATH" in error_of(r)["message"]
