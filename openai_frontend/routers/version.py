"""vLLM's GET /version: this package's version, and the vLLM release installed beside the shim."""

from __future__ import annotations

import importlib.metadata
from functools import cache

from fastapi import APIRouter

from video_pipeline.engines.versions import DISTRIBUTIONS

router = APIRouter()
PACKAGE = "video-llm-triton"


@cache
def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@router.get("/version")
async def version() -> dict:
    """``version``: this server's; ``vllm_version``: the vLLM package of the shim's environment (by its
    metadata, never imported), null when the shim runs without one (the engine's is in tritonserver's log)."""
    return {"version": _version((PACKAGE,)) or "unknown", "vllm_version": _version(DISTRIBUTIONS)}
