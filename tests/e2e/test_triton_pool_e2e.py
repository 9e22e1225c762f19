"""The shim on a pool of two tritonservers, one of them dead (a free port, nothing listening) and the other
the session's real one: every request is answered, /health/ready reports the dead one down, and a video
asked about again goes to the same live endpoint, also when the dead one was preferred and not yet known
to be down (a real gRPC UNAVAILABLE, failed over)."""

from __future__ import annotations

import base64
import re

import httpx
import pytest

from openai_frontend.app import create_app
from openai_frontend.backend.pool import UNKNOWN, TritonPool, affinity_key
from openai_frontend.settings import Settings
from tests.conftest import MODEL_REPOSITORY
from tests.servers import serving
from tests.videos import ClipSpec, make_video
from video_pipeline.launch import free_port

pytestmark = pytest.mark.e2e

SMALL = {"media_io_kwargs": {"video": {"num_frames": 4}}, "mm_processor_kwargs": {"max_pixels": 112 * 112},
         "max_tokens": 4, "temperature": 0}


async def _prefers(pool: TritonPool, video: bytes, url: str) -> bool:
    return pool.order(await affinity_key([video], [{}], []))[0].url == url


def _requests_by_endpoint(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return {m[1]: float(m[2]) for m in re.finditer(r'^vlt_triton_requests_total\{endpoint="([^"]+)"\} (\S+)$',
                                                    text, re.M)}


def test_pool_answers_every_request_and_keeps_a_video_on_the_live_endpoint_when_one_endpoint_is_dead(
        triton, tmp_path) -> None:
    import asyncio

    import openai

    dead, live = f"127.0.0.1:{free_port()}", triton.grpc_url
    # The probes would find the dead one at once; a long interval leaves the test to say when it is unknown.
    pool = TritonPool.connect([dead, live], timeout_s=120, interval_s=3600)
    # A clip whose rendezvous order puts the dead endpoint first, so its requests must fail over.
    video = next(v for v in (make_video(ClipSpec(width=160, height=120, fps=10, num_frames=20 + i, gop=10))
                             for i in range(40)) if asyncio.run(_prefers(pool, v, dead)))
    url = f"data:video/mp4;base64,{base64.b64encode(video).decode()}"
    settings = Settings(model_repository=str(MODEL_REPOSITORY), port=free_port(), files_dir=str(tmp_path / "files"),
                        triton_url=f"{dead},{live}")
    with serving(create_app(settings, pool), settings.port, "pooled-shim") as base_url:
        ready = httpx.get(f"{base_url}/health/ready", timeout=30)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready"
        assert body["endpoints"][live]["state"] == "up"
        assert body["endpoints"][dead]["state"] == "down" and body["endpoints"][dead]["error"]

        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=300)
        model = client.models.list().data[0].id
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                 {"type": "text", "text": "What happens in the video?"}]}]

        pool.endpoints[0].state = UNKNOWN  # as before its first probe: tried, refused, failed over
        first = client.chat.completions.create(model=model, messages=messages, extra_body=SMALL)
        assert first.choices[0].message.content is not None and first.usage.prompt_tokens > 0
        assert pool.endpoint_states()[dead]["state"] == "down"
        assert _requests_by_endpoint(base_url) == {dead: 1.0, live: 1.0}

        answers = [client.chat.completions.create(model=model, messages=messages, extra_body=SMALL)
                   for _ in range(2)]
        assert all(a.choices[0].message.content == first.choices[0].message.content for a in answers)
        text = client.chat.completions.create(model=model, extra_body={"max_tokens": 4},
                                              messages=[{"role": "user", "content": "Say hi"}])
        assert text.choices[0].finish_reason in ("stop", "length")
        stream = client.chat.completions.create(model=model, messages=messages, extra_body=SMALL, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == first.choices[0].message.content
        assert _requests_by_endpoint(base_url) == {dead: 1.0, live: 5.0}  # the dead one is down: skipped
        metrics = httpx.get(f"{base_url}/metrics", timeout=10).text
        assert re.search(r"^vlt_triton_endpoints_healthy 1\.0$", metrics, re.M)
