"""NVDEC on a real GPU: torchcodec on CUDA returns PyAV's frames, in the same contract.

For H.264 (and HEVC where this FFmpeg can encode it) clips whose every frame carries its index
(tests/videos.py): the same frame indices, timestamps and metadata as PyAV's decode_video, the
frames' own indices read back from their pixels, and a per-frame mean absolute difference within
a tolerance (the GPU converts colour and resizes with other filters than swscale). Also: frames
kept on the device, DecoderStep with ``decode_backend: nvdec``, and PyAV for a codec NVDEC lacks.

Needs torch with CUDA and torchcodec with its CUDA build (scripts/gpu_decode_check.sh installs it
from .whl/); every test skips, with the reason, where either is missing.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="NVDEC decoding needs torch")
if not torch.cuda.is_available():
    pytest.skip("needs CUDA: torch.cuda.is_available() is False", allow_module_level=True)
pytest.importorskip("av", reason="the reference decoder needs PyAV")

from tests.videos import ClipSpec, available, make_video, read_indices  # noqa: E402 - after the skips
from video_pipeline import contract as C  # noqa: E402
from video_pipeline.media import gpu_decode  # noqa: E402
from video_pipeline.media.decode import decode_video  # noqa: E402
from video_pipeline.media.gpu_decode import NvdecDecoder, select_backend  # noqa: E402
from video_pipeline.media.options import VideoOptions  # noqa: E402
from video_pipeline.steps import DecoderStep  # noqa: E402

pytestmark = pytest.mark.gpu
logger = logging.getLogger(__name__)

_WHY = gpu_decode.nvdec_unavailable()
if _WHY is not None:
    pytest.skip(f"NVDEC unavailable: {_WHY}", allow_module_level=True)

# Per-frame mean |NVDEC - PyAV| in 0..255 levels: colour conversion (NPP vs swscale) and bicubic
# filters differ by a few levels; another frame would differ by far more (its index cells move 64 levels).
MEAN_ABS_TOLERANCE = 6.0
CLIPS = {
    "h264": ClipSpec(codec="libx264", width=640, height=360, fps=25, num_frames=100, gop=25),
    "h264_bframes": ClipSpec(codec="libx264", width=640, height=360, fps=30, num_frames=90, gop=30, bframes=True),
    "hevc": ClipSpec(codec="libx265", width=640, height=360, fps=25, num_frames=75, gop=25),
    "h264_vfr": ClipSpec(codec="libx264", width=320, height=240, num_frames=40, gop=10,
                         pts_ms=tuple(int(i * 40 + (i % 3) * 7) for i in range(40))),
}
OPTIONS = [{}, {"num_frames": 9}, {"fps": 4, "start": 1.0, "end": 2.5}, {"mode": "keyframe", "num_frames": 3},
           {"num_frames": 4, "resize": False}]


def clip(name: str) -> bytes:
    spec = CLIPS[name]
    if reason := available(spec.codec, spec.container):
        pytest.skip(reason)
    return make_video(spec)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: json.dumps(o, sort_keys=True))
@pytest.mark.parametrize("name", sorted(CLIPS))
def test_nvdec_returns_pyavs_frames_when_decoding_on_the_gpu(name: str, options: dict) -> None:
    video, opts = clip(name), VideoOptions.from_dict(options)
    ref = decode_video(video, opts)
    got = NvdecDecoder().decode(video, opts)
    assert got.metadata["video_backend"] == "nvdec"
    np.testing.assert_array_equal(got.frame_indices, ref.frame_indices)
    np.testing.assert_array_equal(got.timestamps, ref.timestamps)
    assert {**got.metadata, "video_backend": "pyav"} == ref.metadata
    assert got.frames.shape == ref.frames.shape and got.frames.dtype == np.uint8
    assert read_indices(got.frames) == read_indices(ref.frames)
    diff = np.abs(got.frames.astype(np.int16) - ref.frames.astype(np.int16)).reshape(len(got.frames), -1)
    worst = float(diff.mean(axis=1).max())
    logger.info("%s %s: %d frames, worst per-frame mean abs diff %.2f", name, options, len(got.frames), worst)
    assert worst <= MEAN_ABS_TOLERANCE


def test_nvdec_keeps_frames_on_the_gpu_when_asked() -> None:
    got = NvdecDecoder(keep_on_device=True).decode(clip("h264"), VideoOptions(num_frames=4))
    assert got.frames.is_cuda and got.frames.dtype == torch.uint8 and got.frames.shape[-1] == 3


def test_decoder_step_decodes_on_nvdec_when_configured_with_a_gpu() -> None:
    step = DecoderStep({"decode_backend": "nvdec", "cache_max_bytes": "0"})
    assert step.backend.name == "nvdec"
    out = step({C.VIDEO: np.array([clip("h264")], dtype=np.object_),
                C.VIDEO_OPTIONS: np.array([b'{"num_frames": 5}'], dtype=np.object_)})
    assert json.loads(out[C.VIDEO_METADATA][0])["video_backend"] == "nvdec"
    ref = decode_video(clip("h264"), VideoOptions(num_frames=5))
    assert out[C.FRAMES].dtype == np.uint8 and out[C.FRAME_INDICES].tolist() == ref.frame_indices.tolist()


def test_auto_falls_back_to_pyav_when_the_codec_has_no_nvdec_decoder() -> None:
    spec = ClipSpec(codec="libvpx", container="webm", width=320, height=240, num_frames=20, gop=5)
    if reason := available(spec.codec, spec.container):
        pytest.skip(reason)
    backend = select_backend("auto")
    assert backend.name == "nvdec"
    assert backend.decode(make_video(spec), VideoOptions(num_frames=3)).metadata["video_backend"] == "pyav"
