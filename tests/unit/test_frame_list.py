"""Frame lists: the wire encoding, sampling as vLLM takes a list (fps apart), limits, and video_decoder
decoding one when its options say "frame_list": true."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from video_pipeline import contract as C
from video_pipeline.errors import DecodeTimeout, InvalidInput, MediaTooLarge
from video_pipeline.media import frame_list
from video_pipeline.media.options import DecodeLimits
from video_pipeline.steps import DecoderStep, json_tensor


def jpeg(value: int, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_frame_list_round_trips_its_stills_when_encoded_then_split() -> None:
    stills = [jpeg(0), b"", jpeg(90)]
    data = frame_list.encode(stills)
    assert data[:4] == len(stills[0]).to_bytes(4, "little")  # Triton's BYTES serialisation
    assert frame_list.split(data) == stills


@pytest.mark.parametrize("data", [b"\x05\x00", b"\x09\x00\x00\x00abc"])
def test_frame_list_split_refuses_a_list_when_it_is_truncated(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="truncated"):
        frame_list.split(data)


def test_frame_list_decode_takes_every_still_fps_apart_when_no_sampling_is_asked() -> None:
    d = frame_list.decode_frame_list([jpeg(i * 20) for i in range(5)], {"fps": 2})
    assert d.frames.shape == (5, 48, 64, 3)
    assert d.timestamps.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0] and d.frame_indices.tolist() == [0, 1, 2, 3, 4]
    assert d.metadata["video_backend"] == "jpeg_sequence" and d.metadata["duration"] == 2.5


def test_frame_list_decode_samples_uniformly_when_num_frames_is_given() -> None:
    d = frame_list.decode_frame_list([jpeg(i * 20) for i in range(9)], {"num_frames": 3})
    assert d.frame_indices.tolist() == [0, 4, 8]


def test_frame_list_decode_refuses_a_still_over_the_pixel_limit_before_decoding_it() -> None:
    with pytest.raises(MediaTooLarge, match="frame 0 of the frame list is 64x48; the limit"):
        frame_list.decode_frame_list([jpeg(0)], {}, DecodeLimits(max_width=32))


def test_frame_list_decode_refuses_stills_of_different_sizes_and_non_images() -> None:
    with pytest.raises(InvalidInput, match="one size"):
        frame_list.decode_frame_list([jpeg(0), jpeg(0, (32, 32))], {})
    with pytest.raises(InvalidInput, match="not a decodable image"):
        frame_list.decode_frame_list([b"not a jpeg"], {})
    with pytest.raises(InvalidInput, match="empty"):
        frame_list.decode_frame_list([], {})


def test_frame_list_decode_stops_when_it_runs_past_the_decode_time_limit(monkeypatch) -> None:
    clock = iter([0.0, 0.0, 5.0, 10.0])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    with pytest.raises(DecodeTimeout, match="frame list"):
        frame_list.decode_frame_list([jpeg(0), jpeg(1), jpeg(2)], {}, DecodeLimits(decode_timeout_s=1.0))


def test_frame_list_decode_opens_no_further_still_when_the_time_limit_passes_mid_list(monkeypatch) -> None:
    now = [0.0]
    opened = []
    real_open = frame_list.open_image

    def slow_open(data: bytes, what: str):  # noqa: ANN202 - each still takes a second
        opened.append(what)
        now[0] += 1.0
        return real_open(data, what)

    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(frame_list, "open_image", slow_open)
    with pytest.raises(DecodeTimeout, match="decoding the frame list took longer than the 2.5 s limit"):
        frame_list.decode_frame_list([jpeg(i) for i in range(10)], {"fps": 1}, DecodeLimits(decode_timeout_s=2.5))
    assert len(opened) == 3  # stills 0-2 fit 2.5 s; the fourth is never opened


def test_decoder_step_decodes_a_frame_list_beside_a_container_when_its_options_say_frame_list() -> None:
    from tests.videos import ClipSpec, make_video

    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=20, gop=10))
    step = DecoderStep({})
    out = step({C.VIDEO: np.array([frame_list.encode([jpeg(0), jpeg(50), jpeg(99)]), clip], dtype=np.object_),
                C.VIDEO_OPTIONS: json_tensor([{C.FRAME_LIST: True, "fps": 1}, {"num_frames": 2}])})
    first, second = (json.loads(m) for m in out[C.VIDEO_METADATA])
    assert first["video_backend"] == "jpeg_sequence" and first["num_frames"] == 3
    assert second["num_frames"] == 2 and out[C.FRAMES].shape[0] == 5
    assert out[C.TIMESTAMPS][:3].tolist() == [0.0, 1.0, 2.0]


def test_decoder_step_names_the_video_when_one_frame_list_of_several_is_bad() -> None:
    step = DecoderStep({})
    with pytest.raises(InvalidInput, match="^video 1: frame 0 of the frame list is not a decodable image"):
        step({C.VIDEO: np.array([frame_list.encode([jpeg(0)]), frame_list.encode([b"x"])], dtype=np.object_),
              C.VIDEO_OPTIONS: json_tensor([{C.FRAME_LIST: True}, {C.FRAME_LIST: True}])})
