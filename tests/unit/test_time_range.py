"""Time ranges (``start``/``end``): exactly the right frames, and only the window is read.

Every generated frame carries its own index (tests/videos.py), so each test reads which
frames came back from their pixels, not from what the decoder says about them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest

from tests.videos import ClipSpec, available, make_video, read_indices
from video_pipeline.media import decode as decode_module
from video_pipeline.media.decode import decode_video
from video_pipeline.media.options import DecodeLimits, VideoOptions

# 60 s at 10 fps, a keyframe every 2 s: long enough that a window is a small part of it.
LONG = ClipSpec(width=96, height=64, fps=10, num_frames=600, gop=20, bframes=True)


def _decode(data: bytes, **options: Any) -> Any:
    return decode_video(data, VideoOptions(**options))


def _whole(data: bytes, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Any:
    """The same request decoded from an index of the whole video (the window index turned off)."""
    with monkeypatch.context() as m:
        m.setattr(decode_module, "_build_window_index", lambda *a, **k: None)
        return _decode(data, **options)


def _expected(spec: ClipSpec, start: float, end: float, fps: float) -> list[int]:
    """Frame indices of fps sampling over [start, end): one frame every 1/fps s from the first frame
    at or after start, each the nearest frame (ties to the earlier)."""
    times = spec.times
    inside = np.flatnonzero((times >= start - 1e-6) & (times < end - 1e-6))
    first, last = times[inside[0]], times[inside[-1]]
    n = round((last - first + 1 / spec.fps) * fps)
    out = []
    for t in first + np.arange(n) / fps:
        d = np.abs(times[inside] - t)
        out.append(int(inside[np.flatnonzero(d == d.min())[0]]))
    return sorted(set(out))


@pytest.mark.parametrize(("start", "end", "fps"), [(12.0, 22.0, 2), (7.3, 9.1, 5), (0.0, 3.0, 1), (55.5, 60.0, 4)])
def test_time_range_returns_exactly_the_frames_inside_when_start_and_end_given(start: float, end: float,
                                                                               fps: float) -> None:
    data = make_video(LONG)
    video = _decode(data, start=start, end=end, fps=fps)
    indices = read_indices(video.frames)
    assert indices == _expected(LONG, start, end, fps)
    assert video.frame_indices.tolist() == indices  # constant frame rate: the window's indices are exact
    np.testing.assert_allclose(video.timestamps, LONG.times[indices], atol=1e-3)
    assert all(start - 1e-6 <= t < end for t in video.timestamps)
    assert video.metadata["indexed"] == "window"


def test_time_range_equals_a_whole_video_decode_when_the_window_index_is_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_video(LONG)
    for options in ({"start": 21.05, "end": 33.3, "num_frames": 7}, {"start": 40.0, "fps": 3},
                    {"end": 4.0, "fps": 2}, {"start": 10.0, "end": 14.0, "num_frames": 5, "mode": "keyframe"}):
        window, whole = _decode(data, **options), _whole(data, monkeypatch, **options)
        assert window.metadata["indexed"] == "window" and whole.metadata["indexed"] == "whole"
        assert np.array_equal(window.frames, whole.frames), options
        assert window.frame_indices.tolist() == whole.frame_indices.tolist()
        np.testing.assert_allclose(window.timestamps, whole.timestamps)
        assert window.metadata["total_num_frames"] == whole.metadata["total_num_frames"] == 600
        assert window.metadata["duration"] == pytest.approx(whole.metadata["duration"], abs=0.11)


class _Counting:
    """Wraps an input container to count the packets demuxed from it."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.packets = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()

    def demux(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for packet in self._real.demux(*args, **kwargs):
            self.packets += 1
            yield packet


def test_time_range_reads_only_the_window_when_the_video_is_long(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_video(LONG)
    opened: list[_Counting] = []
    real_open = av.open

    def counting_open(*args: Any, **kwargs: Any) -> _Counting:
        opened.append(_Counting(real_open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(av, "open", counting_open)
    limits = DecodeLimits(threads=1)
    read_indices(decode_video(data, VideoOptions(start=30.0, end=32.0, fps=2), limits).frames)
    window = sum(c.packets for c in opened)
    opened.clear()
    decode_video(data, VideoOptions(num_frames=4), limits)
    whole_video = sum(c.packets for c in opened)
    # The window: 32 packets read for the start time, one GOP before 30 s at most, the 2-s
    # window, the next GOP's keyframe and a few packets; the whole video is 600 packets.
    assert whole_video >= 600
    assert window <= 32 + 3 * LONG.gop + 20, window


def test_time_range_costs_about_a_short_clip_when_the_window_is_small() -> None:
    """The work (packets demuxed + decoded) of a 2-s window of a 60-s video stays near that of a
    2-s video: timed, this is perf/bench_cache.py's window benchmark."""
    import time

    long = make_video(LONG)
    short = make_video(ClipSpec(width=96, height=64, fps=10, num_frames=20, gop=20, bframes=True))
    best = {}
    for name, data, options in (("window", long, {"start": 30.0, "end": 32.0, "fps": 5}),
                                ("clip", short, {"fps": 5})):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            _decode(data, **options)
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    assert best["window"] < 4 * best["clip"], best


def test_time_range_keeps_true_timestamps_when_the_frame_rate_varies() -> None:
    # 0.1 s apart, then a 2 s freeze, then 0.04 s apart: the window is after the freeze.
    pts = tuple(int(x) for x in [i * 100 for i in range(30)] + [2900 + 2000 + i * 40 for i in range(100)])
    spec = ClipSpec(width=96, height=64, fps=25, num_frames=len(pts), gop=10, pts_ms=pts)
    video = _decode(make_video(spec), start=5.5, end=7.0, fps=5)
    true = read_indices(video.frames)
    np.testing.assert_allclose(video.timestamps, spec.times[true], atol=1e-3)  # the timestamps are exact
    assert all(5.5 - 1e-6 <= t < 7.0 for t in video.timestamps)
    assert len(true) == len(set(true)) == len(video.frame_indices)
    # a window's frame index is its time at the average rate: increasing, consistent with the time
    assert np.all(np.diff(video.frame_indices) > 0)


@pytest.mark.parametrize(("codec", "container"), [("libx264", "mkv"), ("libvpx-vp9", "webm"), ("libx265", "mp4"),
                                                  ("mpeg4", "avi")])
def test_time_range_returns_true_frames_when_container_and_codec_vary(codec: str, container: str) -> None:
    spec = ClipSpec(codec=codec, container=container, width=96, height=64, fps=10, num_frames=200, gop=20,
                    bframes=True)
    if available(codec, container):
        pytest.skip(available(codec, container))
    video = _decode(make_video(spec), start=8.0, end=11.0, fps=2)
    indices = read_indices(video.frames)
    assert indices == [80, 85, 90, 95, 100, 105]
    np.testing.assert_allclose(video.timestamps, spec.times[indices], atol=1e-3)


def test_time_range_reports_the_sampling_that_applied_when_defaults_fill_in() -> None:
    video = _decode(make_video(LONG), start=12.0, end=22.0)
    plan = video.metadata["sampling"]
    assert plan == {"rule": "fps", "fps": 2.0, "num_frames": None, "max_frames": 768, "capped_by": None,
                    "start": 12.0, "end": 22.0, "mode": "exact"}
    capped = _decode(make_video(LONG), start=12.0, end=22.0, fps=2, num_frames=5).metadata["sampling"]
    assert capped["rule"] == "fps" and capped["capped_by"] == "num_frames" and capped["max_frames"] == 5
