"""Slice threads for multi-slice H.264: the slice count read from the bitstream, the thread type chosen from
it, and the same frames whichever threads FFmpeg uses."""

from __future__ import annotations

import io
from typing import Any

import av
import numpy as np
import pytest

from tests.videos import make_frame, read_indices
from video_pipeline.media import decode
from video_pipeline.media.decode import decode_video
from video_pipeline.media.facts import h264_slices
from video_pipeline.media.options import DecodeLimits, VideoOptions


def _encode(slices: int, fmt: str = "mp4", codec: str = "libx264", frames: int = 40) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 128, "yuv420p"
        if codec == "libx264":
            stream.codec_context.thread_type = "FRAME"  # PyAV's default (SLICE) makes x264 slice by its threads
            stream.codec_context.thread_count = 1
            stream.options = {"preset": "veryfast",
                              "x264-params": f"keyint=40:min-keyint=40:scenecut=0:bframes=3:slices={slices}"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(make_frame(i, 128, 160), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def _slices_of(data: bytes, fmt: str | None = None) -> list[int]:
    with av.open(io.BytesIO(data), format=fmt) as container:
        stream = container.streams.video[0]
        return [h264_slices(stream, p) for p in container.demux(stream) if p.size]


@pytest.mark.parametrize("slices", [1, 2, 4])
@pytest.mark.parametrize("fmt", ["mp4", "matroska", "h264"])  # avcC lengths (mp4, mkv) and Annex B start codes
def test_h264_slices_counts_the_coded_slices_of_every_frame(slices, fmt) -> None:
    counts = _slices_of(_encode(slices, fmt), fmt if fmt == "h264" else None)
    assert len(counts) == 40
    assert set(counts) == {slices}


def test_h264_slices_is_one_for_other_codecs_and_unreadable_packets() -> None:
    assert set(_slices_of(_encode(1, codec="mpeg4"))) == {1}

    class Garbage:
        def __bytes__(self) -> bytes:
            return b"\x00\x00\x00\xff\x65"  # a length far past the end

    with av.open(io.BytesIO(_encode(2))) as container:
        assert h264_slices(container.streams.video[0], Garbage()) == 1
        assert h264_slices(container.streams.video[0], b"") == 1


@pytest.mark.parametrize(("count", "slices", "expected"), [
    (2, 2, "SLICE"), (2, 4, "SLICE"), (4, 2, "AUTO"), (1, 4, "AUTO"), (0, 4, "AUTO"), (2, 1, "AUTO"),
])
def test_set_threads_picks_slice_threads_only_when_every_thread_gets_a_slice(count, slices, expected) -> None:
    class Codec:
        thread_type = thread_count = None

    cc: Any = Codec()
    decode._set_threads(cc, count, slices)
    assert (cc.thread_type, cc.thread_count) == (expected, count)


@pytest.mark.parametrize(("slices", "expected"), [(2, "SLICE"), (1, "AUTO")])
@pytest.mark.parametrize("window", [False, True])
def test_decode_video_gives_a_multi_slice_clip_slice_threads_and_the_same_frames(
        monkeypatch, slices, expected, window) -> None:
    data = _encode(slices)  # one 40-frame GOP: a lone share, both slots its threads
    seen: list[tuple[str, int]] = []
    real = decode._decode_runs

    def spy(container: Any, stream: Any, *rest: Any) -> None:
        seen.append((stream.codec_context.thread_type.name, stream.codec_context.thread_count))
        real(container, stream, *rest)

    monkeypatch.setattr(decode, "_decode_runs", spy)
    options = VideoOptions(num_frames=8, **({"start": 0.0, "end": 1.5} if window else {}))
    alone = decode_video(data, options, DecodeLimits(threads=1, workers=1))
    threaded = decode_video(data, options, DecodeLimits(threads=1, workers=2))
    assert seen[0][1] == 1 and seen[1] == (expected, 2)
    np.testing.assert_array_equal(threaded.frames, alone.frames)
    assert read_indices(threaded.frames) == threaded.frame_indices.tolist()
