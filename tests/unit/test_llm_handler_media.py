"""LlmHandler with a `video` input: the media callable (BLS in Triton) runs on a worker thread, its
video_info is answered first, then the engine generates; errors, cancels and aborts on the way."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.unit.test_engine_background import FakeEngine
from video_pipeline import contract as C
from video_pipeline.engines.background import BackgroundEngine
from video_pipeline.errors import InvalidInput, UnsupportedMedia
from video_pipeline.llm_handler import LlmHandler
from video_pipeline.steps import json_tensor

INFO = {"num_frames": 2, "height": 28, "width": 28, "fps": 2.0, "duration": 1.0, "total_num_frames": 2,
        "frames_indices": [0, 1], "num_video_tokens": 1}
MESSAGES = json_tensor([[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}]])


class Sink:
    def __init__(self) -> None:
        self.sent: list[dict[str, np.ndarray]] = []
        self.error: BaseException | None = None
        self.cancelled = False
        self.done = threading.Event()

    def send(self, outputs: dict[str, np.ndarray]) -> None:
        self.sent.append(outputs)

    def finish(self, outputs: dict[str, np.ndarray] | None = None) -> None:
        self.done.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done.set()

    def is_cancelled(self) -> bool:
        return self.cancelled


class Media:
    """A fake of BlsMedia: records its calls; ``gate`` holds it until set; ``error`` fails it."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.calls: list[tuple[list[bytes], list[Any], str, str]] = []
        self.error = error
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, video: np.ndarray, options: np.ndarray | None, request_id: str):
        self.calls.append((list(video), [] if options is None else list(options), request_id,
                           threading.current_thread().name))
        self.started.set()
        self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return np.zeros((2, 28, 28, 3), np.uint8), [dict(INFO)]


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine(tokens=3)


@pytest.fixture
def engine(fake: FakeEngine) -> Iterator[BackgroundEngine]:
    eng = BackgroundEngine(lambda: fake)
    yield eng
    eng.shutdown()


def inputs(**extra: Any) -> dict[str, Any]:
    return {C.MESSAGES: MESSAGES, C.VIDEO: np.array([b"mp4 bytes"], dtype=np.object_),
            C.VIDEO_OPTIONS: json_tensor([{"num_frames": 2}]), C.STREAM: np.array([True]), **extra}


def test_handler_decodes_through_its_media_callable_then_answers_the_info_first_when_given_video(engine) -> None:
    media = Media()
    handler = LlmHandler(engine, media)
    sink = Sink()
    handler.submit(inputs(), "rid-1", sink)
    assert sink.done.wait(10) and sink.error is None
    (videos, options, rid, thread), = media.calls
    assert videos == [b"mp4 bytes"] and json.loads(options[0]) == {"num_frames": 2} and rid == "rid-1"
    assert thread.startswith("llm-media")  # never the caller's (Triton's execute) thread
    first, *texts = sink.sent
    assert set(first) == {C.VIDEO_INFO} and json.loads(first[C.VIDEO_INFO][0]) == INFO
    assert [t[C.TEXT_OUTPUT][0] for t in texts] == [b"t0", b"t1", b"t2"]
    assert all(C.VIDEO_INFO not in t for t in texts)


def test_handler_marks_the_media_error_as_about_the_videos_when_the_media_model_refuses(engine) -> None:
    handler = LlmHandler(engine, Media(UnsupportedMedia("no decoder for the video codec (vp9)")))
    sink = Sink()
    handler.submit(inputs(), "rid-2", sink)
    assert sink.done.wait(10)
    assert isinstance(sink.error, UnsupportedMedia) and not sink.sent
    assert (sink.error.kind, sink.error.index, str(sink.error)) == ("video", None, "no decoder for the video codec (vp9)")
    doc = sink.error.to_doc()  # what its Triton error carries
    assert (doc.triton_code, doc.status, doc.kind) == ("UNSUPPORTED", 415, "video")


def test_handler_skips_generation_when_the_client_cancelled_while_the_video_was_decoding(engine, fake) -> None:
    media = Media()
    media.gate.clear()
    handler = LlmHandler(engine, media)
    sink = Sink()
    handler.submit(inputs(), "rid-3", sink)
    assert media.started.wait(5)
    sink.cancelled = True
    media.gate.set()
    assert sink.done.wait(10) and sink.error is None and sink.sent == []
    assert fake.loop_thread is None  # the engine never saw it


def test_abort_request_stops_a_request_that_is_still_decoding_when_sent_with_its_id(engine, fake) -> None:
    media = Media()
    media.gate.clear()
    handler = LlmHandler(engine, media)
    sink = Sink()
    handler.submit(inputs(), "rid-4", sink)
    assert media.started.wait(5)
    abort = Sink()
    handler.submit({C.ABORT_REQUEST_ID: np.array([b"rid-4"], dtype=np.object_)}, "rid-4-abort", abort)
    assert abort.sent[0][C.FINISH_REASON][0] == b"abort"
    media.gate.set()
    assert sink.done.wait(10) and sink.sent == [] and fake.loop_thread is None


def test_handler_refuses_video_with_video_frames_and_video_without_a_media_callable(engine) -> None:
    both = inputs(**{C.VIDEO_FRAMES: np.zeros((1, 28, 28, 3), np.uint8), C.VIDEO_INFO: json_tensor([INFO])})
    with pytest.raises(InvalidInput, match="not both"):
        LlmHandler(engine, Media()).submit(both, "r", Sink())
    with pytest.raises(InvalidInput, match="no media model"):
        LlmHandler(engine, None).submit(inputs(), "r", Sink())


def test_handler_checks_the_text_inputs_before_decoding_when_they_are_bad(engine) -> None:
    media = Media()
    with pytest.raises(InvalidInput):
        LlmHandler(engine, media).submit(inputs(**{C.SAMPLING_PARAMETERS: json_tensor([{"bogus": 1}])}), "r", Sink())
    time.sleep(0.05)
    assert media.calls == []
