"""VllmEngine: error mapping (fast) and, behind the ``engine`` mark, the real AsyncLLM on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from video_pipeline.engines import tiny_model
from video_pipeline.errors import EngineUnavailable, InvalidInput, PipelineError

# --- error mapping (imports vLLM's exception classes, starts nothing) ----------------


@pytest.fixture(scope="module")
def vllm_errors() -> Any:
    pytest.importorskip("vllm")
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    return VLLMValidationError, EngineDeadError, EngineGenerateError


def test_map_engine_error_gives_invalid_input_when_vllm_rejects_the_request(vllm_errors: Any) -> None:
    from video_pipeline.engines.vllm_engine import map_engine_error

    validation, _, generate_error = vllm_errors
    assert isinstance(map_engine_error(validation("At most 2 video(s)")), InvalidInput)
    wrapped = generate_error()
    wrapped.__cause__ = ValueError("Video metadata is required but not found in mm input")
    error = map_engine_error(wrapped)
    assert isinstance(error, InvalidInput)
    assert "metadata is required" in str(error)


def test_map_engine_error_gives_engine_unavailable_when_the_core_died(vllm_errors: Any) -> None:
    from video_pipeline.engines.vllm_engine import map_engine_error

    _, dead, _ = vllm_errors
    assert isinstance(map_engine_error(dead()), EngineUnavailable)


def test_map_engine_error_gives_an_internal_error_when_the_cause_is_unexpected(vllm_errors: Any) -> None:
    from video_pipeline.engines.vllm_engine import map_engine_error

    _, _, generate_error = vllm_errors
    wrapped = generate_error()
    wrapped.__cause__ = AssertionError("Failed to apply prompt replacement")
    error = map_engine_error(wrapped)
    assert type(error) is PipelineError


# --- the real engine (slow: ~1 min, ~3 GB) --------------------------------------------

ENGINE_ARGS = {
    "enforce_eager": True,
    "kv_cache_memory_bytes": 256 * 2**20,
    "max_model_len": 4096,
    "limit_mm_per_prompt": {"video": 2, "image": 1},
    "seed": 0,
}
QUESTION = "What happens in this video?"
MAX_TOKENS = 16

# Offline vLLM (the reference the Triton path is compared against), in its own process.
OFFLINE_REFERENCE = """
import json, sys
import numpy as np
from vllm import LLM, SamplingParams

model, seeds, question, max_tokens, engine_args = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
llm = LLM(model=model, **engine_args)
tokenizer = llm.get_tokenizer()
messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
out = {}
for seed in seeds:
    frames = np.random.default_rng(seed).integers(0, 256, (8, 112, 112, 3), dtype=np.uint8)
    meta = {"fps": 4.0, "duration": 2.0, "total_num_frames": 8, "frames_indices": list(range(8)),
            "video_backend": "pyav", "do_sample_frames": False}
    result = llm.generate({"prompt": prompt, "multi_modal_data": {"video": [(frames, meta)]}},
                          SamplingParams(temperature=0.0, max_tokens=max_tokens))[0]
    out[seed] = list(result.outputs[0].token_ids)
print("REFERENCE " + json.dumps(out))
"""


def frames_for(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 112, 112, 3), dtype=np.uint8)


@pytest.mark.engine
def test_vllm_engine_streams_offline_vllms_greedy_tokens_when_given_the_same_video(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    from video_pipeline.engines import BackgroundEngine, GenerationRequest, VideoInput

    model = str(tiny_model.build("qwen2_vl", tmp_path / "qwen2_vl"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    args = [json.dumps([1, 2]), QUESTION, str(MAX_TOKENS), json.dumps(ENGINE_ARGS)]
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_REFERENCE, model, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REFERENCE "))
    reference = {int(k): v for k, v in json.loads(line.removeprefix("REFERENCE ")).items()}
    assert reference[1] != reference[2], "different videos must give different tokens"

    engine = BackgroundEngine.vllm({"model": model, **ENGINE_ARGS})
    try:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
        for seed in (1, 2, 1):
            video = VideoInput(frames_for(seed), {**_metadata(), "timestamps": [0.0] * 8})
            req = GenerationRequest(
                request_id=f"seed{seed}-{id(video)}",
                messages=messages,
                videos=[video],
                sampling={"temperature": 0, "max_tokens": MAX_TOKENS},
            )
            deltas = list(engine.stream(req, timeout=120))
            assert [t for d in deltas for t in d.token_ids] == reference[seed]
            last = deltas[-1]
            assert (last.finish_reason, last.completion_tokens) == ("length", MAX_TOKENS)
            assert last.video_tokens == 64
            assert last.prompt_tokens > last.video_tokens
        engine.check_health()
    finally:
        engine.shutdown()


def _metadata() -> dict[str, Any]:
    return {
        "fps": 4.0,
        "duration": 2.0,
        "total_num_frames": 8,
        "frames_indices": list(range(8)),
        "video_backend": "pyav",
        "do_sample_frames": False,
    }
