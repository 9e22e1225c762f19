"""Every config.pbtxt agrees with video_pipeline.contract (names, types, dims, optional), and the JSON payloads'
keys are spelled in the contract alone."""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from tests.videos import ClipSpec, make_video
from video_pipeline import contract as C
from video_pipeline import model_config
from video_pipeline.contract import (
    MODELS,
    SamplingPlan,
    Tensor,
    VideoInfo,
    VideoMetadata,
    VideoOptionsDoc,
    config_parameters,
)

ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "model_repository"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_contract_matches_config_when_parsed(name: str) -> None:
    """Names, types, dims, optional, decoupled and backend, read as tritonserver reads the file."""
    assert model_config.contract_of(model_config.read(REPO / name)) == MODELS[name]


def test_contract_covers_every_model_when_repository_scanned() -> None:
    folders = {p.parent.name for p in REPO.glob("*/config.pbtxt")}
    assert folders == set(MODELS), f"models without a contract entry: {folders ^ set(MODELS)}"


def test_contract_of_config_detects_drift_when_dims_differ() -> None:
    config = model_config.parse('name: "m" input [ { name: "video" data_type: TYPE_STRING dims: [ 2 ] } ]')
    assert model_config.contract_of(config).inputs == (Tensor("video", "TYPE_STRING", (2,)),)


@pytest.mark.parametrize("name", sorted(n for n, m in MODELS.items() if m.backend == ""))
def test_ensemble_wiring_is_consistent_when_steps_are_checked(name: str) -> None:
    """Each step maps real tensors of its model, internals start with '_', types agree end to end."""
    contract = MODELS[name]
    config = model_config.read(REPO / name)
    assert config.platform == "ensemble"
    available = {t.name: t for t in contract.inputs}
    produced_outputs = set()
    for step_config in config.ensemble_scheduling.step:
        model, ins, outs = step_config.model_name, dict(step_config.input_map), dict(step_config.output_map)
        step = MODELS[model]
        step_inputs = {t.name: t for t in step.inputs}
        step_outputs = {t.name: t for t in step.outputs}
        required = {t.name for t in step.inputs if not t.optional}
        assert required <= set(ins), f"{model}: required inputs not mapped"
        for key, value in ins.items():
            assert key in step_inputs, f"{model} has no input {key}"
            assert value in available, f"{model}.{key} <- {value}, which nothing produced"
            assert available[value].dtype == step_inputs[key].dtype
        for key, value in outs.items():
            assert key in step_outputs, f"{model} has no output {key}"
            public = {t.name for t in contract.outputs}
            assert value in public or value.startswith("_"), f"internal tensor {value} must start with '_'"
            available[value] = step_outputs[key]
            produced_outputs.add(value)
    assert {t.name for t in contract.outputs} <= produced_outputs


def _params(name: str) -> dict[str, str]:
    from video_pipeline.steps import resolve_parameters

    text = (REPO / name / "config.pbtxt").read_text()
    return resolve_parameters(config_parameters(text), REPO / name)


def test_media_models_share_the_model_geometry_when_configured(tiny_model) -> None:
    """Decoder and preprocessor must size frames alike, or every frame is resized twice: both read
    the served model's folder, and neither forces a media setting the other does not."""
    from video_pipeline.steps import MEDIA_FIELDS, SERVED_MODEL, DecoderStep, PreprocessorStep

    dec, pre = _params("video_decoder"), _params("video_preprocessor")
    for key in (SERVED_MODEL, *MEDIA_FIELDS):
        assert dec.get(key) == pre.get(key), key
    assert DecoderStep({**dec, "cache_max_bytes": "0"}).media == PreprocessorStep(pre).media


@pytest.mark.parametrize("name", ["video_decoder", "video_preprocessor"])
def test_media_step_loads_when_given_its_committed_parameters(name: str, tiny_model) -> None:
    from video_pipeline.steps import DecoderStep, PreprocessorStep

    step = (DecoderStep if name == "video_decoder" else PreprocessorStep)(_params(name))
    # the committed llm/1/model.json serves the tiny model: its own processor files decide
    assert (step.media.family, step.media.video_max_pixels, step.media.sources["video_max_pixels"]) == (
        "qwen2_vl", 50176, "processor_config.json:video_processor:size.longest_edge")


# --- JSON payloads: keys spelled in the contract alone ------------------------------------------------------

PAYLOADS = (VideoOptionsDoc, VideoMetadata, SamplingPlan, VideoInfo)
PAYLOAD_KEYS = frozenset(k for p in PAYLOADS for k in p.keys())
# Keys other JSON of this code shares (OpenAI bodies and parts, video_generator's parameters, HF processor
# configs, MediaSettings, vLLM's multi_modal_data, audio spans, cache entries): flagged only in modules that
# handle the payloads. Every other payload key is flagged wherever it is spelled.
SHARED_WORDS = frozenset({
    "fps", "width", "height", "num_frames", "max_frames", "duration", "start", "end", "mode", "path", "uuid", "audio",
    "cache", "sampling", "timestamps", "codec", "container", "rotation", "min_pixels", "max_pixels", "patch_factor",
    "resize", "rule", "indexed",
})
# What marks a module as handling the payloads: importing (or reading through the contract module) one of these.
PAYLOAD_NAMES = frozenset({p.__name__ for p in PAYLOADS} | {"VIDEO_OPTIONS", "VIDEO_METADATA", "VIDEO_INFO",
                                                             "AUDIO_SPAN", "MEDIA_PATH", "MEDIA_UUID", "FRAME_LIST"})
# A payload key used for another document, by (module, how it is used).
OTHER_DOCUMENTS = {
    ("openai_frontend/outputs/plan.py", "dict"): (
        {"num_frames", "timestamps", "width", "height", "fps", "duration", "total_num_frames", "sampling", "cache",
         "audio"}, "the video_plan answer's own keys (README), filled from VideoInfo"),
    ("video_pipeline/steps.py", "dict"): ({"timestamps"}, "the media cache entry's arrays"),
    ("video_pipeline/steps.py", "subscript"): ({"timestamps"}, "the media cache entry's arrays"),
    ("video_pipeline/engines/prompt.py", "dict"): ({"audio"}, "vLLM's multi_modal_data / uuids by modality"),
    ("video_pipeline/engines/prompt.py", "subscript"): ({"audio"}, "vLLM's multi_modal_data by modality"),
    ("video_pipeline/llm_handler.py", "dict"): ({"audio"}, "chat part types by modality"),
    ("openai_frontend/budgets.py", "get"): ({"audio"}, "limit_mm_per_prompt by modality"),
    ("openai_frontend/service.py", "dict"): ({"audio", "sampling"}, "an llm message part; LlmRequest's fields"),
}


def spelled_keys(source: str) -> list[tuple[int, str, str]]:
    """(line, how, key) of each payload key spelled as a key: ``x["k"]``, ``x.get("k")`` (pop, setdefault),
    ``{"k": ...}``, ``dict(k=...)``, ``"k" in x``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript):
            keys, how = [node.slice], "subscript"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "get", "pop", "setdefault"):
            keys, how = node.args[:1], "get"
        elif isinstance(node, ast.Dict):
            keys, how = [k for k in node.keys if k is not None], "dict"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            keys, how = [ast.Constant(kw.arg, lineno=node.lineno) for kw in node.keywords if kw.arg], "dict"
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            keys, how = [node.left], "in"
        else:
            continue
        out.extend((k.lineno, how, k.value) for k in keys
                   if isinstance(k, ast.Constant) and isinstance(k.value, str) and k.value in PAYLOAD_KEYS)
    return out


def handles_payloads(source: str) -> bool:
    """Whether a module imports a payload (or its tensor or key constant) from the contract, or reads one
    through the contract module."""
    tree = ast.parse(source)
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "video_pipeline.contract":
            if any(a.name in PAYLOAD_NAMES for a in node.names):
                return True
        elif isinstance(node, ast.ImportFrom) and node.module == "video_pipeline":
            aliases |= {a.asname or a.name for a in node.names if a.name == "contract"}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name == "video_pipeline.contract" and a.asname}
    return any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
               and n.attr in PAYLOAD_NAMES for n in ast.walk(tree))


def stray_keys(path: str, source: str) -> list[str]:
    """The payload keys ``source`` (the module at ``path``, relative to the repository) spells outside the
    contract: any key but the shared words anywhere, a shared word too in a module that handles the payloads;
    but for the uses OTHER_DOCUMENTS lists."""
    payload_module = handles_payloads(source)
    out = []
    for line, how, key in spelled_keys(source):
        other, _why = OTHER_DOCUMENTS.get((path, how), (set(), ""))
        if key in other or (key in SHARED_WORDS and not payload_module):
            continue
        out.append(f"{path}:{line}: {how} {key!r}")
    return out


def _production_modules() -> list[Path]:
    return sorted(p for top in ("video_pipeline", "openai_frontend", "model_repository")
                  for p in (ROOT / top).rglob("*.py") if p != ROOT / "video_pipeline" / "contract.py")


def test_payload_keys_are_spelled_only_in_the_contract_when_production_code_is_scanned() -> None:
    """video_options / video_metadata / video_info keys go through contract's payloads (to_dict / from_dict
    and their fields), never as string literals: a typo there is an error, not a silently missing key."""
    modules = _production_modules()
    assert len(modules) > 50
    found = [hit for p in modules for hit in stray_keys(p.relative_to(ROOT).as_posix(), p.read_text())]
    assert found == [], "payload keys spelled outside video_pipeline/contract.py:\n" + "\n".join(found)


def test_key_scan_flags_a_payload_key_when_a_module_spells_one() -> None:
    plan = ROOT / "openai_frontend" / "outputs" / "plan.py"
    source = plan.read_text()
    assert stray_keys("openai_frontend/outputs/plan.py", source) == []
    for stray, how in (('info["num_video_tokens"]', "subscript"), ('info["num_frames"]', "subscript"),
                       ('info.get("frames_indices")', "get"), ('{"num_video_tokens": 3}', "dict"),
                       ('"cache" in info', "in")):
        snippet = f"{source}\n\ndef _stray(info):\n    return {stray}\n"
        (hit,) = stray_keys("openai_frontend/outputs/plan.py", snippet)
        assert hit.startswith(f"openai_frontend/outputs/plan.py:{snippet.count(chr(10))}: {how} "), hit
    # a distinctive key anywhere; a shared word only where the payloads are handled
    assert stray_keys("x.py", 'meta = {"fps": 2}\nn = meta["num_frames"]\n') == []
    assert stray_keys("x.py", 'n = info["num_video_tokens"]\n') == ["x.py:1: subscript 'num_video_tokens'"]
    assert stray_keys("x.py", 'from video_pipeline import contract as C\nC.VIDEO_INFO\nn = info["num_frames"]\n') == [
        "x.py:3: subscript 'num_frames'"]


def test_payload_word_lists_name_real_keys_when_compared_with_the_payloads() -> None:
    assert SHARED_WORDS <= PAYLOAD_KEYS
    assert all(keys <= SHARED_WORDS | PAYLOAD_KEYS for keys, _ in OTHER_DOCUMENTS.values())
    assert all(hasattr(C, name) for name in PAYLOAD_NAMES - {p.__name__ for p in PAYLOADS})


def test_key_constants_name_payload_fields_when_read_from_the_contract() -> None:
    from video_pipeline.media.options import VideoOptions

    assert {C.MEDIA_PATH, C.FRAME_LIST, C.MEDIA_UUID} <= set(VideoOptionsDoc.keys())
    assert C.AUDIO_SPAN in VideoInfo.keys()
    # the resolved options (checked, defaults filled in) are the document's sampling part, field for field
    assert tuple(f.name for f in fields(VideoOptions)) == tuple(VideoOptionsDoc().sampling().keys()[:11])
    assert set(VideoOptionsDoc.keys()) - {f.name for f in fields(VideoOptions)} == {
        C.MEDIA_PATH, C.FRAME_LIST, C.MEDIA_UUID}


def test_media_documents_round_trip_through_the_payloads_when_models_emit_them() -> None:
    """Every key the decoder and preprocessor write is a field: parsing and writing a document loses nothing."""
    from video_pipeline.steps import DecoderStep, PreprocessorStep

    video = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=20))
    inputs = {C.VIDEO: np.array([video, video], dtype=np.object_),
              C.VIDEO_OPTIONS: np.array([json.dumps(o).encode() for o in ({"num_frames": 3}, {"fps": 2, "end": 1.5})],
                                        dtype=np.object_)}
    decoded = DecoderStep({})(inputs)
    sized = PreprocessorStep({})({**decoded, C.VIDEO_OPTIONS: inputs[C.VIDEO_OPTIONS]})
    for name, payload in ((C.VIDEO_METADATA, VideoMetadata), (C.VIDEO_INFO, VideoInfo)):
        docs = [json.loads(x) for x in (decoded if name == C.VIDEO_METADATA else sized)[name]]
        assert len(docs) == 2
        for doc in docs:
            assert payload.from_dict(doc).to_dict() == doc
            assert set(doc) <= set(payload.keys())
    assert [VideoInfo.from_dict(json.loads(x)).num_frames for x in sized[C.VIDEO_INFO]] == [3, 3]


def test_options_document_refuses_unknown_keys_when_parsed() -> None:
    from video_pipeline.errors import InvalidInput

    assert VideoOptionsDoc.from_dict({"fps": 2, "path": "a.mp4"}).to_dict() == {"fps": 2, "path": "a.mp4"}
    with pytest.raises(InvalidInput, match="unknown video option.*frames; known: end, fps"):
        VideoOptionsDoc.from_dict({"frames": 8})
