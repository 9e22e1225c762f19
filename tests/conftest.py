"""Shared fixtures: the real tritonserver with the real vLLM engine (one per test session)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_REPOSITORY = ROOT / "model_repository"
TINY_MODEL = ROOT / ".tiny" / "qwen2_vl"  # model_repository/llm/1/model.json points here
ALL_MODELS = ["video_decoder", "video_preprocessor", "video_media", "llm", "video_llm"]


def pytest_configure(config: pytest.Config) -> None:
    # Keep thread pools from oversubscribing the 2-core CI machine, and every cache in the repo.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(ROOT / ".cache" / "vllm"))
    os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "huggingface"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")


def build_tiny_model(arch: str = "qwen2_vl", out: Path = TINY_MODEL) -> Path:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_tiny_model.py"), "--arch", arch, "--out", str(out)],
        check=True,
    )
    return out


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return build_tiny_model()


@pytest.fixture(scope="session")
def triton(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator:
    """A real tritonserver on free loopback ports with every model of the repository loaded."""
    from video_pipeline.launch import TritonServer

    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    server = TritonServer(MODEL_REPOSITORY, ALL_MODELS, log_path=log, ready_timeout_s=600)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if request.session.testsfailed:
            print(f"\n--- tritonserver log ({log}) ---\n{log.read_text(errors='replace')[-20000:]}")
