"""The llm model given container bytes (`video`): it runs video_media inside Triton through BLS,
answers the video_info first, then streams the same tokens as the media-then-llm path."""

from __future__ import annotations

import json
import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.e2e.test_llm import ASK, GREEDY, OPTS, _inputs, _media, stream, text_of
from tests.videos import ClipSpec, make_video
from video_pipeline import contract as C
from video_pipeline.media import frame_list

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10))


def infos_of(url: str, inputs: list, request_id: str = "") -> tuple[list[dict], list[dict]]:
    """(video_info documents, text responses) of one llm stream."""
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    infos: list[dict] = []
    texts: list[dict] = []
    try:
        client.async_stream_infer("llm", inputs, request_id=request_id or f"b{time.monotonic_ns()}",
                                  enable_empty_final_response=True)
        while True:
            result, error = results.get(timeout=180)
            if error is not None:
                raise error
            info = result.as_numpy(C.VIDEO_INFO)
            if info is not None:
                assert result.as_numpy(C.TEXT_OUTPUT) is None  # the info response holds nothing else
                infos.extend(json.loads(x) for x in info.reshape(-1))
            elif result.as_numpy(C.TEXT_OUTPUT) is not None:
                texts.append({"text": result.as_numpy(C.TEXT_OUTPUT)[0].decode(),
                              "video_tokens": int(result.as_numpy(C.NUM_VIDEO_TOKENS)[0])})
            if result.get_response().parameters["triton_final_response"].bool_param:
                return infos, texts
    finally:
        client.stop_stream()
        client.close()


def test_llm_decodes_video_bytes_inside_triton_and_answers_as_media_then_llm_would(triton, clip) -> None:
    frames, info = _media(triton.grpc_url, clip, OPTS)
    reference = stream(triton.grpc_url, "llm", _inputs(
        messages=json.dumps(ASK), video_frames=frames, video_info=info.reshape(-1).tolist(),
        sampling_parameters=json.dumps(GREEDY)))
    infos, texts = infos_of(triton.grpc_url, _inputs(
        messages=json.dumps(ASK), video=[clip], video_options=[json.dumps(OPTS).encode()],
        sampling_parameters=json.dumps(GREEDY), stream=True), request_id="bytes-id-1")
    (got,) = infos
    expected = json.loads(info.reshape(-1)[0])
    assert got["num_frames"] == 8 and got["num_video_tokens"] == expected["num_video_tokens"]
    assert got["frames_indices"] == expected["frames_indices"]
    assert "".join(t["text"] for t in texts) == text_of(reference)
    assert texts[-1]["video_tokens"] == reference[-1]["video_tokens"] > 0
    # the media models ran under the client's request id (their log lines carry it)
    assert "video_decoder: request bytes-id-1 done" in triton.log_tail(200000)


def test_llm_decodes_a_frame_list_in_video_decoder_when_frame_list_is_set(triton) -> None:
    import io

    from PIL import Image

    stills = []
    for i in range(4):
        buf = io.BytesIO()
        Image.fromarray(np.full((48, 64, 3), i * 40, np.uint8)).save(buf, "JPEG")
        stills.append(buf.getvalue())
    infos, texts = infos_of(triton.grpc_url, _inputs(
        messages=json.dumps(ASK), video=[frame_list.encode(stills)],
        video_options=[json.dumps({C.FRAME_LIST: True, "fps": 2}).encode()],
        sampling_parameters=json.dumps(GREEDY)))
    (info,) = infos
    assert info["video_backend"] == "jpeg_sequence" and info["num_frames"] == 4
    assert info["timestamps"] == [0.0, 0.5, 1.0, 1.5]
    assert texts and texts[-1]["video_tokens"] == info["num_video_tokens"]


@pytest.mark.parametrize(("video", "needle", "code"), [
    (b"definitely not a video", "", "INVALID_ARG"),
    (frame_list.encode([b"not a jpeg"]), "not a decodable image", "INVALID_ARG"),
])
def test_llm_answers_the_media_models_error_marked_with_its_code_when_the_video_is_bad(
        triton, video, needle, code) -> None:
    options = [json.dumps({C.FRAME_LIST: True} if needle else OPTS).encode()]
    with pytest.raises(Exception) as info:
        infos_of(triton.grpc_url, _inputs(messages=json.dumps(ASK), video=[video], video_options=options,
                                          sampling_parameters=json.dumps(GREEDY)))
    doc = C.parse_error(str(info.value.message()))
    assert doc is not None, str(info.value)
    assert doc.triton_code == code and doc.kind == "video" and needle in doc.message


def test_llm_aborts_a_video_bytes_generation_when_the_client_cancels_mid_stream(triton, clip) -> None:
    long = {"max_tokens": 5000, "temperature": 0, "ignore_eos": True}
    marker = "cancelled by the client: aborted in the engine"
    for _attempt in range(3):
        seen = triton.log_tail(100000).count(marker)
        out = stream(triton.grpc_url, "llm", _inputs(
            messages=json.dumps(ASK), video=[clip], video_options=[json.dumps(OPTS).encode()],
            sampling_parameters=json.dumps(long), stream=True), cancel_after=3)
        assert len(out) == 3
        deadline = time.monotonic() + 15
        while triton.log_tail(100000).count(marker) == seen and time.monotonic() < deadline:
            time.sleep(0.1)
        if triton.log_tail(100000).count(marker) > seen:
            break
    else:
        pytest.fail("the engine never aborted a cancelled request")
