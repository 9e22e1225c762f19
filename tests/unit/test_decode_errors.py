"""decode_video on bad input: every failure is one of our typed errors, with a message naming the problem."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.videos import ClipSpec, make_audio_only, make_frame, make_video
from video_pipeline.errors import DecodeTimeout, InvalidInput, MediaTooLarge, PipelineError, UnsupportedMedia
from video_pipeline.media.decode import decode_video
from video_pipeline.media.facts import check_video, probe_video
from video_pipeline.media.options import DecodeLimits, VideoOptions

BROKEN = Path(__file__).resolve().parents[1] / "data" / "broken"
# What each committed file must raise (see tests/data/broken/README.md); any file added
# there without an entry must still raise a typed error.
BROKEN_EXPECTED: dict[str, type[PipelineError]] = {
    "zero.mp4": InvalidInput,
    "truncated_half.mp4": InvalidInput,
    "truncated_1k.mp4": InvalidInput,
    "header_only.mkv": InvalidInput,
    "garbage.webm": InvalidInput,
    "html_as.mp4": InvalidInput,
    "elf_as.mp4": InvalidInput,
    "png_as.mp4": UnsupportedMedia,
    "audio_only.m4a": UnsupportedMedia,
    "audio_only.wav": UnsupportedMedia,
}
SMALL = ClipSpec(num_frames=50, gop=10, width=160, height=120)


def probe(source: Any, limits: DecodeLimits | None = None) -> None:
    """The header check the decoder makes before decoding (and the shim makes with its own limits)."""
    limits = limits or DecodeLimits()
    check_video(probe_video(source, limits), limits)


def raises_typed(expected: type[PipelineError], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Calls fn, which must raise exactly ``expected`` (not a subclass, not a stray exception)."""
    try:
        fn(*args, **kwargs)
    except PipelineError as exc:
        assert type(exc) is expected, f"{type(exc).__name__}: {exc}"
        assert str(exc).strip()
        return str(exc)
    raise AssertionError(f"no error raised; expected {expected.__name__}")


def _png() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="image2pipe") as out:
        s = out.add_stream("png")
        s.width, s.height, s.pix_fmt = 32, 32, "rgb24"
        out.mux(s.encode(av.VideoFrame.from_ndarray(make_frame(7, 32, 32), format="rgb24")))
        out.mux(s.encode(None))
    return buf.getvalue()


# --- not a video -------------------------------------------------------------------------


def test_decode_video_raises_invalid_input_when_bytes_are_empty() -> None:
    assert "empty" in raises_typed(InvalidInput, decode_video, b"")


@pytest.mark.parametrize("size", [1, 16, 1000, 100_000])
def test_decode_video_raises_invalid_input_when_bytes_are_random(size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    assert "decodable" in raises_typed(InvalidInput, decode_video, data)


@pytest.mark.parametrize("container", ["mp4", "mov"])
@pytest.mark.parametrize("keep", ["half", "1k", "64b"])
def test_decode_video_raises_invalid_input_when_mp4_is_truncated(container: str, keep: str) -> None:
    data = make_video(ClipSpec(container=container, num_frames=50, gop=10))
    cut = {"half": len(data) // 2, "1k": 1024, "64b": 64}[keep]
    raises_typed(InvalidInput, decode_video, data[:cut])


def test_decode_video_raises_invalid_input_when_file_is_html() -> None:
    html = (
        b"<!DOCTYPE html><html><head><title>Moved</title></head><body><a href='/x.mp4'>here</a></body></html>"
    )
    assert "decodable" in raises_typed(InvalidInput, decode_video, html)


def test_decode_video_raises_invalid_input_when_file_is_an_executable() -> None:
    elf = b"\x7fELF\x02\x01\x01" + bytes(57) + bytes(range(256)) * 8
    raises_typed(InvalidInput, decode_video, elf)


def test_decode_video_raises_unsupported_media_when_file_is_a_still_image() -> None:
    # FFmpeg opens a PNG as a one-frame video; it used to come back as a "video".
    assert "image" in raises_typed(UnsupportedMedia, decode_video, _png())
    assert "image" in raises_typed(UnsupportedMedia, probe, _png())


@pytest.mark.parametrize(
    ("codec", "container"), [("aac", "mp4"), ("opus", "webm"), ("aac", "mkv"), ("pcm_s16le", "wav")]
)
def test_decode_video_raises_unsupported_media_when_file_is_audio_only(codec: str, container: str) -> None:
    data = make_audio_only(codec, container, 0.3)
    assert "audio" in raises_typed(UnsupportedMedia, decode_video, data)
    assert "audio" in raises_typed(UnsupportedMedia, probe, data)


def test_decode_video_raises_invalid_input_when_path_does_not_exist(tmp_path: Path) -> None:
    assert "cannot read" in raises_typed(InvalidInput, decode_video, tmp_path / "missing.mp4")
    raises_typed(InvalidInput, decode_video, str(tmp_path))  # a directory


def test_decode_video_raises_invalid_input_when_path_is_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty" in raises_typed(InvalidInput, decode_video, tmp_path / "empty.mp4")


def test_decode_video_raises_invalid_input_naming_start_when_window_is_after_the_end() -> None:
    data = make_video(SMALL)
    assert "start=5.0" in raises_typed(InvalidInput, decode_video, data, VideoOptions(start=5.0))


# --- committed broken files ----------------------------------------------------------------


def _broken_files() -> list[Path]:
    return sorted(p for p in BROKEN.iterdir() if p.name != "README.md")


def test_broken_files_are_tiny_and_listed_when_committed() -> None:
    files = _broken_files()
    assert {p.name for p in files} >= set(BROKEN_EXPECTED), "a file listed in BROKEN_EXPECTED is missing"
    assert all(p.stat().st_size < 20_000 for p in files)


@pytest.mark.parametrize("path", _broken_files(), ids=lambda p: p.name)
def test_decode_video_raises_typed_error_when_file_is_broken(path: Path) -> None:
    expected = BROKEN_EXPECTED.get(path.name)
    for source in (path, path.read_bytes()):
        try:
            decode_video(source)
        except PipelineError as exc:
            assert type(exc) in (InvalidInput, UnsupportedMedia, MediaTooLarge)
            assert expected is None or type(exc) is expected, f"{path.name}: {type(exc).__name__}: {exc}"
            assert str(exc).strip()
        else:
            raise AssertionError(f"{path.name} decoded without an error")
        try:  # the header alone may look fine (a truncated file), but a refusal is typed, the same as the decoder's
            probe(source)
        except PipelineError as exc:
            assert expected is None or type(exc) is expected, f"{path.name}: {type(exc).__name__}: {exc}"


# --- server limits ------------------------------------------------------------------------


def test_decode_video_raises_media_too_large_when_width_exceeds_limit() -> None:
    msg = raises_typed(MediaTooLarge, decode_video, make_video(SMALL), None, DecodeLimits(max_width=100))
    assert "160x120" in msg and "100" in msg


def test_decode_video_raises_media_too_large_when_height_or_area_exceeds_limit() -> None:
    raises_typed(MediaTooLarge, decode_video, make_video(SMALL), None, DecodeLimits(max_height=119))
    raises_typed(
        MediaTooLarge, decode_video, make_video(SMALL), None, DecodeLimits(max_frame_pixels=160 * 120 - 1)
    )
    raises_typed(MediaTooLarge, probe, make_video(SMALL), DecodeLimits(max_width=100))


def test_decode_video_passes_when_size_equals_limits() -> None:
    limits = DecodeLimits(max_width=160, max_height=120, max_frame_pixels=160 * 120)
    assert len(decode_video(make_video(SMALL), VideoOptions(num_frames=2), limits).frames) == 2


def test_decode_video_raises_media_too_large_when_too_many_frames_requested() -> None:
    msg = raises_typed(MediaTooLarge, decode_video, make_video(SMALL), VideoOptions(num_frames=5000))
    assert "5000" in msg
    limits = DecodeLimits(max_sampled_frames=8)
    raises_typed(MediaTooLarge, decode_video, make_video(SMALL), VideoOptions(num_frames=9), limits)
    raises_typed(MediaTooLarge, decode_video, make_video(SMALL), VideoOptions(fps=1, max_frames=9), limits)


def test_decode_video_raises_media_too_large_when_container_has_too_many_streams() -> None:
    data = make_video(ClipSpec(num_frames=10, extra_video_streams=2))
    assert "3 streams" in raises_typed(MediaTooLarge, decode_video, data, None, DecodeLimits(max_streams=2))
    assert len(decode_video(data, VideoOptions(num_frames=2), DecodeLimits(max_streams=3)).frames) == 2


@pytest.mark.parametrize("container", ["mp4", "mkv", "webm"])
def test_decode_video_raises_media_too_large_when_duration_exceeds_limit(container: str) -> None:
    codec = "libvpx-vp9" if container == "webm" else "libx264"
    data = make_video(ClipSpec(codec=codec, container=container, num_frames=50, fps=25))  # 2 s
    assert "limit" in raises_typed(MediaTooLarge, decode_video, data, None, DecodeLimits(max_duration_s=1.0))


def test_decode_video_raises_media_too_large_when_frame_count_exceeds_limit() -> None:
    data = make_video(SMALL)
    raises_typed(MediaTooLarge, decode_video, data, None, DecodeLimits(max_total_frames=10))
    mkv = make_video(ClipSpec(container="mkv", num_frames=50))  # declares no count: caught while indexing
    raises_typed(MediaTooLarge, decode_video, mkv, None, DecodeLimits(max_total_frames=10))


def test_decode_video_raises_media_too_large_when_output_exceeds_byte_budget() -> None:
    opts = VideoOptions(num_frames=10, resize=False)  # 10 * 160 * 120 * 3 = 576000 bytes
    msg = raises_typed(
        MediaTooLarge, decode_video, make_video(SMALL), opts, DecodeLimits(max_output_bytes=575_999)
    )
    assert "576000" in msg
    assert len(decode_video(make_video(SMALL), opts, DecodeLimits(max_output_bytes=576_000)).frames) == 10


def test_decode_video_raises_media_too_large_when_input_exceeds_byte_budget(tmp_path: Path) -> None:
    data = make_video(SMALL)
    limits = DecodeLimits(max_input_bytes=len(data) - 1)
    raises_typed(MediaTooLarge, decode_video, data, None, limits)
    (tmp_path / "clip.mp4").write_bytes(data)
    raises_typed(MediaTooLarge, decode_video, tmp_path / "clip.mp4", None, limits)


def test_decode_video_raises_decode_timeout_when_decoding_takes_too_long() -> None:
    data = make_video(ClipSpec(num_frames=300, width=320, height=240, gop=250, bframes=True))
    msg = raises_typed(
        DecodeTimeout, decode_video, data, VideoOptions(num_frames=16), DecodeLimits(decode_timeout_s=1e-6)
    )
    assert "limit" in msg


def test_decode_video_raises_decode_timeout_when_sequential_fallback_is_slow() -> None:
    # AVI with B-frames has no usable timestamps: the whole file is decoded in order.
    data = make_video(ClipSpec(container="avi", num_frames=60, bframes=True))
    raises_typed(
        DecodeTimeout, decode_video, data, VideoOptions(num_frames=4), DecodeLimits(decode_timeout_s=1e-6)
    )


# --- damaged media never escapes as an untyped error ----------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        ClipSpec(container="mp4", num_frames=30, gop=10, bframes=True, faststart=True),
        ClipSpec(container="mkv", num_frames=30, gop=10, bframes=True),
        ClipSpec(codec="libvpx-vp9", container="webm", num_frames=30, gop=10),
        ClipSpec(codec="mpeg4", container="avi", num_frames=30, gop=10, bframes=True),
    ],
    ids=["mp4-faststart", "mkv", "webm", "avi"],
)
def test_decode_video_returns_frames_or_typed_error_when_bytes_are_damaged(spec: ClipSpec) -> None:
    data = make_video(spec)
    rng = np.random.default_rng(len(data))
    variants = [data[:cut] for cut in np.linspace(100, len(data) - 1, 12).astype(int)]
    for _ in range(12):
        damaged = np.frombuffer(data, dtype=np.uint8).copy()
        at = rng.integers(0, len(data), size=int(rng.integers(1, 40)))
        damaged[at] = rng.integers(0, 256, size=len(at))
        variants.append(damaged.tobytes())
    for variant in variants:
        try:
            video = decode_video(variant, VideoOptions(num_frames=5))
        except PipelineError as exc:
            assert type(exc) in (InvalidInput, UnsupportedMedia, MediaTooLarge), repr(exc)
        else:
            assert video.frames.shape[0] == len(video.frame_indices) >= 1
            assert video.frames.dtype == np.uint8
