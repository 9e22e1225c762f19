"""image_embeds decoding and checks (video_pipeline.media.embeds) and the llm handler's use of them, without an
engine: safe loading, every shape and dtype refusal naming the part, the uuid cache, merging for vLLM."""

from __future__ import annotations

import base64
import io
import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from video_pipeline.errors import InvalidInput, MediaTooLarge
from video_pipeline.llm_handler import ImageCache, request_embeds
from video_pipeline.media import embeds as E

SPEC = E.EmbedsSpec("qwen2_vl", width=8, merge=2, dtype="float32")


def _b64(obj: object) -> str:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return base64.b64encode(buf.getvalue()).decode()


def _npy(array: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, array)
    return base64.b64encode(buf.getvalue()).decode()


def _doc(**payload: object) -> bytes:
    return json.dumps(payload).encode()


def _good(rows: int = 6, grid: tuple[int, int, int] = (1, 4, 6)) -> bytes:
    return _doc(image_embeds=_b64(torch.randn(rows, 8)), image_grid_thw=_b64(torch.tensor(grid)))


def test_decode_part_gives_model_dtype_rows_and_a_one_by_three_grid_when_shapes_agree() -> None:
    part = E.decode_part(_good(), 0, E.EmbedsSpec("qwen2_vl", 8, 2, "bfloat16"))
    assert part[E.EMBEDS_KEY].shape == (6, 8) and part[E.EMBEDS_KEY].dtype == torch.bfloat16
    assert part[E.GRID_KEY].tolist() == [[1, 4, 6]] and part[E.GRID_KEY].dtype == torch.int64


def test_decode_part_takes_npy_tensors_json_grids_and_the_batched_single_item() -> None:
    doc = _doc(image_embeds=_npy(np.ones((1, 6, 8), np.float16)), image_grid_thw=[1, 4, 6])
    part = E.decode_part(doc, 0, SPEC)
    assert part[E.EMBEDS_KEY].shape == (6, 8) and part[E.EMBEDS_KEY].dtype == torch.float32


@pytest.mark.parametrize(("doc", "needle"), [
    (b"[1, 2]", "must be a base64 string or an object"),
    (b"not json", "not a JSON document"),
    (_doc(image_embeds=_b64(torch.randn(6, 8))), "image_grid_thw is required"),
    (_doc(image_grid_thw=[1, 4, 6]), "image_embeds is required"),
    (_doc(image_embeds=[1.0, 2.0], image_grid_thw=[1, 4, 6]), "must be a base64 tensor"),
    (_doc(image_embeds=_b64(torch.randn(6, 8)), image_grid_thw=[1, 4, "6"]), "finite numbers only"),
    (_doc(image_embeds=_b64(torch.randn(6, 7)), image_grid_thw=[1, 4, 6]), "7 wide; this model takes 8"),
    (_doc(image_embeds=_b64(torch.randn(5, 8)), image_grid_thw=[1, 4, 6]), "makes 6 image tokens, but"),
    (_doc(image_embeds=_b64(torch.randn(6, 8)), image_grid_thw=[1, 3, 8]), "multiples of the model's spatial"),
    (_doc(image_embeds=_b64(torch.randn(6, 8)), image_grid_thw=[1, 4]), "(t, h, w) for one image"),
    (_doc(image_embeds=_b64(torch.randn(6, 8)), image_grid_thw=[0, 4, 6]), "from 1 to 65536"),
    (_doc(image_embeds=_b64(torch.randn(6, 8)), image_grid_thw=[1.5, 4, 6]), "must hold integers"),
    (_doc(image_embeds=_b64(torch.ones(6, 8, dtype=torch.int64)), image_grid_thw=[1, 4, 6]), "floating point"),
    (_doc(image_embeds=_b64(torch.randn(2, 6, 8)), image_grid_thw=[1, 4, 6]), "must be 2-D"),
    (_doc(image_embeds=_b64(torch.full((6, 8), float("inf"))), image_grid_thw=[1, 4, 6]), "NaN or infinite"),
    (_doc(image_embeds=_b64(torch.randn(6, 8).to_sparse()), image_grid_thw=[1, 4, 6]), "dense tensor"),
    (_doc(image_embeds=_b64([torch.randn(6, 8)]), image_grid_thw=[1, 4, 6]), "not one tensor"),
    (_doc(image_embeds="%%%", image_grid_thw=[1, 4, 6]), "not valid base64"),
    (_doc(image_embeds="", image_grid_thw=[1, 4, 6]), "empty"),
    (_doc(image_embeds=_b64(torch.randn(6, 8)), image_grid_thw=[1, 4, 6], x="AA=="), "unknown key 'x'"),
    (_doc(image_embeds=_npy(np.array(["a"] * 48).reshape(6, 8)), image_grid_thw=[1, 4, 6]), "not a numeric tensor"),
])
def test_decode_part_refuses_naming_the_part_when_the_payload_is_wrong(doc: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        E.decode_part(doc, 3, SPEC)
    assert str(caught.value).startswith("image_embeds 3: ") and needle in str(caught.value), str(caught.value)


class _Boom:
    def __reduce__(self):  # noqa: ANN204 - pickle's hook
        return (exec, ("raise SystemExit('code ran')",))


def test_decode_part_never_runs_code_when_the_tensor_file_is_a_hostile_pickle() -> None:
    hostile = base64.b64encode(pickle.dumps(_Boom())).decode()
    with pytest.raises(InvalidInput, match="not a tensor saved by torch.save"):
        E.decode_part(_doc(image_embeds=hostile, image_grid_thw=[1, 4, 6]), 0, SPEC)
    npy_pickle = io.BytesIO()
    np.save(npy_pickle, np.array([_Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInput, match="not a tensor"):
        E.decode_part(_doc(image_embeds=base64.b64encode(npy_pickle.getvalue()).decode(), image_grid_thw=[1, 4, 6]),
                      0, SPEC)


def test_decode_part_refuses_413_when_one_part_has_more_rows_than_the_limit(monkeypatch) -> None:
    monkeypatch.setattr(E, "MAX_EMBED_ROWS", 4)
    with pytest.raises(MediaTooLarge, match="the limit is 4"):
        E.decode_part(_good(), 0, SPEC)


def test_spec_widens_rows_by_the_deepstack_levels_and_refuses_families_without_a_grid() -> None:
    qwen3 = SimpleNamespace(model_type="qwen3_vl", vision_config=SimpleNamespace(spatial_merge_size=2,
                                                                                 deepstack_visual_indexes=[1, 2, 3]))
    assert E.EmbedsSpec.from_hf_config(qwen3, 64, torch.bfloat16) == E.EmbedsSpec("qwen3_vl", 256, 2, "bfloat16")
    assert E.EmbedsSpec.from_hf_config(SimpleNamespace(model_type="llava_onevision"), 64, "float32") is None


def test_merge_concatenates_rows_and_stacks_grids_in_part_order() -> None:
    a, b = E.decode_part(_good(6, (1, 4, 6)), 0, SPEC), E.decode_part(_good(4, (1, 4, 4)), 1, SPEC)
    merged = E.merge([a, b])
    assert merged[E.EMBEDS_KEY].shape == (10, 8) and merged[E.GRID_KEY].tolist() == [[1, 4, 6], [1, 4, 4]]


def test_request_embeds_caches_parts_named_by_a_uuid_and_serves_the_uuid_alone_from_there() -> None:
    cache = ImageCache(size=E.nbytes)
    doc = _good()
    parts, uuids = request_embeds([doc], ["t:emb"], SPEC, True, cache)
    assert uuids[0] is not None and uuids[0].startswith("vlt-emb-")
    again, again_uuids = request_embeds([b"{}"], ["t:emb"], SPEC, True, cache)
    assert torch.equal(again[0][E.EMBEDS_KEY], parts[0][E.EMBEDS_KEY]) and again_uuids == uuids
    with pytest.raises(InvalidInput, match="image_embeds 0: uuid 'other': no embeddings are cached"):
        request_embeds([b"{}"], ["u:other"], SPEC, True, cache)
    plain, plain_uuids = request_embeds([doc], [None], SPEC, True, cache)
    assert plain_uuids == [None]


def test_request_embeds_refuses_when_the_engine_has_embeds_off_or_the_model_has_no_grid() -> None:
    with pytest.raises(InvalidInput, match="enable_mm_embeds"):
        request_embeds([_good()], [None], SPEC, False, None)
    with pytest.raises(InvalidInput, match="only Qwen-VL-style"):
        request_embeds([_good()], [None], None, True, None)
