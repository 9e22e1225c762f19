"""video_decoder and video_preprocessor on the real tritonserver, over gRPC and HTTP."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.videos import ClipSpec, make_audio_only, make_video, read_indices
from video_pipeline import contract as C
from video_pipeline.media.decode import decode_video
from video_pipeline.media.options import VideoOptions

pytestmark = pytest.mark.e2e


def _clip(n: int = 60, w: int = 160, h: int = 120, fps: int = 30) -> bytes:
    return make_video(ClipSpec(width=w, height=h, fps=fps, num_frames=n, gop=30))


@pytest.fixture(scope="module")
def clip() -> bytes:
    return _clip()


def _grpc_inputs(video: bytes, options: dict | None) -> list:
    i = grpcclient.InferInput(C.VIDEO, [1], "BYTES")
    i.set_data_from_numpy(np.array([video], dtype=np.object_))
    inputs = [i]
    if options is not None:
        o = grpcclient.InferInput(C.VIDEO_OPTIONS, [1], "BYTES")
        o.set_data_from_numpy(np.array([json.dumps(options).encode()], dtype=np.object_))
        inputs.append(o)
    return inputs


def test_decoder_returns_requested_frames_when_called_over_grpc(triton, clip) -> None:
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        r = client.infer("video_decoder", _grpc_inputs(clip, {"num_frames": 6, "resize": False}))
    frames = r.as_numpy(C.FRAMES)
    assert frames.shape == (6, 120, 160, 3)
    idx = r.as_numpy(C.FRAME_INDICES)
    assert idx.tolist() == [0, 12, 24, 35, 47, 59]
    assert read_indices(frames) == idx.tolist()  # the pixels are those frames
    assert np.allclose(r.as_numpy(C.TIMESTAMPS), idx / 30.0)
    meta = json.loads(r.as_numpy(C.VIDEO_METADATA)[0])
    assert meta["total_num_frames"] == 60 and meta["fps"] == 30.0 and meta["codec"] == "h264"


def test_decoder_output_equals_local_decode_when_tensors_cross_the_stub(triton, clip, tiny_model) -> None:
    """Insurance against the numpy-2 ABI corruption in the 2.51 stub."""
    from video_pipeline.media.model_media import load_media_settings

    options = {"fps": 5, "max_pixels": 112 * 112}
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        r = client.infer("video_decoder", _grpc_inputs(clip, options))
    # the server's decoder sizes for the served (tiny) model's processor
    local = decode_video(clip, VideoOptions.from_dict(options), media=load_media_settings(tiny_model))
    assert np.array_equal(r.as_numpy(C.FRAMES), local.frames)
    assert np.array_equal(r.as_numpy(C.FRAME_INDICES), local.frame_indices)


def test_decoder_works_when_called_over_http_binary(triton, clip) -> None:
    with httpclient.InferenceServerClient(triton.http_url) as client:
        i = httpclient.InferInput(C.VIDEO, [1], "BYTES")
        i.set_data_from_numpy(np.array([clip], dtype=np.object_), binary_data=True)
        o = httpclient.InferInput(C.VIDEO_OPTIONS, [1], "BYTES")
        o.set_data_from_numpy(np.array([b'{"num_frames": 3}'], dtype=np.object_), binary_data=True)
        r = client.infer("video_decoder", [i, o])
    assert r.as_numpy(C.FRAMES).shape[0] == 3


def test_preprocessor_sizes_frames_for_the_engine_when_given_native_frames(triton, clip) -> None:
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        d = client.infer("video_decoder", _grpc_inputs(clip, {"num_frames": 4, "resize": False}))
        inputs = []
        for name, dtype in ((C.FRAMES, "UINT8"), (C.TIMESTAMPS, "FP64"), (C.FRAME_INDICES, "INT64"),
                            (C.VIDEO_METADATA, "BYTES")):
            arr = d.as_numpy(name)
            t = grpcclient.InferInput(name, list(arr.shape), dtype)
            t.set_data_from_numpy(arr)
            inputs.append(t)
        o = grpcclient.InferInput(C.VIDEO_OPTIONS, [1], "BYTES")
        o.set_data_from_numpy(np.array([b'{"min_pixels": 3136, "max_pixels": 12544}'], dtype=np.object_))
        r = client.infer("video_preprocessor", [*inputs, o])
    frames = r.as_numpy(C.VIDEO_FRAMES)
    info = json.loads(r.as_numpy(C.VIDEO_INFO)[0])
    assert frames.shape[0] == 4 and frames.shape[1] % 28 == 0 and frames.shape[2] % 28 == 0
    assert frames.shape[1] * frames.shape[2] <= 12544
    assert info["frames_indices"] == d.as_numpy(C.FRAME_INDICES).tolist()
    assert info["do_sample_frames"] is False and info["fps"] == 30.0
    assert info["num_video_tokens"] == 2 * (frames.shape[1] // 28) * (frames.shape[2] // 28)


@pytest.mark.parametrize(
    ("video", "options", "status", "needle"),
    [
        (b"", None, "INVALID_ARGUMENT", "empty"),
        (b"<html><body>not a video</body></html>" * 20, None, "INVALID_ARGUMENT", "not a decodable"),
        (None, None, "UNIMPLEMENTED", "audio only"),
        (b"clip", {"num_frames": 0}, "INVALID_ARGUMENT", "num_frames"),
        (b"clip", {"bogus": 1}, "INVALID_ARGUMENT", "bogus"),
        (b"clip", {"num_frames": 5000}, "INVALID_ARGUMENT", "2048"),
    ],
)
def test_decoder_answers_a_clear_error_when_input_is_bad(triton, clip, video, options, status, needle) -> None:
    video = make_audio_only() if video is None else (clip if video == b"clip" else video)
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        with pytest.raises(InferenceServerException) as info:
            client.infer("video_decoder", _grpc_inputs(video, options))
        assert status in str(info.value.status())
        assert needle in info.value.message()
        # the instance survives and keeps serving
        assert client.infer("video_decoder", _grpc_inputs(clip, {"num_frames": 1})).as_numpy(C.FRAMES).shape[0] == 1


def test_decoder_serves_concurrent_requests_when_several_clients_call(triton, clip) -> None:
    def one(n: int) -> int:
        with grpcclient.InferenceServerClient(triton.grpc_url) as client:
            return client.infer("video_decoder", _grpc_inputs(clip, {"num_frames": n})).as_numpy(C.FRAMES).shape[0]

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, [1, 2, 3, 4, 5, 6, 7, 8])) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_decoder_packs_videos_of_different_sizes_when_given_several(triton, clip) -> None:
    other = _clip(n=20, w=96, h=64)
    i = grpcclient.InferInput(C.VIDEO, [2], "BYTES")
    i.set_data_from_numpy(np.array([clip, other], dtype=np.object_))
    o = grpcclient.InferInput(C.VIDEO_OPTIONS, [2], "BYTES")
    o.set_data_from_numpy(np.array([b'{"num_frames": 3, "resize": false}', b'{"num_frames": 2, "resize": false}'],
                                   dtype=np.object_))
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        r = client.infer("video_decoder", [i, o])
    frames = r.as_numpy(C.FRAMES)
    metas = [json.loads(m) for m in r.as_numpy(C.VIDEO_METADATA)]
    assert frames.shape == (5, 120, 160, 3)
    assert [(m["num_frames"], m["output_height"], m["output_width"]) for m in metas] == [(3, 120, 160), (2, 64, 96)]
    assert r.as_numpy(C.FRAME_INDICES).tolist() == [0, 29, 59, 0, 19]
    assert not frames[3:, 64:, :].any() and not frames[3:, :, 96:].any()  # padding is zero


def test_decoder_returns_no_frames_when_given_no_video(triton) -> None:
    b = grpcclient.InferInput(C.VIDEO_OPTIONS, [1], "BYTES")
    b.set_data_from_numpy(np.array([b"{}"], dtype=np.object_))
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        r = client.infer("video_decoder", [b])
    assert r.as_numpy(C.FRAMES).shape[0] == 0 and r.as_numpy(C.VIDEO_METADATA).shape == (0,)


def test_preprocessor_describes_the_served_models_media_settings_when_asked(triton, tiny_model) -> None:
    """The media models read the tiny model's own processor files (via llm/1/model.json)."""
    from video_pipeline.media.model_media import load_media_settings

    describe = grpcclient.InferInput(C.DESCRIBE, [1], "BOOL")
    describe.set_data_from_numpy(np.array([True]))
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        r = client.infer(C.VIDEO_PREPROCESSOR.name, [describe])
    described = json.loads(r.as_numpy(C.VIDEO_INFO)[0])
    assert described["media"] == load_media_settings(tiny_model).to_dict()
    assert described["media"]["sources"]["video_max_pixels"].startswith("processor_config.json")
    assert described["engine"] == {"max_model_len": 16384, "limit_mm_per_prompt": {"video": 4, "image": 4}}
