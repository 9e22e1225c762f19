"""video_pipeline.media.facts: the header probe (with its time limit), the limits check the decoder and the
shim share, the image header check and the token estimate's refusals."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from tests.bad_media import many_streams, mp4_declaring_frames, png_header
from tests.videos import ClipSpec, make_audio_only, make_video
from video_pipeline.errors import DecodeTimeout, InvalidInput, MediaTooLarge, UnsupportedMedia
from video_pipeline.media import facts
from video_pipeline.media.decode import decode_video
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.media.options import DecodeLimits, VideoOptions

CLIP = ClipSpec(width=160, height=120, fps=25, num_frames=50, gop=10)  # 2 s


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# --- the probe ------------------------------------------------------------------------------------------


def test_probe_video_reports_the_header_facts_when_the_clip_is_valid() -> None:
    found = facts.probe_video(make_video(ClipSpec(codec="libvpx-vp9", container="webm", width=96, height=64,
                                                  num_frames=25, fps=25)))
    assert found.codec in {"vp9", "libvpx-vp9"} and "webm" in found.container
    assert (found.width, found.height, found.fps, found.streams, found.has_audio) == (96, 64, 25.0, 1, False)
    assert found.duration == pytest.approx(1.0, abs=0.05)


def test_probe_video_reads_a_path_and_sees_the_audio_track_when_the_clip_has_one(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(make_video(ClipSpec(num_frames=25, audio="aac")))
    found = facts.probe_video(path)
    assert (found.width, found.height, found.streams, found.has_audio) == (128, 96, 2, True)
    assert found.frames == 25


def test_probe_video_gives_ffmpeg_its_time_limit_when_it_opens_the_container(monkeypatch) -> None:
    data = make_video(CLIP)
    seen: list[Any] = []
    real_open = av.open

    def spying_open(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("timeout"))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", spying_open)
    facts.probe_video(data)
    facts.probe_video(data, timeout=0.5)
    decode_video(data, VideoOptions(num_frames=1), DecodeLimits(decode_timeout_s=7))
    decode_video(data, VideoOptions(num_frames=1), DecodeLimits(decode_timeout_s=0))
    # header analysis only: reading packets afterwards is the decoder's deadline's business
    assert seen == [(facts.PROBE_TIMEOUT_S, None), (0.5, None), (7, None), None]


def test_probe_video_keeps_what_it_learnt_when_the_time_limit_cuts_the_stream_analysis_short() -> None:
    found = facts.probe_video(many_streams(200), DecodeLimits(max_streams=1000), timeout=1e-9)
    assert (found.streams, found.width, found.height) == (200, 16, 16)


def test_probe_video_raises_decode_timeout_when_the_time_limit_stops_reading_the_header(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(make_video(CLIP))
    with pytest.raises(DecodeTimeout, match="opening the video took longer than the 1e-09 s limit"):
        facts.probe_video(path, timeout=1e-9)


def test_probe_video_refuses_what_bounds_its_own_work_when_size_or_streams_pass_the_limits() -> None:
    with pytest.raises(MediaTooLarge, match="the limit is 100"):
        facts.probe_video(make_video(CLIP), DecodeLimits(max_input_bytes=100))
    with pytest.raises(MediaTooLarge, match="the container has 3 streams; the limit is 2"):
        facts.probe_video(make_video(ClipSpec(num_frames=5, extra_video_streams=2)), DecodeLimits(max_streams=2))
    with pytest.raises(InvalidInput, match="empty"):
        facts.probe_video(b"")


def test_probe_video_refuses_with_typed_errors_when_the_data_is_no_video() -> None:
    with pytest.raises(UnsupportedMedia, match="audio only"):
        facts.probe_video(make_audio_only("aac", "mp4", 0.3))
    with pytest.raises(InvalidInput, match="not a decodable video container"):
        facts.probe_video(b"<html>not a video</html>")
    with pytest.raises(UnsupportedMedia, match="still image"):
        facts.probe_video(jpeg())


# --- the limits check ------------------------------------------------------------------------------------


def test_check_video_refuses_a_frame_size_over_the_limit_and_passes_one_equal_to_it() -> None:
    found = facts.probe_video(make_video(CLIP))
    assert facts.video_excess(found, DecodeLimits(max_frame_pixels=160 * 120 - 1)) == facts.Excess(
        "max_frame_pixels", 160 * 120, 160 * 120 - 1)
    with pytest.raises(MediaTooLarge, match="160x120; the limit is 100x8192"):
        facts.check_video(found, DecodeLimits(max_width=100))
    facts.check_video(found, DecodeLimits(max_width=160, max_height=120, max_frame_pixels=160 * 120))


def test_check_video_refuses_a_video_when_its_declared_duration_or_frames_pass_the_limit() -> None:
    found = facts.probe_video(make_video(CLIP))
    with pytest.raises(MediaTooLarge, match=r"the video lasts 2\.0 s; the limit is 1 s"):
        facts.check_video(found, DecodeLimits(max_duration_s=1.0))
    lying = facts.probe_video(mp4_declaring_frames(3_000_000))
    assert facts.video_excess(lying, DecodeLimits()) == facts.Excess("max_total_frames", 3_000_000, 2_000_000)
    with pytest.raises(MediaTooLarge, match="declares 3000000 frames"):
        facts.check_video(lying, DecodeLimits())


@pytest.mark.parametrize("limits", [DecodeLimits(max_duration_s=1.0), DecodeLimits(max_height=100),
                                    DecodeLimits(max_total_frames=10)])
def test_decoder_refuses_with_the_limits_check_message_when_the_header_passes_a_limit(limits) -> None:
    data = make_video(CLIP)
    with pytest.raises(MediaTooLarge) as by_header:
        facts.check_video(facts.probe_video(data, limits), limits)
    with pytest.raises(MediaTooLarge) as by_decoder:
        decode_video(data, VideoOptions(num_frames=2), limits)
    assert str(by_decoder.value) == str(by_header.value)


# --- images -------------------------------------------------------------------------------------------------


def test_probe_image_reads_the_format_and_size_from_the_header_when_the_data_is_an_image(tmp_path: Path) -> None:
    assert facts.probe_image(jpeg()) == facts.ImageFacts("JPEG", 64, 48)
    (tmp_path / "a.jpg").write_bytes(jpeg((20, 10)))
    assert facts.probe_image(tmp_path / "a.jpg") == facts.ImageFacts("JPEG", 20, 10)


def test_probe_image_refuses_with_typed_errors_when_the_data_is_a_bomb_or_no_image() -> None:
    with pytest.raises(MediaTooLarge, match="frame 3 declares a decompression bomb's size"):
        facts.probe_image(png_header(60000, 60000), "frame 3")
    with pytest.raises(InvalidInput, match="the image is not a decodable image"):
        facts.probe_image(b"not an image")
    with pytest.raises(InvalidInput, match="not a decodable image"):
        facts.probe_image(b"\x89PNG\r\n\x1a\n" + bytes(20))


def test_open_image_types_the_error_when_the_pixels_fail_to_load_inside_the_block() -> None:
    whole = jpeg((256, 256))
    truncated = whole[:whole.index(b"\xff\xda") + 64]  # the header and a little of the scan
    with pytest.raises(InvalidInput, match="the still is not a decodable image"):
        with facts.open_image(truncated, "the still") as img:
            assert img.size == (256, 256)  # the header reads
            img.load()


def test_check_frame_size_names_the_picture_when_it_passes_a_limit() -> None:
    facts.check_frame_size(64, 48, DecodeLimits(max_width=64, max_height=48), "the still")
    with pytest.raises(MediaTooLarge, match="the still is 64x48; the limit is 32x8192 and"):
        facts.check_frame_size(64, 48, DecodeLimits(max_width=32), "the still")


# --- tokens -------------------------------------------------------------------------------------------------


def test_estimate_video_tokens_answers_none_when_the_header_cannot_tell() -> None:
    found = facts.probe_video(make_video(CLIP))
    media = MediaSettings()
    assert facts.estimate_video_tokens(found, VideoOptions(num_frames=4), media) is not None
    assert facts.estimate_video_tokens(replace(found, duration=None), VideoOptions(), media) is None
    assert facts.estimate_video_tokens(replace(found, fps=None), VideoOptions(), media) is None
    assert facts.estimate_video_tokens(found, VideoOptions(start=5.0), media) is None  # the window is empty
