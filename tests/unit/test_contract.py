"""Every config.pbtxt agrees with video_pipeline.contract (names, types, dims, optional)."""

from __future__ import annotations

from pathlib import Path

import pytest

from video_pipeline import model_config
from video_pipeline.contract import MODELS, Tensor, config_parameters

REPO = Path(__file__).resolve().parents[2] / "model_repository"


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
