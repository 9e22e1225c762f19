"""vLLM's multi_modal_uuids: a video's uuid (from the media pipeline) reaches the prompt vLLM gets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from video_pipeline.engines import tiny_model
from video_pipeline.engines.prompt import MediaTokenIds, multi_modal_uuids
from video_pipeline.engines.types import GenerationRequest, VideoInput


def _video(uuid: str | None = None) -> VideoInput:
    frames = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    meta: dict[str, Any] = {"fps": 2.0, "duration": 1.0, "total_num_frames": 2, "frames_indices": [0, 1]}
    if uuid is not None:
        meta["uuid"] = uuid
    return VideoInput(frames=frames, metadata=meta)


def _request(*videos: VideoInput) -> GenerationRequest:
    content = [{"type": "video"} for _ in videos] + [{"type": "text", "text": "?"}]
    return GenerationRequest(request_id="r", messages=[{"role": "user", "content": content}], videos=videos)


def test_multi_modal_uuids_names_each_video_when_the_pipeline_gave_uuids() -> None:
    assert multi_modal_uuids(_request(_video("vlt-a"), _video("vlt-b"))) == {"video": ["vlt-a", "vlt-b"]}


def test_multi_modal_uuids_leaves_hashing_to_vllm_when_a_video_has_none() -> None:
    assert multi_modal_uuids(_request(_video("vlt-a"), _video())) == {"video": ["vlt-a", None]}
    assert multi_modal_uuids(_request(_video(), _video())) is None
    assert multi_modal_uuids(_request()) is None


def test_vllm_prompt_carries_the_uuids_when_videos_have_them() -> None:
    pytest.importorskip("vllm")
    from video_pipeline.engines.vllm_engine import VllmEngine

    engine = object.__new__(VllmEngine)  # no AsyncLLM: build_prompt only needs the tokenizer
    tokenizer = tiny_model.build_tokenizer()
    engine._tokenizer, engine._chat_template = tokenizer, tokenizer.chat_template
    engine._media_ids = MediaTokenIds(video=None, image=None)
    prompt = engine.build_prompt(_request(_video("vlt-a")))
    assert prompt["multi_modal_uuids"] == {"video": ["vlt-a"]}
    assert len(prompt["multi_modal_data"]["video"]) == 1
    assert "multi_modal_uuids" not in engine.build_prompt(_request(_video()))
