"""Shared fixtures: the real tritonserver (one per test session) and generated media."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_REPOSITORY = ROOT / "model_repository"


def pytest_configure(config: pytest.Config) -> None:
    # Keep FFmpeg/torch thread pools from oversubscribing the 2-core CI machine.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def triton(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real tritonserver on free loopback ports with the media models loaded."""
    from video_pipeline.launch import TritonServer

    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    server = TritonServer(MODEL_REPOSITORY, ["video_decoder", "video_preprocessor"], log_path=log)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if request.session.testsfailed:
            print(f"\n--- tritonserver log ({log}) ---\n{log.read_text(errors='replace')[-20000:]}")
