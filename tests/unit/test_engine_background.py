"""BackgroundEngine: a loop thread serving synchronous callers, with a scripted fake engine."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Iterator

import pytest

from video_pipeline.engines import background
from video_pipeline.engines.background import BackgroundEngine
from video_pipeline.engines.types import GenerationDelta, GenerationRequest
from video_pipeline.errors import EngineUnavailable, InvalidInput, PipelineError


class FakeEngine:
    """Emits ``tokens`` deltas ``delay`` seconds apart; ``fail`` raises before the first."""

    def __init__(self, tokens: int = 3, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.tokens, self.delay, self.fail = tokens, delay, fail
        self.closed: list[str] = []  # request ids whose stream was closed before its end
        self.aborted: list[str] = []
        self.healthy = True
        self.shut_down = False
        self.loop_thread: threading.Thread | None = None

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationDelta, None]:
        self.loop_thread = threading.current_thread()
        if self.fail is not None:
            raise self.fail
        finished = False
        try:
            for i in range(self.tokens):
                await asyncio.sleep(self.delay)
                last = i == self.tokens - 1
                yield GenerationDelta(
                    index=0,
                    text=f"t{i}",
                    token_ids=(i,),
                    finish_reason="length" if last else None,
                    stop_reason=None,
                    prompt_tokens=10,
                    completion_tokens=i + 1,
                    video_tokens=4,
                    image_tokens=0,
                )
            finished = True
        finally:
            if not finished:
                self.closed.append(request.request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def check_health(self) -> None:
        if not self.healthy:
            raise EngineUnavailable("dead")

    def shutdown(self) -> None:
        self.shut_down = True


def request(rid: str = "r1") -> GenerationRequest:
    return GenerationRequest(request_id=rid, prompt="hi")


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def engine(fake: FakeEngine) -> Iterator[BackgroundEngine]:
    eng = BackgroundEngine(lambda: fake)
    yield eng
    eng.shutdown()


class Recorder:
    def __init__(self) -> None:
        self.deltas: list[GenerationDelta] = []
        self.errors: list[PipelineError | None] = []
        self.done = threading.Event()
        self.threads: set[str] = set()

    def on_delta(self, delta: GenerationDelta) -> None:
        self.threads.add(threading.current_thread().name)
        self.deltas.append(delta)

    def on_done(self, error: PipelineError | None) -> None:
        self.errors.append(error)
        self.done.set()


def test_submit_delivers_every_delta_then_done_once_when_generation_finishes(
    engine: BackgroundEngine, fake: FakeEngine
) -> None:
    rec = Recorder()
    handle = engine.submit(request(), rec.on_delta, rec.on_done)
    assert handle.wait(5)
    assert [d.text for d in rec.deltas] == ["t0", "t1", "t2"]
    assert rec.deltas[-1].finished
    assert rec.errors == [None]
    assert rec.threads == {"engine-loop"}
    assert fake.loop_thread is not None and fake.loop_thread.name == "engine-loop"


def test_stream_yields_deltas_in_order_when_iterated(engine: BackgroundEngine) -> None:
    assert [d.token_ids for d in engine.stream(request())] == [(0,), (1,), (2,)]


def test_stream_raises_the_typed_error_when_the_engine_refuses_the_request(fake: FakeEngine) -> None:
    fake.fail = InvalidInput("bad video")
    eng = BackgroundEngine(lambda: fake)
    try:
        with pytest.raises(InvalidInput, match="bad video"):
            list(eng.stream(request()))
    finally:
        eng.shutdown()


def test_submit_reports_a_pipeline_error_when_the_engine_raises_something_untyped(fake: FakeEngine) -> None:
    fake.fail = RuntimeError("boom")
    eng = BackgroundEngine(lambda: fake)
    try:
        rec = Recorder()
        eng.submit(request(), rec.on_delta, rec.on_done).wait(5)
        assert type(rec.errors[0]) is PipelineError
        assert "boom" in str(rec.errors[0])
    finally:
        eng.shutdown()


def test_cancel_closes_the_engine_stream_and_reports_done_when_called_mid_stream(fake: FakeEngine) -> None:
    fake.tokens, fake.delay = 1000, 0.01
    eng = BackgroundEngine(lambda: fake)
    try:
        rec = Recorder()
        handle = eng.submit(request("c1"), rec.on_delta, rec.on_done)
        while not rec.deltas:
            rec.done.wait(0.01)
        handle.cancel()
        assert handle.wait(5)
        assert rec.errors == [None]
        assert fake.closed == ["c1"]
        assert len(rec.deltas) < 1000
    finally:
        eng.shutdown()


def test_cancel_still_calls_on_done_when_issued_before_the_request_starts(engine: BackgroundEngine) -> None:
    rec = Recorder()
    started = threading.Event()
    release = threading.Event()

    def block_loop() -> None:
        started.set()
        release.wait(5)

    engine.loop.call_soon_threadsafe(block_loop)  # hold the loop so the request cannot start yet
    started.wait(5)
    handle = engine.submit(request(), rec.on_delta, rec.on_done)
    handle.cancel()
    release.set()
    assert handle.wait(5)
    assert rec.errors == [None]
    assert rec.deltas == []


def test_is_cancelled_aborts_the_request_when_it_turns_true(fake: FakeEngine) -> None:
    fake.tokens, fake.delay = 1000, 0.01
    eng = BackgroundEngine(lambda: fake)
    try:
        rec = Recorder()
        flag = threading.Event()
        handle = eng.submit(request("p1"), rec.on_delta, rec.on_done, is_cancelled=flag.is_set)
        while not rec.deltas:
            rec.done.wait(0.01)
        flag.set()
        assert handle.wait(background.CANCEL_POLL_S * 20)
        assert rec.errors == [None]
        assert fake.closed == ["p1"]
    finally:
        eng.shutdown()


def test_submit_stops_generation_and_reports_an_error_when_on_delta_raises(fake: FakeEngine) -> None:
    fake.tokens = 50
    eng = BackgroundEngine(lambda: fake)
    try:
        rec = Recorder()

        def on_delta(delta: GenerationDelta) -> None:
            raise ConnectionError("client gone")

        eng.submit(request("x1"), on_delta, rec.on_done).wait(5)
        assert isinstance(rec.errors[0], PipelineError)
        assert "client gone" in str(rec.errors[0])
        assert fake.closed == ["x1"]
    finally:
        eng.shutdown()


def test_stream_cancels_the_request_when_the_caller_stops_early(fake: FakeEngine) -> None:
    fake.tokens, fake.delay = 1000, 0.001
    eng = BackgroundEngine(lambda: fake)
    try:
        stream = eng.stream(request("s1"))
        next(stream)
        stream.close()
        assert fake.closed == ["s1"]
    finally:
        eng.shutdown()


def test_constructor_raises_the_factory_error_unchanged_when_the_engine_cannot_start() -> None:
    def factory() -> FakeEngine:
        raise TypeError("unexpected keyword argument 'modle'")

    before = threading.active_count()
    with pytest.raises(TypeError, match="modle"):
        BackgroundEngine(factory)
    assert threading.active_count() == before


def test_constructor_awaits_the_factory_when_it_is_a_coroutine_function(fake: FakeEngine) -> None:
    async def factory() -> FakeEngine:
        await asyncio.sleep(0)
        return fake

    eng = BackgroundEngine(factory)
    try:
        assert eng.engine is fake
    finally:
        eng.shutdown()


def test_check_health_raises_engine_unavailable_when_the_engine_is_dead(
    engine: BackgroundEngine, fake: FakeEngine
) -> None:
    engine.check_health()
    fake.healthy = False
    with pytest.raises(EngineUnavailable):
        engine.check_health()


def test_abort_reaches_the_engine_when_called_from_another_thread(
    engine: BackgroundEngine, fake: FakeEngine
) -> None:
    engine.abort("some-id")
    assert fake.aborted == ["some-id"]


def test_shutdown_fails_in_flight_requests_with_engine_unavailable_when_called(fake: FakeEngine) -> None:
    fake.tokens, fake.delay = 1000, 0.01
    eng = BackgroundEngine(lambda: fake)
    rec = Recorder()
    handle = eng.submit(request(), rec.on_delta, rec.on_done)
    while not rec.deltas:
        rec.done.wait(0.01)
    eng.shutdown()
    assert handle.done()
    assert isinstance(rec.errors[0], EngineUnavailable)
    assert fake.shut_down
    with pytest.raises(EngineUnavailable):
        eng.submit(request(), rec.on_delta, rec.on_done)
    with pytest.raises(EngineUnavailable):
        eng.check_health()
    eng.shutdown()  # a second call is a no-op


class DyingEngine(FakeEngine):
    """Hangs in generate (as vLLM does when its core died before its output handler ran)."""

    def __init__(self) -> None:
        super().__init__(tokens=1, delay=3600)
        self.dead = False

    def is_dead(self) -> bool:
        return self.dead


def test_submit_fails_with_engine_unavailable_when_the_engine_dies_under_a_request() -> None:
    dying = DyingEngine()
    eng = BackgroundEngine(lambda: dying)
    try:
        rec = Recorder()
        eng.submit(request(), rec.on_delta, rec.on_done)
        time.sleep(0.3)
        assert not rec.done.is_set()
        dying.dead = True
        assert rec.done.wait(5), "a request on a dead engine hung"
        assert isinstance(rec.errors[0], EngineUnavailable)
    finally:
        eng.shutdown()
