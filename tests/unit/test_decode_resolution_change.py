"""A stream that changes resolution mid-way (MPEG-TS: a new SPS in band) cannot slip a frame past the
frame-size limits the header was checked against: every decoded frame is checked (issue 20.2)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import av
import numpy as np
import pytest

from tests.videos import make_resolution_change, read_indices
from video_pipeline.errors import MediaTooLarge
from video_pipeline.media import decode
from video_pipeline.media.decode import decode_video
from video_pipeline.media.options import DecodeLimits, VideoOptions

BIG = (640, 360)  # 230,400 pixels: over the lowered limits below, small enough for any CI machine


@pytest.fixture(scope="module")
def changing() -> bytes:
    return make_resolution_change(small=(64, 64), num_small=10, big=BIG)


def test_resolution_change_clip_declares_only_the_small_size_in_its_header(changing) -> None:
    with av.open(io.BytesIO(changing)) as container:
        cc = container.streams.video[0].codec_context
        assert (cc.width, cc.height) == (64, 64)
        assert [(f.width, f.height) for f in container.decode(video=0)][-2:] == [(64, 64), BIG]


@pytest.mark.parametrize("limits", [
    DecodeLimits(max_frame_pixels=100_000), DecodeLimits(max_width=320), DecodeLimits(max_height=200),
], ids=["pixels", "width", "height"])
def test_decode_video_raises_media_too_large_naming_the_frame_when_a_mid_stream_frame_is_over_a_limit(
        changing, limits) -> None:
    with pytest.raises(MediaTooLarge, match=r"the frame at 1\.000 s \(pts \d+\) is 640x360"):
        decode_video(changing, VideoOptions(num_frames=11), limits)


def test_decode_video_checks_every_frame_on_the_sequential_path_when_the_seek_path_misses(
        changing, monkeypatch) -> None:
    monkeypatch.setattr(decode, "_decode_selected",
                        lambda container, stream, index, chosen, *a: np.zeros(len(chosen), dtype=bool))
    with pytest.raises(MediaTooLarge, match="640x360"):
        decode_video(changing, VideoOptions(num_frames=11), DecodeLimits(max_frame_pixels=100_000))


def test_decode_video_decodes_the_changed_frame_when_it_is_within_the_limits(changing) -> None:
    video = decode_video(changing, VideoOptions(num_frames=11, resize=False))
    assert video.frames.shape == (11, 64, 64, 3)  # scaled to the header's size, as before
    assert read_indices(video.frames) == list(range(11))


class _StackingReader:
    """torchcodec's contract on the CPU: frames played at ``seconds`` stacked into one (N, 3, H, W) tensor."""

    def read(self, source: Any, stream_index: int, seconds: Sequence[float]) -> tuple[Any, np.ndarray]:
        torch = pytest.importorskip("torch")
        with av.open(io.BytesIO(source)) as container:
            frames = [torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1)
                      for f in container.decode(video=stream_index)]
        return torch.stack(frames), np.asarray(seconds)  # mixed sizes: torch refuses, as torchcodec would


def test_gpu_decode_backend_raises_media_too_large_when_the_gpu_path_gives_way_to_pyav(changing) -> None:
    pytest.importorskip("torch")
    from video_pipeline.media.gpu_decode import DecodeBackend, NvdecDecoder

    backend = DecodeBackend("nvdec", NvdecDecoder(reader=_StackingReader(), device="cpu"))
    with pytest.raises(MediaTooLarge, match="640x360"):
        backend.decode(changing, VideoOptions(num_frames=11), DecodeLimits(max_frame_pixels=100_000))
