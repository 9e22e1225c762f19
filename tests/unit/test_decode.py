"""decode_video on generated clips: exactly which frames come back, when, and how they look.

Every generated frame carries its own index (tests/videos.py), so each test checks
the frames' content against ``frame_indices`` and ``timestamps``, not just counts.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np
import pytest

from tests.videos import (
    MAX_INDEX,
    ClipSpec,
    available,
    inspect,
    make_frame,
    make_video,
    read_index,
    read_indices,
    read_orientation,
)
from video_pipeline.media.decode import DecodedVideo, decode_video
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.media.options import DecodeLimits, VideoOptions

Clip = Callable[..., tuple[ClipSpec, bytes]]

# The codec name FFmpeg's default decoder reports for each encoder.
DECODER_NAMES = {
    "libx264": {"h264"},
    "libx265": {"hevc"},
    "libvpx-vp9": {"vp9", "libvpx-vp9"},
    "libvpx": {"vp8", "libvpx"},
    "libsvtav1": {"av1", "libdav1d", "libaom-av1"},
    "libaom-av1": {"av1", "libdav1d", "libaom-av1"},
    "mpeg4": {"mpeg4"},
}
# Every pairing a real file might have; those this FFmpeg build cannot write are skipped.
MATRIX = [
    ("libx264", "mp4"),
    ("libx264", "mov"),
    ("libx264", "mkv"),
    ("libx264", "avi"),
    ("libx265", "mp4"),
    ("libx265", "mov"),
    ("libx265", "mkv"),
    ("libvpx-vp9", "webm"),
    ("libvpx-vp9", "mkv"),
    ("libvpx-vp9", "mp4"),
    ("libvpx", "webm"),
    ("libvpx", "mkv"),
    ("libsvtav1", "mp4"),
    ("libsvtav1", "mkv"),
    ("libsvtav1", "webm"),
    ("libaom-av1", "mp4"),
    ("libaom-av1", "webm"),
    ("mpeg4", "mp4"),
    ("mpeg4", "mov"),
    ("mpeg4", "mkv"),
    ("mpeg4", "avi"),
]
# Irregular gaps (ms): bursts of fast frames, long holds, a 1.2 s freeze.
VFR_PTS = tuple(
    int(t)
    for t in np.cumsum([0, 40, 40, 40, 500, 10, 10, 10, 10, 1200, 33, 33, 33, 300, 700, 20, 20, 20, 20, 20])
)


@pytest.fixture(scope="session")
def clip() -> Clip:
    """Generates (spec, bytes) for ClipSpec(**kwargs); each spec is encoded once per session."""

    def make(**kwargs: Any) -> tuple[ClipSpec, bytes]:
        spec = ClipSpec(**kwargs)
        reason = available(spec.codec, spec.container)
        if reason:
            pytest.skip(reason)
        return spec, make_video(spec)

    return make


def nearest_slow(times: np.ndarray, target: float) -> int:
    d = np.abs(times - target)
    return int(np.flatnonzero(d == d.min())[0])


def decode(data: bytes, limits: DecodeLimits | None = None, **options: Any) -> DecodedVideo:
    return decode_video(data, VideoOptions(**options), limits)


def assert_true_frames(video: DecodedVideo, spec: ClipSpec) -> list[int]:
    """The frames are the ones ``frame_indices`` names, at their true times; returns the indices."""
    indices = video.frame_indices.tolist()
    assert read_indices(video.frames) == indices
    assert video.metadata["frames_indices"] == indices
    np.testing.assert_allclose(video.timestamps, spec.times[indices], atol=1e-3)
    assert video.frames.dtype == np.uint8 and video.frames.ndim == 4 and video.frames.shape[3] == 3
    assert video.timestamps.dtype == np.float64 and video.frame_indices.dtype == np.int64
    assert (
        len(video.frames) == len(video.timestamps) == len(indices) == len(video.metadata["keyframe_snapped"])
    )
    return indices


# --- the test pattern itself -------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(61, 97), (96, 128), (320, 180)])
def test_read_index_recovers_index_when_frame_is_turned(h: int, w: int) -> None:
    for index in (0, 1, 3, 4, 255, 1000, MAX_INDEX):
        frame = make_frame(index, h, w)
        for k in range(4):
            turned = np.rot90(frame, k=k)
            assert read_index(turned) == index and read_orientation(turned) == k


def test_read_index_raises_when_frame_is_not_a_test_pattern() -> None:
    with pytest.raises(ValueError, match="marker"):
        read_index(np.full((64, 64, 3), 128, dtype=np.uint8))


# --- which frames ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 13, 61])
def test_decode_video_returns_exact_indices_when_num_frames_given(clip: Clip, n: int) -> None:
    # 61 frames: no sample lands exactly halfway between two frames (the tie rule is tested in
    # test_sampling; here float noise in container time bases could break a tie either way).
    spec, data = clip(num_frames=61, gop=10, bframes=True, width=160, height=120)
    video = decode(data, num_frames=n)
    indices = assert_true_frames(video, spec)
    assert indices == [nearest_slow(spec.times, t) for t in np.linspace(0, spec.times[-1], n)]


def test_decode_video_takes_one_frame_per_period_when_fps_given(clip: Clip) -> None:
    spec, data = clip(num_frames=100, fps=20, gop=12, bframes=True)
    video = decode(data, fps=2)
    assert assert_true_frames(video, spec) == list(range(0, 100, 10))
    np.testing.assert_allclose(video.timestamps, np.arange(10) * 0.5)


def test_decode_video_caps_fps_sampling_by_num_frames_when_both_given(clip: Clip) -> None:
    spec, data = clip(num_frames=100, fps=20, gop=12, bframes=True)
    video = decode(data, fps=10, num_frames=4)
    indices = assert_true_frames(video, spec)
    assert len(indices) == 4 and indices[0] == 0 and indices[-1] == 99
    # Below the cap, fps wins: one frame per second of the five.
    assert assert_true_frames(decode(data, fps=1, num_frames=50), spec) == [0, 20, 40, 60, 80]


def test_decode_video_caps_frame_count_when_max_frames_below_fps_count(clip: Clip) -> None:
    spec, data = clip(num_frames=100, fps=20, gop=12)
    indices = assert_true_frames(decode(data, fps=20, max_frames=6), spec)
    assert indices == [nearest_slow(spec.times, t) for t in np.linspace(0, spec.times[-1], 6)]


def test_decode_video_samples_at_2_fps_when_no_options(clip: Clip) -> None:
    spec, data = clip(num_frames=100, fps=20, gop=12)
    assert assert_true_frames(decode_video(data), spec) == list(range(0, 100, 10))


def test_decode_video_returns_frames_inside_window_when_start_and_end_given(clip: Clip) -> None:
    spec, data = clip(num_frames=100, fps=20, gop=12, bframes=True)
    video = decode(data, start=1.0, end=2.0, fps=4)
    assert assert_true_frames(video, spec) == [20, 25, 30, 35]
    assert np.all((video.timestamps >= 1.0) & (video.timestamps < 2.0))
    video = decode(data, start=1.0, end=2.0, num_frames=4)
    window = spec.times[20:40]
    assert assert_true_frames(video, spec) == [
        20 + nearest_slow(window, t) for t in np.linspace(1.0, 1.95, 4)
    ]
    assert np.all((video.timestamps >= 1.0) & (video.timestamps < 2.0))


def test_decode_video_returns_capped_frames_when_fps_is_huge(clip: Clip) -> None:
    # fps=1e308 made span * fps infinite and int(round(inf)) raised OverflowError.
    spec, data = clip(num_frames=100, fps=20, gop=12)
    video = decode_video(data, VideoOptions.from_json('{"fps": 1e308, "max_frames": 6}'))
    assert assert_true_frames(video, spec) == [nearest_slow(spec.times, t) for t in np.linspace(0, 4.95, 6)]


def test_decode_video_runs_window_to_the_end_when_only_start_given(clip: Clip) -> None:
    spec, data = clip(num_frames=100, fps=20, gop=12)
    assert assert_true_frames(decode(data, start=4.0, fps=4), spec) == [80, 85, 90, 95]


# --- keyframe mode ----------------------------------------------------------------------


def test_decode_video_returns_true_times_of_keyframes_when_mode_is_keyframe(clip: Clip) -> None:
    spec, data = clip(num_frames=200, fps=25, gop=25, bframes=True, width=160, height=120)
    exact = decode(data, num_frames=8)
    video = decode(data, num_frames=8, mode="keyframe", keyframe_tolerance=0.5)
    indices = assert_true_frames(video, spec)
    assert len(indices) == 8  # the count is preserved
    keyframes = set(inspect(data).keyframes)
    snapped = video.metadata["keyframe_snapped"]
    assert any(snapped)
    for idx, was_snapped in zip(indices, snapped, strict=True):
        if was_snapped:
            assert idx in keyframes
            assert np.min(np.abs(spec.times[exact.frame_indices] - spec.times[idx])) <= 0.5 + 1e-9
        else:
            assert idx in exact.frame_indices.tolist()
    assert video.metadata["mode"] == "keyframe"


class _CountingContainer:
    """Wraps an input container to count the packets demuxed from it."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.packets = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def demux(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for packet in self._real.demux(*args, **kwargs):
            self.packets += 1
            yield packet


def test_decode_video_demuxes_far_fewer_packets_when_mode_is_keyframe(
    clip: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, data = clip(num_frames=250, fps=25, gop=25, width=160, height=120)
    opened: list[_CountingContainer] = []
    real_open = av.open

    def counting_open(*args: Any, **kwargs: Any) -> _CountingContainer:
        opened.append(_CountingContainer(real_open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(av, "open", counting_open)
    limits = DecodeLimits(threads=1)  # no frame-threading lag: one packet in, one frame out
    work = {}
    for mode in ("exact", "keyframe"):
        video = decode(data, limits, num_frames=10, mode=mode, keyframe_tolerance=1.0)
        assert_true_frames(video, spec)
        work[mode] = opened[-1].packets - spec.num_frames  # minus the index pass
        n_snapped = sum(video.metadata["keyframe_snapped"])
    # Each snapped sample costs its keyframe packet; an unsnapped one up to a GOP.
    assert n_snapped >= 8
    assert work["keyframe"] <= 2 * n_snapped + spec.gop * (10 - n_snapped)
    assert work["keyframe"] * 2 < work["exact"]


def test_decode_video_returns_right_frames_when_gop_is_long_with_b_frames(clip: Clip) -> None:
    spec, data = clip(num_frames=300, fps=25, gop=250, bframes=True, width=160, height=120)
    assert inspect(data).keyframes == [0, 250] and inspect(data).reordered
    for opts in ({"num_frames": 9}, {"fps": 3}, {"start": 9.5, "end": 11.0, "fps": 5}, {"num_frames": 300}):
        assert_true_frames(decode(data, **opts), spec)
    video = decode(data, num_frames=9, mode="keyframe", keyframe_tolerance=1.0)
    indices = assert_true_frames(video, spec)
    assert len(indices) == 9
    snapped = [i for i, s in zip(indices, video.metadata["keyframe_snapped"], strict=True) if s]
    assert snapped == [0, 250]


# --- codecs and containers --------------------------------------------------------------


@pytest.mark.parametrize("bframes", [False, True], ids=["no-bframes", "bframes"])
@pytest.mark.parametrize(("codec", "container"), MATRIX, ids=[f"{c}-{m}" for c, m in MATRIX])
def test_decode_video_returns_true_frames_when_codec_and_container_vary(
    clip: Clip, codec: str, container: str, bframes: bool
) -> None:
    spec, data = clip(codec=codec, container=container, bframes=bframes, num_frames=40, gop=10)
    for opts in ({"num_frames": 7}, {"fps": 5}, {"start": 0.5, "end": 1.2, "num_frames": 4}):
        video = decode(data, **opts)
        assert_true_frames(video, spec)
    assert video.metadata["codec"] in DECODER_NAMES[codec]
    assert len(assert_true_frames(decode(data, num_frames=40), spec)) == 40
    assert_true_frames(decode(data, num_frames=5, mode="keyframe"), spec)


def test_decode_video_returns_true_frames_when_avi_timestamps_are_made_up(clip: Clip) -> None:
    # AVI has no presentation times: FFmpeg numbers H.264 packets in decode order, so with
    # B-frames every frame came out under another frame's timestamp (wrong frames returned).
    spec, data = clip(codec="libx264", container="avi", bframes=True, num_frames=40, gop=10)
    assert not inspect(data).reordered  # the made-up pts rise in decode order
    for opts in ({"num_frames": 7}, {"fps": 5}, {"num_frames": 40}, {"start": 0.5, "end": 1.2, "fps": 10}):
        assert_true_frames(decode(data, **opts), spec)


@pytest.mark.parametrize(
    ("codec", "width", "height"),
    [
        ("libx264", 97, 61),
        ("libx264", 61, 97),
        ("libvpx-vp9", 97, 61),
        ("libx265", 75, 99),
        ("libx264", 64, 48),
    ],
)
def test_decode_video_keeps_native_size_when_resize_is_false_and_size_is_odd(
    clip: Clip, codec: str, width: int, height: int
) -> None:
    container = "webm" if codec == "libvpx-vp9" else "mp4"
    spec, data = clip(codec=codec, container=container, width=width, height=height, num_frames=20, gop=5)
    video = decode(data, num_frames=4, resize=False)
    assert_true_frames(video, spec)
    assert video.frames.shape[1:3] == (height, width)
    assert (video.metadata["width"], video.metadata["height"]) == (width, height)
    assert (video.metadata["output_width"], video.metadata["output_height"]) == (width, height)


@pytest.mark.parametrize(("width", "height"), [(97, 61), (320, 180), (64, 64), (180, 320)])
def test_decode_video_fits_pixel_budget_when_resize_is_true(clip: Clip, width: int, height: int) -> None:
    spec, data = clip(width=width, height=height, num_frames=10, gop=5)
    video = decode(data, num_frames=3)
    assert_true_frames(video, spec)
    _, h, w, _ = video.frames.shape
    assert h % 28 == 0 and w % 28 == 0
    media = MediaSettings()  # Qwen2-VL's processor defaults
    assert media.video_min_pixels <= h * w <= media.video_max_pixels
    assert abs(np.log((w / h) / (width / height))) < 0.25  # aspect kept, to within the rounding
    assert (video.metadata["output_width"], video.metadata["output_height"]) == (w, h)
    small = MediaSettings(patch_size=7, video_min_pixels=14 * 14 * 4, video_max_pixels=14 * 14 * 30)
    custom = decode_video(data, VideoOptions(num_frames=2), media=small)
    _, h, w, _ = custom.frames.shape
    assert h % 14 == 0 and w % 14 == 0 and 14 * 14 * 4 <= h * w <= 14 * 14 * 30
    assert_true_frames(custom, spec)


# --- rotation -----------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["mp4", "mov", "mkv"])
@pytest.mark.parametrize("clockwise", [90, 180, 270])
def test_decode_video_turns_frames_upright_when_display_matrix_rotates(
    clip: Clip, container: str, clockwise: int
) -> None:
    # The display matrix says "turn the coded picture clockwise by N degrees to show it"
    # (a phone held upright writes 90). PyAV's set_display_rotation takes counterclockwise.
    spec, data = clip(container=container, rotation=-clockwise, width=128, height=64, num_frames=12, gop=4)
    video = decode(data, num_frames=4, resize=False)
    assert_true_frames(video, spec)
    quarter_turns_ccw = (-clockwise // 90) % 4
    assert [read_orientation(f) for f in video.frames] == [quarter_turns_ccw] * 4
    expected_hw = (128, 64) if clockwise in (90, 270) else (64, 128)
    assert video.frames.shape[1:3] == expected_hw
    assert video.metadata["rotation"] == clockwise
    assert (video.metadata["height"], video.metadata["width"]) == expected_hw
    resized = decode(data, num_frames=2)
    portrait = resized.frames.shape[1] > resized.frames.shape[2]
    assert portrait == (clockwise in (90, 270))
    assert [read_orientation(f) for f in resized.frames] == [quarter_turns_ccw] * 2


def test_decode_video_turns_frames_upright_when_rotated_webm_is_sampled_by_keyframe(clip: Clip) -> None:
    spec, data = clip(
        codec="libvpx-vp9", container="webm", rotation=-90, width=96, height=64, num_frames=12, gop=4
    )
    video = decode(data, num_frames=3, mode="keyframe", resize=False)
    assert_true_frames(video, spec)
    assert video.frames.shape[1:3] == (96, 64)
    assert [read_orientation(f) for f in video.frames] == [3, 3, 3]


def test_decode_video_reports_no_rotation_when_display_matrix_absent(clip: Clip) -> None:
    _, data = clip(width=128, height=64, num_frames=4)
    video = decode(data, num_frames=2, resize=False)
    assert video.metadata["rotation"] == 0 and video.frames.shape[1:3] == (64, 128)
    assert [read_orientation(f) for f in video.frames] == [0, 0]


# --- variable frame rate --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "container"),
    [("libx264", "mp4"), ("libx264", "mkv"), ("libx264", "mov"), ("libvpx-vp9", "webm")],
)
def test_decode_video_returns_true_timestamps_when_frame_rate_varies(
    clip: Clip, codec: str, container: str
) -> None:
    spec, data = clip(codec=codec, container=container, num_frames=len(VFR_PTS), pts_ms=VFR_PTS, gop=5)
    everything = decode(data, num_frames=len(VFR_PTS))
    assert assert_true_frames(everything, spec) == list(range(len(VFR_PTS)))
    np.testing.assert_allclose(everything.timestamps, spec.times, atol=1e-3)

    video = decode(data, fps=2)
    indices = assert_true_frames(video, spec)
    span = spec.times[-1] + float(np.median(np.diff(spec.times)))
    targets = np.arange(round(span * 2)) / 2
    assert indices == sorted({nearest_slow(spec.times, t) for t in targets})

    by_time = assert_true_frames(decode(data, num_frames=4), spec)
    assert by_time == [nearest_slow(spec.times, t) for t in np.linspace(0, spec.times[-1], 4)]
    # Sampling by index would have picked 0, 6, 13, 19.
    assert by_time != [0, 6, 13, 19]


def test_decode_video_reports_metadata_consistent_with_frames_when_frame_rate_varies(clip: Clip) -> None:
    spec, data = clip(num_frames=len(VFR_PTS), pts_ms=VFR_PTS, gop=5)
    video = decode(data, num_frames=3)
    assert video.metadata["total_num_frames"] == len(VFR_PTS)
    assert video.metadata["duration"] >= spec.times[-1]


# --- audio, short clips, sources -----------------------------------------------------------


@pytest.mark.parametrize(
    ("audio", "codec", "container"),
    [
        ("aac", "libx264", "mp4"),
        ("aac", "libx264", "mov"),
        ("aac", "libx264", "mkv"),
        ("opus", "libvpx-vp9", "webm"),
        ("opus", "libx264", "mkv"),
    ],
)
def test_decode_video_picks_the_video_stream_when_an_audio_track_is_present(
    clip: Clip, audio: str, codec: str, container: str
) -> None:
    spec, data = clip(codec=codec, container=container, audio=audio, num_frames=30, gop=10, bframes=True)
    with av.open(io.BytesIO(data)) as c:
        assert len(c.streams.audio) == 1
    video = decode(data, num_frames=6)
    assert_true_frames(video, spec)
    assert video.metadata["codec"] in DECODER_NAMES[codec]
    assert video.metadata["total_num_frames"] == 30


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize(
    ("codec", "container"), [("libx264", "mp4"), ("libvpx-vp9", "webm"), ("mpeg4", "avi")]
)
def test_decode_video_returns_every_frame_when_clip_is_very_short(
    clip: Clip, n: int, codec: str, container: str
) -> None:
    spec, data = clip(codec=codec, container=container, num_frames=n, gop=1)
    every = list(range(n))
    # At the default 2 fps (and at 1 fps) a 2-frame clip (0.08 s) is worth one sample.
    for opts, expected in [
        ({}, [0]),
        ({"mode": "keyframe"}, [0]),
        ({"fps": 1}, [0]),
        ({"num_frames": 1}, [0]),
        ({"num_frames": 5}, every),
        ({"fps": 100}, every),
        ({"num_frames": 2, "mode": "keyframe"}, every),
    ]:
        assert assert_true_frames(decode(data, **opts), spec) == expected, opts
    assert decode(data).metadata["total_num_frames"] == n


def test_decode_video_returns_same_frames_when_source_is_path_or_buffer(clip: Clip, tmp_path: Any) -> None:
    spec, data = clip(container="mkv", num_frames=20)
    path = tmp_path / "clip.mkv"
    path.write_bytes(data)
    expected = decode(data, num_frames=5)
    for source in (path, str(path), bytearray(data), memoryview(data)):
        video = decode_video(source, VideoOptions(num_frames=5))
        assert video.frame_indices.tolist() == expected.frame_indices.tolist()
        np.testing.assert_array_equal(video.frames, expected.frames)


def test_decode_video_returns_only_whole_frames_when_faststart_mp4_is_truncated(clip: Clip) -> None:
    # With the index up front, a cut file still demuxes; its last packet is short and flagged
    # corrupt. It used to be sampled and then fail to decode: 3 frames came back for 4 asked.
    spec, data = clip(num_frames=50, gop=10, faststart=True)
    for cut in (len(data) // 2, len(data) * 3 // 4):
        video = decode(data[:cut], num_frames=4)
        indices = assert_true_frames(video, spec)
        assert len(indices) == 4
        assert video.metadata["total_num_frames"] < 50


# --- metadata --------------------------------------------------------------------------------


def test_decode_video_reports_consistent_metadata_when_clip_is_regular(clip: Clip) -> None:
    spec, data = clip(num_frames=50, fps=25, width=160, height=120, gop=10, bframes=True)
    video = decode(data, num_frames=5)
    md = video.metadata
    assert md["fps"] == pytest.approx(25.0)
    assert md["duration"] == pytest.approx(2.0, abs=1e-3)
    assert md["total_num_frames"] == 50
    assert md["frames_indices"] == video.frame_indices.tolist()
    assert (md["width"], md["height"], md["rotation"]) == (160, 120, 0)
    assert md["codec"] == "h264" and "mp4" in md["container"]
    assert md["video_backend"] == "pyav" and md["mode"] == "exact"
    assert md["keyframe_snapped"] == [False] * 5
    assert (md["output_height"], md["output_width"]) == video.frames.shape[1:3]


def test_decode_video_returns_same_frames_when_threads_limited(clip: Clip) -> None:
    spec, data = clip(num_frames=60, gop=30, bframes=True)
    a = decode(data, DecodeLimits(threads=1), num_frames=7)
    b = decode(data, DecodeLimits(threads=2), num_frames=7)
    assert assert_true_frames(a, spec) == assert_true_frames(b, spec)
