"""The shim on a pool of fake tritonservers: /health/ready per endpoint, affinity and round robin of real
requests, failover, and the pool's metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.settings import Settings
from tests.fakes import fake_pool
from tests.frontend.conftest import MODEL, data_url
from video_pipeline.errors import EngineUnavailable


@pytest.fixture
def pool():
    return fake_pool(3)


@pytest.fixture
def pooled(settings: Settings, pool) -> Iterator[TestClient]:
    with TestClient(create_app(settings, pool), raise_server_exceptions=False) as c:
        yield c


def ask(client: TestClient, video: bytes | None = None) -> None:
    content: list[dict] = [{"type": "text", "text": "What happens?"}]
    if video is not None:
        content.insert(0, {"type": "video_url", "video_url": {"url": data_url(video)}})
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text


def served(pool) -> dict[str, int]:
    return {url: len(f.requests) for url, f in pool.fakes.items()}


def test_health_ready_reports_every_endpoint_when_one_of_the_pool_is_down(pooled, pool) -> None:
    pool.fakes["triton-1:8001"].is_ready = False
    r = pooled.get("/health/ready")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ready"
    assert {u: s["state"] for u, s in body["endpoints"].items()} == {
        "triton-0:8001": "up", "triton-1:8001": "down", "triton-2:8001": "up"}
    for fake in pool.fakes.values():
        fake.is_ready = False
    r = pooled.get("/health/ready")
    assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
    assert "triton-0:8001: down" in r.json()["error"]["message"]


def test_chat_sends_one_video_to_one_endpoint_and_text_round_robin_when_asked_repeatedly(pooled, pool) -> None:
    for _ in range(3):
        ask(pooled, b"the same video")
    assert sorted(served(pool).values()) == [0, 0, 3]
    before = served(pool)
    for _ in range(3):
        ask(pooled)
    assert all(n - before[u] == 1 for u, n in served(pool).items())
    text = pooled.get("/metrics").text
    counts = {m[1]: float(m[2]) for m in re.finditer(r'^vlt_triton_requests_total\{endpoint="([^"]+)"\} (\S+)$',
                                                      text, re.M)}
    assert counts == {u: float(n) for u, n in served(pool).items()}
    assert re.search(r"^vlt_triton_endpoints_healthy 3\.0$", text, re.M)


def test_chat_is_answered_by_the_next_endpoint_when_the_preferred_one_is_unavailable(pooled, pool) -> None:
    ask(pooled, b"a video")
    preferred = next(u for u, n in served(pool).items() if n)
    pool.fakes[preferred].generate_error = EngineUnavailable("tritonserver cannot serve the request: gone")
    before = served(pool)
    ask(pooled, b"a video")  # tried there, failed as unavailable, answered by the next in its order
    after = served(pool)
    assert after[preferred] - before[preferred] == 1
    assert sum(after.values()) - sum(before.values()) == 2
    assert pool.endpoint_states()[preferred]["state"] == "down"
