"""The NVDEC decode path on a machine without a GPU: backend selection, fallback, and the contract.

No CUDA here (nor in CI), so the GPU's part, torchcodec's ``get_frames_played_at``, is played by
:class:`PyAVReader`: PyAV decodes the stream on the CPU and hands back the frames at the asked
times as torch tensors, exactly what the real reader returns but on the CPU. Everything around it
(PyAV's index pass, the choice of frames, the checks on what comes back, resizing with torch,
metadata, DecoderStep, the cache key, every fallback) is the production code. The real GPU runs
in tests/gpu/test_nvdec.py and scripts/gpu_decode_check.sh.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from typing import Any

import av
import numpy as np
import pytest

from tests.videos import ClipSpec, available, make_video, read_indices
from video_pipeline import contract as C
from video_pipeline.errors import InvalidInput, MediaTooLarge
from video_pipeline.media import gpu_decode
from video_pipeline.media.decode import decode_video
from video_pipeline.media.gpu_decode import (
    BACKEND_PARAM,
    DecodeBackend,
    NvdecDecoder,
    codec_unsupported,
    select_backend,
)
from video_pipeline.media.options import DecodeLimits, VideoOptions
from video_pipeline.steps import DecoderStep

torch = pytest.importorskip("torch", reason="the NVDEC path resizes with torch")

CLIP = ClipSpec(width=160, height=96, num_frames=60, fps=25, gop=12)
# Bicubic in torch vs FFmpeg's swscale, same source pixels: a level or two on flat cells, more on edges.
MEAN_ABS_TOLERANCE = 4.0


class PyAVReader:
    """Stands in for torchcodec on CUDA: the frames played at ``seconds`` as uint8 (N, 3, H, W) tensors."""

    def __init__(self, shift_pts: float = 0.0, error: Exception | None = None) -> None:
        self.calls = 0
        self.shift_pts = shift_pts
        self.error = error

    def read(self, source: Any, stream_index: int, seconds: Sequence[float]) -> tuple[Any, np.ndarray]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
            stream = container.streams[stream_index]
            tb = float(stream.time_base)
            wanted = {round(s / tb): k for k, s in enumerate(seconds)}  # torchcodec rounds to the closest pts
            out: list[Any] = [None] * len(seconds)
            pts = np.zeros(len(seconds))
            for frame in container.decode(stream):
                if frame.pts in wanted:
                    k = wanted[frame.pts]
                    out[k] = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                    pts[k] = frame.pts * tb + self.shift_pts
        return torch.stack(out), pts


def nvdec_backend(reader: PyAVReader | None = None, mode: str = "nvdec") -> DecodeBackend:
    return DecodeBackend(mode, NvdecDecoder(reader=reader or PyAVReader(), device="cpu"))


def decoder_inputs(video: bytes, options: dict[str, Any]) -> dict[str, np.ndarray]:
    return {C.VIDEO: np.array([video], dtype=np.object_),
            C.VIDEO_OPTIONS: np.array([json.dumps(options).encode()], dtype=np.object_)}


@pytest.mark.parametrize("options", [
    {},
    {"num_frames": 7},
    {"fps": 5, "start": 0.5, "end": 1.9},
    {"mode": "keyframe", "num_frames": 4},
    {"num_frames": 3, "resize": False},
    {"num_frames": 5, "max_pixels": 64 * 28 * 28},
], ids=["default", "num_frames", "window", "keyframe", "native_size", "small_budget"])
def test_nvdec_decoder_returns_pyavs_frames_and_metadata_when_given_the_same_options(options) -> None:
    video = make_video(CLIP)
    opts = VideoOptions.from_dict(options)
    ref = decode_video(video, opts)
    got = NvdecDecoder(reader=PyAVReader(), device="cpu").decode(video, opts)
    assert isinstance(got.frames, np.ndarray) and got.frames.dtype == np.uint8
    assert got.frames.shape == ref.frames.shape
    np.testing.assert_array_equal(got.frame_indices, ref.frame_indices)
    np.testing.assert_array_equal(got.timestamps, ref.timestamps)
    assert got.metadata["video_backend"] == "nvdec"
    assert {**got.metadata, "video_backend": "pyav"} == ref.metadata
    assert read_indices(got.frames) == [int(i) for i in ref.frame_indices]
    diff = np.abs(got.frames.astype(np.int16) - ref.frames.astype(np.int16)).reshape(len(got.frames), -1)
    assert float(diff.mean(axis=1).max()) <= MEAN_ABS_TOLERANCE


def test_nvdec_decoder_keeps_frames_on_the_device_when_asked() -> None:
    got = NvdecDecoder(reader=PyAVReader(), device="cpu", keep_on_device=True).decode(
        make_video(CLIP), VideoOptions(num_frames=3))
    assert isinstance(got.frames, torch.Tensor) and got.frames.dtype == torch.uint8
    assert tuple(got.frames.shape[1:]) == (got.metadata["output_height"], got.metadata["output_width"], 3)


def test_select_backend_uses_pyav_with_the_reason_when_auto_finds_no_cuda(caplog) -> None:
    # This machine has no GPU: the real probe must say so, and auto must not fail the load.
    reason = gpu_decode.nvdec_unavailable()
    assert reason is not None
    with caplog.at_level(logging.INFO, logger=gpu_decode.__name__):
        backend = select_backend("auto")
    assert backend.name == "pyav" and backend.nvdec is None
    records = [r for r in caplog.records if reason in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert backend.decode(make_video(CLIP), VideoOptions(num_frames=2)).metadata["video_backend"] == "pyav"


def test_select_backend_warns_once_when_nvdec_is_asked_for_and_unavailable(caplog) -> None:
    with caplog.at_level(logging.INFO, logger=gpu_decode.__name__):
        backend = select_backend("nvdec", probe=lambda: "no CUDA device (test)")
        backend.fell_back("no CUDA device (test)")
    assert backend.name == "pyav"
    records = [r for r in caplog.records if "no CUDA device (test)" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.WARNING


def test_select_backend_builds_the_nvdec_decoder_when_the_probe_finds_a_gpu() -> None:
    made = NvdecDecoder(reader=PyAVReader(), device="cpu")
    backend = select_backend("auto", probe=lambda: None, make_nvdec=lambda: made)
    assert backend.name == "nvdec" and backend.nvdec is made
    assert select_backend("pyav", probe=lambda: pytest.fail("pyav must not probe")).name == "pyav"


@pytest.mark.parametrize("value", ["gpu", "NVDEC", "cuda", "pyav "])
def test_decoder_step_fails_the_load_when_decode_backend_is_unknown(value: str) -> None:
    with pytest.raises(InvalidInput, match=BACKEND_PARAM):
        DecoderStep({BACKEND_PARAM: value, "cache_max_bytes": "0"})


@pytest.mark.parametrize("value", ["", "pyav", "auto", "nvdec"])
def test_decoder_step_loads_on_pyav_when_decode_backend_is_valid_and_no_gpu_is_there(value: str) -> None:
    step = DecoderStep({BACKEND_PARAM: value, "cache_max_bytes": "0"})
    assert step.backend.name == "pyav" and step.backend.mode == (value or "pyav")


def test_decoder_step_passes_a_gpu_decode_through_identically_when_a_backend_is_injected(tmp_path) -> None:
    video, options = make_video(CLIP), {"num_frames": 6}
    params = {"cache_max_bytes": str(10**8), "cache_dir": str(tmp_path / "cache")}
    cpu = DecoderStep(params)(decoder_inputs(video, options))
    reader = PyAVReader()
    gpu = DecoderStep(params, backend=nvdec_backend(reader))(decoder_inputs(video, options))
    assert reader.calls == 1
    for name in (C.TIMESTAMPS, C.FRAME_INDICES):
        np.testing.assert_array_equal(gpu[name], cpu[name])
    assert gpu[C.FRAMES].shape == cpu[C.FRAMES].shape and gpu[C.FRAMES].dtype == np.uint8
    meta_cpu, meta_gpu = (json.loads(out[C.VIDEO_METADATA][0]) for out in (cpu, gpu))
    assert meta_gpu["video_backend"] == "nvdec" and meta_cpu["video_backend"] == "pyav"
    # The backends may differ by a level in a pixel: they never share a cache entry.
    assert meta_gpu["cache_key"] != meta_cpu["cache_key"] and meta_gpu["cache"] == "miss"
    same = {k for k in meta_cpu if k not in ("video_backend", "cache_key")}
    assert {k: meta_gpu[k] for k in same} == {k: meta_cpu[k] for k in same}


def test_decode_backend_falls_back_to_pyav_when_the_codec_has_no_gpu_decoder(caplog) -> None:
    spec = ClipSpec(codec="mpeg4", container="avi", width=128, height=96, num_frames=20, gop=5)
    if reason := available(spec.codec, spec.container):
        pytest.skip(reason)
    reader = PyAVReader()
    backend = nvdec_backend(reader, mode="auto")
    with caplog.at_level(logging.INFO, logger=gpu_decode.__name__):
        for _ in range(2):
            got = backend.decode(make_video(spec), VideoOptions(num_frames=4))
    assert got.metadata["video_backend"] == "pyav" and reader.calls == 0
    assert [r.levelno for r in caplog.records if "mpeg4" in r.getMessage()] == [logging.INFO]  # once


def test_decode_backend_falls_back_to_pyav_when_the_pixel_format_is_not_420() -> None:
    spec = ClipSpec(width=127, height=95, num_frames=10)  # odd sides: the generator encodes 4:4:4
    reader = PyAVReader()
    got = nvdec_backend(reader).decode(make_video(spec), VideoOptions(num_frames=3))
    assert got.metadata["video_backend"] == "pyav" and reader.calls == 0


def test_decode_backend_falls_back_to_pyav_when_the_video_is_rotated() -> None:
    spec = ClipSpec(width=128, height=96, num_frames=12, gop=4, rotation=-90)
    reader = PyAVReader()
    got = nvdec_backend(reader).decode(make_video(spec), VideoOptions(num_frames=3))
    assert got.metadata["video_backend"] == "pyav" and got.metadata["rotation"] == 90 and reader.calls == 0


@pytest.mark.parametrize("reader", [PyAVReader(shift_pts=0.04), PyAVReader(error=RuntimeError("NVDEC error"))],
                         ids=["other_frames", "torchcodec_error"])
def test_decode_backend_falls_back_to_pyav_when_the_gpu_returns_something_else(reader, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=gpu_decode.__name__):
        got = nvdec_backend(reader).decode(make_video(CLIP), VideoOptions(num_frames=4))
    ref = decode_video(make_video(CLIP), VideoOptions(num_frames=4))
    assert got.metadata["video_backend"] == "pyav" and reader.calls == 1
    np.testing.assert_array_equal(got.frames, ref.frames)
    assert any(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("data, error", [(b"not a video at all" * 10, InvalidInput), (b"", InvalidInput)])
def test_nvdec_decoder_raises_pyavs_typed_error_when_the_input_is_bad(data: bytes, error: type) -> None:
    with pytest.raises(error) as gpu:
        NvdecDecoder(reader=PyAVReader(), device="cpu").decode(data, VideoOptions())
    with pytest.raises(error) as cpu:
        decode_video(data, VideoOptions())
    assert str(gpu.value) == str(cpu.value)


def test_nvdec_decoder_enforces_the_output_budget_when_frames_would_exceed_it() -> None:
    limits = DecodeLimits(max_output_bytes=1000)
    with pytest.raises(MediaTooLarge, match="the limit is 1000"):
        NvdecDecoder(reader=PyAVReader(), device="cpu").decode(make_video(CLIP), VideoOptions(), limits)


@pytest.mark.parametrize("codec, fmt, w, h, ok", [
    ("h264", "yuv420p", 1920, 1080, True),
    ("hevc", "yuvj420p", 3840, 2160, True),
    ("h264", "yuv444p", 1920, 1080, False),
    ("h264", "yuv420p", 8192, 4320, False),
    ("hevc", "yuv420p", 128, 96, False),
    ("vp8", "yuv420p", 640, 480, False),
    ("prores", "yuv422p10le", 1920, 1080, False),
])
def test_codec_unsupported_names_a_reason_when_nvdec_cannot_decode(codec, fmt, w, h, ok) -> None:
    reason = codec_unsupported(codec, fmt, w, h)
    assert (reason is None) == ok
