"""The pool of tritonservers (openai_frontend.backend.pool) on fake endpoints: affinity, rendezvous
movement, failover, round robin, abort routing, readiness; and the triton_url list setting."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from contextlib import aclosing

import pytest

from openai_frontend.backend.base import LlmRequest
from openai_frontend.backend.pool import TritonPool, affinity_key, backend_for, rendezvous_order
from openai_frontend.backend.triton import TritonBackend
from openai_frontend.settings import Settings
from tests.fakes import FakeBackend, fake_pool
from video_pipeline import contract as C
from video_pipeline.errors import EngineUnavailable

TEXT = [{"role": "user", "content": "Hi"}]
VIDEO_MSG = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]


def video_request(video: bytes, rid: str = "r", **options: object) -> LlmRequest:
    return LlmRequest(rid, VIDEO_MSG, {"max_tokens": 4}, stream=True, videos=[video], video_options=[dict(options)])


def text_request(rid: str = "t") -> LlmRequest:
    return LlmRequest(rid, TEXT, {"max_tokens": 4}, stream=True)


async def run(pool: TritonPool, request: LlmRequest) -> str:
    """The text of ``request`` through ``pool``, and the URL of the endpoint that answered it."""
    before = {url: len(f.requests) for url, f in pool.fakes.items()}  # type: ignore[attr-defined]
    async with aclosing(pool.generate(request)) as deltas:
        async for _ in deltas:
            pass
    served = [url for url, f in pool.fakes.items() if len(f.requests) > before[url]  # type: ignore[attr-defined]
              and f.requests[-1] is request and f.generate_error is None]
    assert len(served) == 1, served
    return served[0]


def test_pool_sends_a_video_to_the_same_endpoint_when_it_is_asked_again() -> None:
    async def main() -> None:
        pool = fake_pool(3)
        where = {}
        for i in range(30):
            video = f"video {i}".encode()
            seen = {await run(pool, video_request(video, f"r{i}-{k}")) for k in range(3)}
            assert len(seen) == 1, f"video {i} went to {seen}"
            where[i] = seen.pop()
            assert where[i] == pool.order(await affinity_key([video], [{}], []))[0].url
        assert len(set(where.values())) == 3  # 30 videos spread over all three
        await pool.close()

    asyncio.run(main())


def test_rendezvous_order_moves_only_the_lost_share_when_an_endpoint_is_removed_or_added() -> None:
    urls = [f"triton-{i}:8001" for i in range(4)]
    keys = [f"sha256:{hashlib.sha256(str(i).encode()).hexdigest()}" for i in range(2000)]
    first = {k: rendezvous_order(urls, k)[0] for k in keys}
    shares = Counter(first.values())
    assert all(350 < shares[u] < 650 for u in urls), shares  # about a quarter each

    lost = urls[2]
    after = {k: rendezvous_order([u for u in urls if u != lost], k)[0] for k in keys}
    moved = [k for k in keys if after[k] != first[k]]
    assert all(first[k] == lost for k in moved) and len(moved) == shares[lost]
    assert all(after[k] == rendezvous_order(urls, k)[1] for k in moved)  # to the next in each key's order

    grown = {k: rendezvous_order([*urls, "triton-4:8001"], k)[0] for k in keys}
    moved = [k for k in keys if grown[k] != first[k]]
    assert all(grown[k] == "triton-4:8001" for k in moved) and 300 < len(moved) < 500  # about a fifth


def test_pool_fails_over_to_the_next_in_rendezvous_order_when_the_preferred_endpoint_is_down() -> None:
    async def main() -> None:
        pool = fake_pool(3)
        video = b"a video"
        order = [e.url for e in pool.order(await affinity_key([video], [{}], []))]
        pool.fakes[order[0]].is_ready = False
        await pool.check()
        assert await run(pool, video_request(video)) == order[1]
        pool.fakes[order[1]].is_ready = False
        await pool.check()
        assert await run(pool, video_request(video)) == order[2]
        pool.fakes[order[0]].is_ready = True  # back: its videos come back to it
        await pool.check()
        assert await run(pool, video_request(video)) == order[0]
        await pool.close()

    asyncio.run(main())


def test_pool_retries_on_the_next_endpoint_and_marks_the_first_down_when_it_answers_unavailable() -> None:
    async def main() -> None:
        pool = fake_pool(2)
        video = b"another video"
        order = [e.url for e in pool.order(await affinity_key([video], [{}], []))]
        dead = pool.fakes[order[0]]
        dead.generate_error = EngineUnavailable("tritonserver cannot serve the request: connection refused")
        assert await run(pool, video_request(video, "r1")) == order[1]  # not probed yet: tried, then the next
        assert pool.endpoint_states()[order[0]]["state"] == "down"
        assert "connection refused" in pool.endpoint_states()[order[0]]["error"]
        tried = len(dead.requests)
        assert await run(pool, video_request(video, "r2")) == order[1]
        assert len(dead.requests) == tried  # down: skipped at once, no second try
        await pool.close()

    asyncio.run(main())


def test_pool_does_not_replay_a_request_when_its_endpoint_fails_after_answering() -> None:
    async def main() -> None:
        pool = fake_pool(2)
        for fake in pool.fakes.values():
            fake.generate_error, fake.error_after = EngineUnavailable("engine died"), 1
        got = []
        with pytest.raises(EngineUnavailable, match="engine died"):
            async with aclosing(pool.generate(text_request())) as deltas:
                async for delta in deltas:
                    got.append(delta.text)
        assert got == ["Hello"] and sum(len(f.requests) for f in pool.fakes.values()) == 1
        await pool.close()

    asyncio.run(main())


def test_pool_round_robins_text_requests_over_the_endpoints_that_are_up() -> None:
    async def main() -> None:
        pool = fake_pool(3)
        served = Counter([await run(pool, text_request(f"t{i}")) for i in range(6)])
        assert served == {url: 2 for url in pool.fakes}
        down = "triton-1:8001"
        pool.fakes[down].is_ready = False
        await pool.check()
        served = Counter([await run(pool, text_request(f"u{i}")) for i in range(6)])
        assert served == {"triton-0:8001": 3, "triton-2:8001": 3}
        await pool.close()

    asyncio.run(main())


def test_pool_tries_the_first_candidate_anyway_when_no_endpoint_is_up() -> None:
    async def main() -> None:
        pool = fake_pool(2)
        for fake in pool.fakes.values():
            fake.is_ready = False
            fake.generate_error = EngineUnavailable("tritonserver cannot serve the request: not ready")
        assert not await pool.ready()
        with pytest.raises(EngineUnavailable, match="not ready"):
            async with aclosing(pool.generate(text_request())) as deltas:
                async for _ in deltas:
                    pass
        assert sum(len(f.requests) for f in pool.fakes.values()) == 1  # the server's own error, once
        await pool.close()

    asyncio.run(main())


def test_pool_routes_an_abort_to_the_endpoint_running_the_request() -> None:
    async def main() -> None:
        pool = fake_pool(3)
        for fake in pool.fakes.values():
            fake.hang_after = 0  # a long prefill: running until cancelled
        request = video_request(b"a long video", "req-abort.0123")
        task = asyncio.create_task(run(pool, request))
        for _ in range(100):
            if pool.running_on(request.request_id):
                break
            await asyncio.sleep(0.01)
        url = pool.running_on(request.request_id)
        assert url == pool.order(await affinity_key([b"a long video"], [{}], []))[0].url
        assert pool.endpoint_states()[url]["in_flight"] == 1
        assert await pool.abort(request.request_id)
        assert {u: f.aborts for u, f in pool.fakes.items()} == {u: ([request.request_id] if u == url else [])
                                                                for u in pool.fakes}
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.running_on(request.request_id) is None and pool.endpoint_states()[url]["in_flight"] == 0
        assert not await pool.abort(request.request_id)  # nothing runs it any more
        await pool.close()

    asyncio.run(main())


def test_pool_is_ready_while_any_endpoint_is_ready_and_reports_each() -> None:
    async def main() -> None:
        pool = fake_pool(2)
        assert {s["state"] for s in pool.endpoint_states().values()} == {"unknown"}
        pool.fakes["triton-0:8001"].is_ready = False
        assert await pool.ready()
        states = pool.endpoint_states()
        assert states["triton-0:8001"]["state"] == "down" and states["triton-0:8001"]["error"]
        assert states["triton-1:8001"] == {"state": "up", "error": None, "in_flight": 0}
        pool.fakes["triton-1:8001"].is_ready = False
        assert not await pool.ready()
        await pool.close()

    asyncio.run(main())


def test_pool_marks_an_endpoint_down_when_its_probe_hangs_and_up_again_when_it_answers() -> None:
    class Slow(FakeBackend):
        hang = True

        async def ready(self) -> bool:
            if self.hang:
                await asyncio.sleep(10)
            return True

    async def main() -> None:
        slow = Slow()
        pool = TritonPool({"a:1": slow, "b:1": FakeBackend()}, interval_s=0.02, timeout_s=0.05)
        await pool.start()
        for _ in range(100):
            if pool.endpoint_states()["a:1"]["state"] == "down":
                break
            await asyncio.sleep(0.01)
        assert "no readiness answer" in pool.endpoint_states()["a:1"]["error"]
        slow.hang = False
        for _ in range(100):
            if pool.endpoint_states()["a:1"]["state"] == "up":
                break
            await asyncio.sleep(0.01)
        assert pool.endpoint_states()["a:1"]["state"] == "up"
        await pool.close()
        assert slow.closed

    asyncio.run(main())


def test_pool_media_goes_where_generation_goes_when_the_video_is_the_same() -> None:
    async def main() -> None:
        pool = fake_pool(3)
        video = b"dry run video"
        await pool.media([video], [{"num_frames": 4}])
        media = [u for u, f in pool.fakes.items() if f.media_calls]
        assert media == [await run(pool, video_request(video))]
        await pool.close()

    asyncio.run(main())


def test_pool_describes_media_from_an_endpoint_that_is_up_when_the_first_is_down() -> None:
    async def main() -> None:
        pool = fake_pool(2)
        pool.fakes["triton-0:8001"].is_ready = False
        await pool.check()
        described = await pool.describe_media()
        assert described["engine"]["max_model_len"] == 16384
        assert await pool.describe_media() is described  # one served model per pool: kept
        await pool.close()

    asyncio.run(main())


def test_affinity_key_is_the_content_hash_when_a_video_goes_inline_or_by_blob_path() -> None:
    async def main() -> None:
        video = b"\x00mp4" * 1000
        sha = hashlib.sha256(video).hexdigest()
        assert await affinity_key([video], [{}], []) == f"sha256:{sha}"
        by_path = {"path": f"/srv/files/blobs/{sha[:2]}/{sha[2:]}"}
        assert await affinity_key([b""], [by_path], []) == f"sha256:{sha}"
        assert await affinity_key([b""], [{"path": "/srv/clips/a.mp4"}], []) == "path:/srv/clips/a.mp4"
        big = bytes(range(256)) * 8192  # 2 MiB: hashed in a thread, same answer
        assert await affinity_key([big], [{}], []) == f"sha256:{hashlib.sha256(big).hexdigest()}"
        assert await affinity_key([], [], [b"png"]) == f"sha256:{hashlib.sha256(b'png').hexdigest()}"
        assert await affinity_key([b"v"], [{}], [b"png"]) == f"sha256:{hashlib.sha256(b'v').hexdigest()}"
        assert await affinity_key([], [], []) == ""

    asyncio.run(main())


def test_affinity_key_is_the_media_uuid_when_the_client_named_the_media() -> None:
    async def main() -> None:
        # A later request may carry the uuid alone: it must reach the endpoint that cached the bytes.
        assert await affinity_key([b"bytes"], [{C.MEDIA_UUID: "t:clip-1"}], []) == "uuid:t:clip-1"
        assert await affinity_key([b""], [{C.MEDIA_UUID: "t:clip-1"}], []) == "uuid:t:clip-1"
        messages = [{"role": "user", "content": [{"type": "text", "text": "?"},
                                                 {"type": "image", C.MEDIA_UUID: "t:img"}]}]
        assert await affinity_key([], [], [b"png"], messages) == "uuid:t:img"

    asyncio.run(main())


def test_backend_for_keeps_one_triton_backend_when_one_url_is_given() -> None:
    one = backend_for(("triton:8001",), timeout_s=5)
    assert type(one) is TritonBackend and one.url == "triton:8001" and one.channel_args is None
    pool = backend_for(("a:8001", "b:8001"), timeout_s=5)
    assert isinstance(pool, TritonPool) and [e.url for e in pool.endpoints] == ["a:8001", "b:8001"]
    assert all(isinstance(e.backend, TritonBackend) and e.backend.timeout_s == 5 for e in pool.endpoints)


def test_settings_triton_urls_are_the_comma_separated_entries_when_several_are_given() -> None:
    env = {"VLT_TRITON_URL": "triton-0.triton-grpc:8001, triton-1.triton-grpc:8001"}
    assert Settings.load([], env).triton_urls == ("triton-0.triton-grpc:8001", "triton-1.triton-grpc:8001")
    assert Settings(triton_url="[::1]:8001").triton_urls == ("[::1]:8001",)
    assert Settings().triton_urls == ()


@pytest.mark.parametrize("raw", ["a:8001,,b:8001", " ", "a:8001,", "grpc://a:8001", "a", "a:0", "a:70000", ":8001",
                                 "a:8001/x", "a:8001,a:8001"])
def test_settings_refuse_triton_url_when_an_entry_is_not_host_port(raw: str) -> None:
    with pytest.raises(ValueError, match="setting triton_url"):
        Settings(triton_url=raw)
