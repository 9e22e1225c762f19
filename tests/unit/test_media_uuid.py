"""Media uuids in the core: video_decoder's uuid aliases (a video named by its uuid alone is served
from the cache) and llm's image cache by uuid; vLLM's uuids stay content-derived."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.videos import ClipSpec, make_video
from video_pipeline import contract as C
from video_pipeline.engines.prompt import multi_modal_uuids
from video_pipeline.errors import InvalidInput
from video_pipeline.llm_handler import ImageCache, build_request
from video_pipeline.steps import DecoderStep

CLIP = ClipSpec(width=64, height=48, fps=10, num_frames=20, gop=5)


def _step(tmp_path: Path, cache: int = 10**8) -> DecoderStep:
    return DecoderStep({"cache_max_bytes": str(cache), "cache_dir": str(tmp_path / "cache")})


def _inputs(video: bytes, options: dict) -> dict:
    return {C.VIDEO: np.array([video], dtype=np.object_),
            C.VIDEO_OPTIONS: np.array([json.dumps(options).encode()], dtype=np.object_)}


def _meta(out: dict) -> dict:
    return json.loads(out[C.VIDEO_METADATA][0])


def test_decoder_serves_a_uuid_alone_from_the_cache_when_it_was_sent_with_media(tmp_path) -> None:
    step = _step(tmp_path)
    first = step(_inputs(make_video(CLIP), {"num_frames": 4, C.MEDIA_UUID: "t:clip"}))
    again = step(_inputs(b"", {"num_frames": 4, C.MEDIA_UUID: "t:clip"}))
    assert _meta(again)["cache"] == "hit" and _meta(again)["cache_key"] == _meta(first)["cache_key"]
    assert np.array_equal(again[C.FRAMES], first[C.FRAMES])


def test_decoder_survives_a_new_step_on_the_same_cache_folder_when_the_uuid_is_known(tmp_path) -> None:
    _step(tmp_path)(_inputs(make_video(CLIP), {"num_frames": 4, C.MEDIA_UUID: "t:clip"}))
    assert _meta(_step(tmp_path)(_inputs(b"", {"num_frames": 4, C.MEDIA_UUID: "t:clip"})))["cache"] == "hit"


@pytest.mark.parametrize(("uuid", "options", "why"), [
    ("t:unknown", {"num_frames": 4}, "no media is cached under this uuid"),
    ("other:clip", {"num_frames": 4}, "no media is cached under this uuid"),  # another tenant's namespace
    ("t:clip", {"num_frames": 3}, "not cached with these options"),
])
def test_decoder_refuses_a_uuid_alone_naming_it_when_nothing_is_cached(tmp_path, uuid, options, why) -> None:
    step = _step(tmp_path)
    step(_inputs(make_video(CLIP), {"num_frames": 4, C.MEDIA_UUID: "t:clip"}))
    with pytest.raises(InvalidInput, match=why) as info:
        step(_inputs(b"", {**options, C.MEDIA_UUID: uuid}))
    assert repr(uuid.split(":", 1)[1]) in str(info.value) and "other" not in str(info.value)


def test_decoder_refuses_a_uuid_alone_when_its_cache_is_off(tmp_path) -> None:
    with pytest.raises(InvalidInput, match="media cache is off"):
        _step(tmp_path, cache=0)(_inputs(b"", {C.MEDIA_UUID: "t:clip"}))


def test_a_rebound_uuid_names_the_newest_media_when_sent_again(tmp_path) -> None:
    step = _step(tmp_path)
    step(_inputs(make_video(CLIP), {"num_frames": 4, C.MEDIA_UUID: "t:clip"}))
    other = step(_inputs(make_video(ClipSpec(width=80, height=48, fps=10, num_frames=20, gop=5)),
                         {"num_frames": 4, C.MEDIA_UUID: "t:clip"}))
    assert _meta(step(_inputs(b"", {"num_frames": 4, C.MEDIA_UUID: "t:clip"})))["cache_key"] == \
        _meta(other)["cache_key"]


def _png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _llm_inputs(images: list[bytes], uuids: list[str | None]) -> dict:
    parts = [{"type": "image", **({C.MEDIA_UUID: u} if u else {})} for u in uuids]
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": "?"}]}]
    return {C.MESSAGES: np.array([json.dumps(messages).encode()], dtype=np.object_),
            C.IMAGE: np.array(images, dtype=np.object_)}


def test_llm_serves_an_image_uuid_alone_from_its_image_cache_with_a_content_derived_vllm_uuid() -> None:
    cache = ImageCache()
    first = build_request(_llm_inputs([_png(7)], ["t:img"]), "r1", cache)
    again = build_request(_llm_inputs([b""], ["t:img"]), "r2", cache)
    assert np.array_equal(first.images[0], again.images[0])
    uuids = multi_modal_uuids(again)
    assert uuids == multi_modal_uuids(first) and uuids["image"][0].startswith("vlt-img-")
    assert "t:img" not in uuids["image"][0]


def test_llm_refuses_an_unknown_image_uuid_naming_it() -> None:
    with pytest.raises(InvalidInput, match=r"image 0: uuid 'img'"):
        build_request(_llm_inputs([b""], ["t:img"]), "r", ImageCache())


def test_llm_images_without_uuids_keep_no_vllm_uuid() -> None:
    assert multi_modal_uuids(build_request(_llm_inputs([_png(1)], [None]), "r", ImageCache())) is None


def test_image_cache_drops_the_least_recently_used_when_full() -> None:
    cache = ImageCache(max_bytes=2 * 8 * 8 * 3)
    for name in ("a", "b", "c"):
        cache.put(name, np.zeros((8, 8, 3), np.uint8), name)
    assert cache.get("a") is None and cache.get("c") is not None
